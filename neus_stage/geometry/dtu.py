"""The point steps of the DTU evaluation protocol (the community Python port DTUeval-python ``eval.py``),
vectorised, on arrays: the same floating-point operations as the reference, so the same points.

- :func:`dtu_sample_mesh`: every non-zero-area triangle sampled on a regular barycentric grid
  (thr = thresh * sqrt(l1 * l2 / a)) plus the vertices; :func:`dtu_sample_estimate` counts them first.
- :func:`random_greedy_thin`: "visit in random order, keep a point, drop every other point within r",
  computed as the lexicographically-first maximal independent set of the r-neighbour graph
  (:func:`radius_graph`) under a random priority, in parallel rounds.
- :func:`faces_near_box`, :func:`points_in_box`, :func:`observed_points`, :func:`above_plane`: the crops of
  the protocol (the evaluation box, the ObsMask voxels, the half-space above the scan's plane).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.spatial import cKDTree

from .distances import CHUNK


def _face_edges(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per face of the chunk ``F``: edges v1, v2 from its first vertex, that vertex, their lengths and the
    doubled area, exactly as the reference computes them."""
    tri = V[F]
    v1, v2, p0 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], tri[:, 0]
    l1, l2 = np.linalg.norm(v1, axis=-1), np.linalg.norm(v2, axis=-1)
    a = np.linalg.norm(np.cross(v1, v2), axis=-1)
    return v1, v2, p0, l1, l2, a


