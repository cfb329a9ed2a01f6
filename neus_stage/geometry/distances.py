"""Distances between a surface and points, and the scores made of them: arrays in, arrays out.

- :func:`nonzero_faces`, :func:`used_vertices`: the faces that have an area, the vertices faces use.
- :func:`sample_surface`: area-uniform random points on a triangle mesh.
- :func:`spatial_order`: a Z-order (Morton) permutation that makes KD-tree and BVH queries coherent.
- :func:`nearest_distances`: nearest-neighbour distances of query points in a KD-tree, in chunks.
- :class:`SurfaceDistance`: unsigned point-to-triangle distance to a mesh.
- :func:`precision_recall`: precision / recall / F-score at distance thresholds; :func:`chamfer_scores`:
  those and the mean / median distances both ways.

Everything runs in chunks of :data:`CHUNK` points, so that full-size meshes and clouds fit in memory.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree

from ..errors import StageError

log = logging.getLogger(__name__)

CHUNK = 1_000_000
"""Points per query or sampling chunk."""


def face_areas(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """The area of every face (F,), computed in chunks."""
    areas = np.empty(len(F))
    for s in range(0, len(F), CHUNK):
        tri = V[F[s : s + CHUNK]]
        areas[s : s + CHUNK] = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    return areas


def nonzero_faces(V: np.ndarray, F: np.ndarray, source: object) -> tuple[np.ndarray, np.ndarray]:
    """Faces with non-zero area and their areas; StageError naming ``source`` (the mesh's file) when every
    face is degenerate."""
    areas = face_areas(V, F)
    ok = areas > 0
    if not ok.any():
        raise StageError(f"{source}: all {len(F)} faces have zero area (degenerate mesh); nothing to sample")
    if not ok.all():
        log.info("%s: skipping %d zero-area faces of %d", source, int((~ok).sum()), len(F))
    return F[ok], areas[ok]


def used_vertices(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Boolean mask (V,) of the vertices some face uses."""
    used = np.zeros(len(V), bool)
    used[F.ravel()] = True
    return used


def sample_surface(V: np.ndarray, F: np.ndarray, areas: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly distributed over the surface (faces picked by area, uniform barycentrics)."""
    cdf = np.cumsum(areas)
    out = np.empty((n, 3))
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        f = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), len(F) - 1)
        u, v = rng.random(m), rng.random(m)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        tri = V[F[f]]
        out[s : s + m] = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return out


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 10 bits of x (uint32): the Morton-code interleave."""
    x = (x | (x << 16)) & np.uint32(0x030000FF)
    x = (x | (x << 8)) & np.uint32(0x0300F00F)
    x = (x | (x << 4)) & np.uint32(0x030C30C3)
    return (x | (x << 2)) & np.uint32(0x09249249)


def spatial_order(P: np.ndarray) -> np.ndarray:
    """Permutation visiting ``P`` along a Z-order (Morton) curve on a 1024^3 grid: spatially coherent queries
    run several times faster in a KD-tree or BVH than points in random order."""
    if len(P) < 2:
        return np.arange(len(P))
    lo, hi = P.min(0), P.max(0)
    q = ((P - lo) * (1023.0 / np.maximum(hi - lo, 1e-300))).astype(np.uint32)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << np.uint32(1)) | (_spread_bits(q[:, 2]) << np.uint32(2))
    return np.argsort(code)


def nearest_distances(tree: cKDTree, Q: np.ndarray, bound: float = np.inf) -> np.ndarray:
    """Nearest-neighbour distances of Q (inf beyond ``bound``), queried in Z-order, returned in Q's order."""
    order = spatial_order(Q)
    out = np.empty(len(Q))
    for s in range(0, len(Q), CHUNK):
        idx = order[s : s + CHUNK]
        out[idx] = tree.query(Q[idx], k=1, distance_upper_bound=bound, workers=-1)[0]
    return out


def _open3d():
    """open3d, or None where it cannot be imported (it needs system libraries, e.g. libusb)."""
    try:
        import open3d as o3d
    except Exception:  # noqa: BLE001
        return None
    return o3d


class SurfaceDistance:
    """Unsigned distance from points to a triangle mesh: exact (open3d RaycastingScene, float32 on centred
    coordinates) where open3d is available, otherwise nearest of dense surface samples."""

    def __init__(self, V: np.ndarray, F: np.ndarray, areas: np.ndarray, rng: np.random.Generator):
        self.method = "point-to-triangle"
        self.o3d = _open3d()
        if self.o3d is not None:
            scene = self.o3d.t.geometry.RaycastingScene()
            scene.add_triangles(self.o3d.core.Tensor(V.astype(np.float32)), self.o3d.core.Tensor(F.astype(np.uint32)))
            self.scene = scene
        else:  # pragma: no cover - open3d present in the supported environment
            self.method = "point-to-samples (4M surface samples)"
            self.tree = cKDTree(sample_surface(V, F, areas, 4_000_000, rng))

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        order = spatial_order(Q)
        out = np.empty(len(Q))
        for s in range(0, len(Q), CHUNK):
            idx = order[s : s + CHUNK]
            if self.o3d is not None:
                out[idx] = self.scene.compute_distance(self.o3d.core.Tensor(Q[idx].astype(np.float32))).numpy()
            else:  # pragma: no cover
                out[idx] = self.tree.query(Q[idx], k=1, workers=-1)[0]
        return out


def precision_recall(acc_d: np.ndarray, comp_d: np.ndarray, thresholds: list[float]) -> list[dict]:
    """Per threshold: the share of ``acc_d`` (prediction -> truth) below it (precision), of ``comp_d`` (truth ->
    prediction) below it (recall) and their harmonic mean (F-score); 0 for an empty side."""
    rows = []
    for t in thresholds:
        p = float((acc_d < t).mean()) if len(acc_d) else 0.0
        r = float((comp_d < t).mean()) if len(comp_d) else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        rows.append({"threshold": float(t), "precision": p, "recall": r, "fscore": f})
    return rows


def chamfer_scores(acc_d: np.ndarray, comp_d: np.ndarray, thresholds: list[float], diag: float) -> dict:
    """Chamfer scores of accuracy distances ``acc_d`` (prediction -> truth) and completeness distances ``comp_d``
    (truth -> prediction): means, medians, their averages and F-scores at ``thresholds``, also as percentages of
    ``diag`` (the ground truth's box diagonal), keyed as ``eval.json`` records them."""
    acc, comp = float(acc_d.mean()), float(comp_d.mean())
    pct = lambda x: 100.0 * x / diag  # noqa: E731
    fs = precision_recall(acc_d, comp_d, thresholds)
    for row in fs:
        row["threshold_pct_diag"] = pct(row["threshold"])
    return {
        "accuracy": acc,
        "completeness": comp,
        "overall": (acc + comp) / 2,
        "accuracy_median": float(np.median(acc_d)),
        "completeness_median": float(np.median(comp_d)),
        "overall_median": float((np.median(acc_d) + np.median(comp_d)) / 2),
        "fscores": fs,
        "gt_bbox_diag": diag,
        "chamfer_pct_diag": {
            "accuracy": pct(acc),
            "completeness": pct(comp),
            "overall": pct((acc + comp) / 2),
            "accuracy_median": pct(float(np.median(acc_d))),
            "completeness_median": pct(float(np.median(comp_d))),
        },
    }