def _dtu_grid_counts(V: np.ndarray, F: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """(n1, n2) of the reference sampling for every face (0 for zero-area faces)."""
    n1, n2 = np.zeros(len(F)), np.zeros(len(F))
    for s in range(0, len(F), CHUNK):
        _, _, _, l1, l2, a = _face_edges(V, F[s : s + CHUNK])
        nz = a > 0
        thr = thresh * np.sqrt(l1[nz] * l2[nz] / a[nz])
        n1[s : s + CHUNK][nz], n2[s : s + CHUNK][nz] = np.floor(l1[nz] / thr), np.floor(l2[nz] / thr)
    return n1, n2


def dtu_sample_estimate(V: np.ndarray, F: np.ndarray, thresh: float) -> float:
    """About how many points :func:`dtu_sample_mesh` draws from the faces (the vertices not counted): half
    of each face's index rectangle, without drawing them."""
    n1, n2 = _dtu_grid_counts(V, F, thresh)
    return float(((n1 + 1) * (n2 + 1) * ((n1 > 0) & (n2 > 0))).sum()) / 2


def _grid_samples(
    v1: np.ndarray, v2: np.ndarray, p0: np.ndarray, n1: np.ndarray, n2: np.ndarray, chunk: int
) -> Iterator[np.ndarray]:
    """The reference's grid points of faces (edges v1, v2 from p0; n1 x n2 steps), about ``chunk`` index pairs
    at a time: each face's (n1+1) x (n2+1) index rectangle expanded, its lower triangle (c0 + c1 < 1) kept."""
    d1, d2 = np.maximum(n1, 1e-7), np.maximum(n2, 1e-7)
    w = n2.astype(np.int64) + 1
    rect = (n1.astype(np.int64) + 1) * w
    rect[(n1 == 0) | (n2 == 0)] = 0  # (0.5 / 1e-7) >= 1: such faces give no points
    ends = np.cumsum(rect)
    t0 = 0
    while t0 < len(rect):
        base = ends[t0 - 1] if t0 else 0
        t1 = max(int(np.searchsorted(ends, base + chunk, side="right")), t0 + 1)
        sizes = rect[t0:t1]
        tot = int(sizes.sum())
        if tot:
            tid = np.repeat(np.arange(t0, t1), sizes)
            local = np.arange(tot, dtype=np.int64) - np.repeat(ends[t0:t1] - sizes - base, sizes)
            i = local // w[tid]
            j = local - i * w[tid]
            c0 = (i + 0.5) / d1[tid]
            c1 = (j + 0.5) / d2[tid]
            keep = c0 + c1 < 1
            tid, c0, c1 = tid[keep], c0[keep][:, None], c1[keep][:, None]
            yield v1[tid] * c0 + v2[tid] * c1 + p0[tid]
        t0 = t1


def dtu_sample_mesh(
    V: np.ndarray, F: np.ndarray, thresh: float = 0.2, chunk: int = 4 * CHUNK, vertices: np.ndarray | None = None
) -> np.ndarray:
    """Step 1 of the DTU protocol: regular barycentric samples of every non-zero-area face, plus all vertices
    (or the given ``vertices``).

    Bit-for-bit the points of the reference ``sample_single_tri`` (same arithmetic), without its per-face loop:
    faces are expanded over their (n1+1) x (n2+1) index rectangle in chunks and the lower triangle is kept.
    """
    out = [np.asarray(V if vertices is None else vertices, dtype=np.float64)]
    for s in range(0, len(F), CHUNK):
        v1, v2, p0, l1, l2, a = _face_edges(V, F[s : s + CHUNK])
        nz = a > 0
        v1, v2, p0, l1, l2, a = v1[nz], v2[nz], p0[nz], l1[nz], l2[nz], a[nz]
        thr = thresh * np.sqrt(l1 * l2 / a)
        out.extend(_grid_samples(v1, v2, p0, np.floor(l1 / thr), np.floor(l2 / thr), chunk))
    return np.concatenate(out, axis=0)


def radius_graph(P: np.ndarray, r: float, tree: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (src, dst), both directions, between distinct points at distance <= r (parallel kNN queries)."""
    tree = cKDTree(P, balanced_tree=False) if tree is None else tree
    n = len(P)
    bound = np.nextafter(r, np.inf)  # the reference's radius query includes distance == r
    src, dst = [], []
    pending = np.arange(n)
    k = 8
    while pending.size:
        still = []
        step = max(1, (4 * CHUNK) // (k + 1))
        for s in range(0, pending.size, step):
            q = pending[s : s + step]
            d, idx = tree.query(P[q], k=k + 1, distance_upper_bound=bound, workers=-1)
            full = np.isfinite(d[:, -1])  # all k+1 found within r: there may be more, ask again with a larger k
            still.append(q[full])
            q, idx = q[~full], idx[~full]
            ok = (idx < n) & (idx != q[:, None])
            src.append(np.broadcast_to(q[:, None], idx.shape)[ok])
            dst.append(idx[ok])
        pending = np.concatenate(still)
        k *= 4
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


def random_greedy_thin(P: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the points kept by "visit in random order, keep a point, drop all others within r".

    The sequential loop keeps the lexicographically-first maximal independent set of the r-neighbour graph
    under the visiting order; it is computed here in parallel rounds (a point joins when no undecided
    neighbour comes before it; the neighbours of joined points are dropped), which gives the same set.
    """
    n = len(P)
    prio = rng.permutation(n)
    src, dst = radius_graph(P, r)
    keep = np.zeros(n, bool)
    und = np.ones(n, bool)
    while True:
        blocked = np.zeros(n, bool)
        earlier = prio[dst] < prio[src]
        blocked[src[earlier]] = True
        join = und & ~blocked
        keep |= join
        und &= ~join
        und[dst[join[src]]] = False
        if not und.any():
            return keep
        e = und[src] & und[dst]
        src, dst = src[e], dst[e]


def faces_near_box(V: np.ndarray, F: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Boolean mask (F,) of the faces whose bounding box meets the box ``lo`` .. ``hi`` (closed)."""
    near = np.zeros(len(F), bool)
    for s in range(0, len(F), CHUNK):
        tri = V[F[s : s + CHUNK]]
        near[s : s + CHUNK] = (tri.max(1) >= lo).all(1) & (tri.min(1) <= hi).all(1)
    return near


def points_in_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, closed: bool = True) -> np.ndarray:
    """Boolean mask of the points inside the box: ``lo <= p <= hi`` (closed) or ``lo <= p < hi``."""
    upper = (hi >= points) if closed else (points < hi)
    return ((lo <= points) & upper).all(-1)


def observed_points(P: np.ndarray, obs_mask: np.ndarray, origin: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Boolean mask of the points whose voxel ``round((p - origin) / res)`` lies in ``obs_mask`` and is set."""
    grid = np.around((P - origin) / res).astype(np.int32)
    ingrid = ((grid >= 0) & (grid < np.asarray(obs_mask.shape)[None])).all(-1)
    g = grid[ingrid]
    observed = np.zeros(len(P), bool)
    observed[np.flatnonzero(ingrid)[obs_mask[g[:, 0], g[:, 1], g[:, 2]]]] = True
    return observed


def above_plane(P: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Boolean mask of the points strictly above the plane ``(a, b, c, d)``: a x + b y + c z + d > 0."""
    hom = np.concatenate([P, np.ones_like(P[:, :1])], -1)
    return (np.asarray(plane, dtype=np.float64).reshape(1, 4) * hom).sum(-1) > 0
