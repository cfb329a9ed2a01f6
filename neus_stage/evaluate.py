"""Score a mesh: the DTU protocol (Chamfer in mm, as the NeuS family of papers reports) or generic Chamfer / F-score.

``evaluate_dtu`` follows the community Python port of the official DTU evaluation (DTUeval-python ``eval.py``,
defaults downsample 0.2 mm, patch 60 mm, max_dist 20 mm) step by step, vectorised:

1. sample every non-zero-area triangle on a regular barycentric grid (thr = 0.2 * sqrt(l1 * l2 / a)) plus all
   vertices (the same floating-point operations as the reference, so the same points);
2. thin in a random order, keeping a point and dropping every other point within 0.2 mm: computed exactly as the
   lexicographically-first maximal independent set of the 0.2 mm neighbour graph under a random priority, in
   parallel rounds, which is the same set the sequential loop keeps for the same order;
3. crop to ``BB[0] - patch <= p < BB[1] + 2 * patch``; 4. keep points whose ObsMask voxel
   ``round((p - BB[0]) / Res)`` is set; 5. accuracy = mean nearest-GT distance of those, below ``max_dist``;
6. completeness = mean distance of the GT points above the plane to the cropped points, below ``max_dist``;
7. overall = the mean of the two.

``evaluate_generic`` scores against any ground truth (mesh or point cloud): area-uniform samples of one surface
are measured against the other surface (exact point-to-triangle distances; nearest point for a GT cloud), with
precision / recall / F-score at distance thresholds and everything also as a share of the GT box diagonal.

Both are memory-safe at full size (chunked sampling and queries) and raise StageError naming the file for bad input.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .artifacts.meshes import quiet_open3d, read_geometry, read_mesh
from .artifacts.reports import write_report
from .atomic import atomic_write
from .errors import StageError
from .geometry.cameras import Similarity
from .timing import StageTimer

log = logging.getLogger(__name__)

_CHUNK = 1_000_000  # points per query / sampling chunk
MAX_DTU_SAMPLES = 150_000_000  # ~3.6 GB of points; a real DTU mesh gives a few million


def nonzero_faces(V: np.ndarray, F: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Faces with non-zero area and their areas; StageError when every face is degenerate."""
    areas = np.empty(len(F))
    for s in range(0, len(F), _CHUNK):
        tri = V[F[s : s + _CHUNK]]
        areas[s : s + _CHUNK] = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    ok = areas > 0
    if not ok.any():
        raise StageError(f"{path}: all {len(F)} faces have zero area (degenerate mesh); nothing to sample")
    if not ok.all():
        log.info("%s: skipping %d zero-area faces of %d", path, int((~ok).sum()), len(F))
    return F[ok], areas[ok]


def _used_vertices(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    used = np.zeros(len(V), bool)
    used[F.ravel()] = True
    return used


def _bbox_str(lo, hi) -> str:
    f = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    return f"{f(lo)} .. {f(hi)}"


def mesh_support(mesh_path: Path) -> dict:
    """Whether the mesh stage cut the mesh where the object ends (its support plane, or what no camera
    observes), from the mesh.json written beside it; ``cut`` is None where there is none."""
    mesh_path = Path(mesh_path)
    for meta_path in dict.fromkeys([mesh_path.with_suffix(".json"), mesh_path.parent / "mesh.json"]):
        if not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            continue
        names = [Path(str((meta.get(k) or {}).get("path", ""))).name for k in ("mesh", "mesh_clean")]
        if mesh_path.name not in names:
            continue
        sup = meta.get("support")
        if not isinstance(sup, dict):
            return {"cut": False, "method": "none", "meta": str(meta_path),
                    "note": "written before the mesh stage cut at the support: the raw extent"}
        out = {"cut": bool(sup.get("cut")), "method": sup.get("method"), "how": sup.get("how"),
               "meta": str(meta_path)}
        vis = sup.get("visibility")
        if vis and (mesh_path.name == names[1] or sup.get("method") != "visibility"):
            out["area_removed"] = vis.get("area_removed")
            out["area_removed_share"] = vis.get("area_removed_share")
        elif vis:  # the raw mesh: the visibility cull applies to the clean mesh only
            out["cut"] = False
        if sup.get("margin_world") is not None:
            out["margin_world"] = sup["margin_world"]
        return out
    return {"cut": None, "note": f"no mesh.json beside {mesh_path.name}: whether it was cut is unknown"}


def _write_json(out_json: Path, result: dict) -> None:
    write_report(Path(out_json), result)


# ------------------------------------------------------------------------------------------- DTU steps
def _dtu_grid_counts(V: np.ndarray, F: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """(n1, n2) of the reference sampling for every face (0 for zero-area faces)."""
    n1, n2 = np.zeros(len(F)), np.zeros(len(F))
    for s in range(0, len(F), _CHUNK):
        tri = V[F[s : s + _CHUNK]]
        v1, v2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        l1, l2 = np.linalg.norm(v1, axis=-1), np.linalg.norm(v2, axis=-1)
        a = np.linalg.norm(np.cross(v1, v2), axis=-1)
        nz = a > 0
        thr = thresh * np.sqrt(l1[nz] * l2[nz] / a[nz])
        n1[s : s + _CHUNK][nz], n2[s : s + _CHUNK][nz] = np.floor(l1[nz] / thr), np.floor(l2[nz] / thr)
    return n1, n2


def dtu_sample_mesh(V: np.ndarray, F: np.ndarray, thresh: float = 0.2, chunk: int = 4 * _CHUNK,
                    vertices: np.ndarray | None = None) -> np.ndarray:
    """Step 1 of the DTU protocol: regular barycentric samples of every non-zero-area face, plus all vertices
    (or the given ``vertices``).

    Bit-for-bit the points of the reference ``sample_single_tri`` (same arithmetic), without its per-face loop:
    faces are expanded over their (n1+1) x (n2+1) index rectangle in chunks and the lower triangle is kept.
    """
    out = [np.asarray(V if vertices is None else vertices, dtype=np.float64)]
    for s in range(0, len(F), _CHUNK):
        tri = V[F[s : s + _CHUNK]]
        v1, v2, p0 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], tri[:, 0]
        l1, l2 = np.linalg.norm(v1, axis=-1), np.linalg.norm(v2, axis=-1)
        a = np.linalg.norm(np.cross(v1, v2), axis=-1)
        nz = a > 0
        v1, v2, p0, l1, l2, a = v1[nz], v2[nz], p0[nz], l1[nz], l2[nz], a[nz]
        thr = thresh * np.sqrt(l1 * l2 / a)
        n1, n2 = np.floor(l1 / thr), np.floor(l2 / thr)
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
                out.append(v1[tid] * c0 + v2[tid] * c1 + p0[tid])
            t0 = t1
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
        step = max(1, (4 * _CHUNK) // (k + 1))
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


def _nn_dist(tree: cKDTree, Q: np.ndarray, bound: float = np.inf) -> np.ndarray:
    """Nearest-neighbour distances of Q (inf beyond ``bound``), queried in Z-order, returned in Q's order."""
    order = spatial_order(Q)
    out = np.empty(len(Q))
    for s in range(0, len(Q), _CHUNK):
        idx = order[s : s + _CHUNK]
        out[idx] = tree.query(Q[idx], k=1, distance_upper_bound=bound, workers=-1)[0]
    return out


def _prf(acc_d: np.ndarray, comp_d: np.ndarray, thresholds: list[float]) -> list[dict]:
    rows = []
    for t in thresholds:
        p = float((acc_d < t).mean()) if len(acc_d) else 0.0
        r = float((comp_d < t).mean()) if len(comp_d) else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        rows.append({"threshold": float(t), "precision": p, "recall": r, "fscore": f})
    return rows


def _load_mat(path: Path, keys: list[str], dtu_root: Path, scan: int) -> dict:
    from scipy.io import loadmat

    layout = (f"expected layout under {dtu_root}: ObsMask/ObsMask{scan}_10.mat, ObsMask/Plane{scan}.mat, "
              f"Points/stl/stl{scan:03}_total.ply (the official DTU 'SampleSet/MVS Data' evaluation files)")
    if not path.is_file():
        raise StageError(f"{path}: DTU evaluation file not found; {layout}")
    try:
        m = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001
        raise StageError(f"{path}: not a readable MATLAB file ({exc}); {layout}") from exc
    missing = [k for k in keys if k not in m]
    if missing:
        raise StageError(f"{path}: missing variable(s) {', '.join(missing)}; {layout}")
    return m


def evaluate_dtu(mesh_path: Path, dtu_root: Path, scan: int, out_json: Path, *, alignment: Similarity | None = None,
                 downsample: float = 0.2, patch: float = 60.0, max_dist: float = 20.0, seed: int = 0) -> dict:
    """DTU Chamfer (mm) of a mesh in DTU world coordinates; writes ``out_json`` and returns the same dict."""
    timer = StageTimer()
    timings, lap = timer.timings, timer.lap

    mesh_path, dtu_root = Path(mesh_path), Path(dtu_root)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    if not dtu_root.is_dir():
        raise StageError(f"{dtu_root}: DTU evaluation root not found (it should hold ObsMask/ and Points/stl/)")
    obs = _load_mat(dtu_root / "ObsMask" / f"ObsMask{scan}_10.mat", ["ObsMask", "BB", "Res"], dtu_root, scan)
    plane = _load_mat(dtu_root / "ObsMask" / f"Plane{scan}.mat", ["P"], dtu_root, scan)["P"]
    stl_path = dtu_root / "Points" / "stl" / f"stl{scan:03}_total.ply"
    if not stl_path.is_file():
        _load_mat(stl_path, [], dtu_root, scan)  # raises the layout message
    ObsMask = np.asarray(obs["ObsMask"]).astype(bool)
    BB = np.asarray(obs["BB"]).astype(np.float32)
    Res = np.asarray(obs["Res"], dtype=np.float64)
    V, F = read_mesh(mesh_path)
    t = lap("read_mesh", t)

    if alignment is not None:
        V = alignment.apply(V)
    n_faces = len(F)
    F, _ = nonzero_faces(V, F, mesh_path)
    n_nonzero = len(F)
    lo, hi = BB[:1] - patch, BB[1:] + patch * 2
    # Faces and vertices more than a margin outside the evaluation box cannot give points in it: skip them
    # (far-away junk and background shells then cost nothing; thinning near the box faces is unaffected).
    margin = 5.0 * downsample
    elo, ehi = lo[0].astype(np.float64) - margin, hi[0].astype(np.float64) + margin
    near = np.zeros(len(F), bool)
    for s in range(0, len(F), _CHUNK):
        tri = V[F[s : s + _CHUNK]]
        near[s : s + _CHUNK] = (tri.max(1) >= elo).all(1) & (tri.min(1) <= ehi).all(1)
    F = F[near]
    v_near = V[((elo <= V) & (ehi >= V)).all(1)]
    if len(F) == 0 and len(v_near) == 0:
        raise StageError(
            f"{mesh_path}: 0 samples inside the DTU evaluation box of scan {scan} ({_bbox_str(lo[0], hi[0])} mm); "
            f"the mesh spans {_bbox_str(V.min(0), V.max(0))}. It is probably in the wrong frame (e.g. the normalised "
            "unit-sphere frame instead of DTU world coordinates in mm): map it with the dataset's scale_mat "
            "(x_world = r * x + c) or give the reference alignment")
    n1, n2 = _dtu_grid_counts(V, F, downsample)
    estimate = float(((n1 + 1) * (n2 + 1) * ((n1 > 0) & (n2 > 0))).sum()) / 2 + len(v_near)
    if estimate > MAX_DTU_SAMPLES:
        raise StageError(
            f"{mesh_path}: sampling every {downsample} mm would give about {estimate:.3g} points (limit "
            f"{MAX_DTU_SAMPLES:.0e}); the mesh spans {_bbox_str(V.min(0), V.max(0))}, which is far too large for "
            "a DTU object in mm: probably the wrong units or frame")
    del n1, n2
    pts = dtu_sample_mesh(V, F, thresh=downsample, vertices=v_near)
    t = lap("sample", t)
    keep = random_greedy_thin(pts, downsample, rng)
    data_down = pts[keep]
    n_sampled = len(pts)
    del pts, keep
    t = lap("thin", t)

    data_in = data_down[((data_down >= lo) & (data_down < hi)).all(-1)]
    if len(data_in) == 0:
        raise StageError(
            f"{mesh_path}: 0 samples inside the DTU evaluation box of scan {scan} ({_bbox_str(lo[0], hi[0])} mm); "
            f"the mesh spans {_bbox_str(V.min(0), V.max(0))}. It is probably in the wrong frame (e.g. the normalised "
            "unit-sphere frame instead of DTU world coordinates in mm): map it with the dataset's scale_mat "
            "(x_world = r * x + c) or give the reference alignment")
    grid = np.around((data_in - BB[:1]) / Res).astype(np.int32)
    ingrid = ((grid >= 0) & (grid < np.asarray(ObsMask.shape)[None])).all(-1)
    g = grid[ingrid]
    in_obs = ObsMask[g[:, 0], g[:, 1], g[:, 2]]
    data_in_obs = data_in[ingrid][in_obs]
    if len(data_in_obs) == 0:
        raise StageError(
            f"{mesh_path}: {len(data_in)} samples lie in the evaluation box of scan {scan} but 0 in its observed "
            f"voxels (ObsMask); the mesh spans {_bbox_str(V.min(0), V.max(0))}: probably the wrong frame or scan")
    t = lap("crop_mask", t)

    with quiet_open3d() as o3d:
        if o3d is not None:
            stl = np.asarray(o3d.io.read_point_cloud(str(stl_path)).points, dtype=np.float64)
        else:
            stl = None
    if stl is None or len(stl) == 0:
        stl, _ = read_geometry(stl_path, "DTU ground-truth point cloud")
    t = lap("read_gt", t)

    d2s = _nn_dist(cKDTree(stl, balanced_tree=False), data_in_obs, max_dist)
    t = lap("accuracy", t)
    stl_hom = np.concatenate([stl, np.ones_like(stl[:, :1])], -1)
    above = (np.asarray(plane, dtype=np.float64).reshape(1, 4) * stl_hom).sum(-1) > 0
    stl_above = stl[above]
    del stl_hom
    s2d = _nn_dist(cKDTree(data_in, balanced_tree=False), stl_above, max_dist)
    t = lap("completeness", t)

    acc_in, comp_in = d2s[d2s < max_dist], s2d[s2d < max_dist]
    if len(acc_in) == 0 or len(comp_in) == 0:
        raise StageError(f"{mesh_path}: no point within {max_dist} mm of the ground truth of scan {scan}; "
                         "the mesh is probably in the wrong frame or belongs to another scan")
    acc, comp = float(acc_in.mean()), float(comp_in.mean())
    timer.total()
    result = {
        "protocol": "DTU (DTUeval-python eval.py)",
        "mesh": str(mesh_path),
        "dtu_root": str(dtu_root),
        "scan": int(scan),
        "units": "mm",
        "accuracy": acc,
        "completeness": comp,
        "overall": (acc + comp) / 2,
        "accuracy_median": float(np.median(acc_in)),
        "completeness_median": float(np.median(comp_in)),
        "fscores": _prf(d2s, s2d, [0.5, 1.0, 2.0]),
        "parameters": {"downsample": downsample, "patch": patch, "max_dist": max_dist, "seed": seed},
        "n_points": {
            "mesh_vertices": int(len(V)), "mesh_faces": int(n_faces), "faces_nonzero_area": int(n_nonzero),
            "faces_near_box": int(len(F)), "vertices_near_box": int(len(v_near)), "sampled": int(n_sampled),
            "thinned": int(len(data_down)), "in_box": int(len(data_in)),
            "in_obs": int(len(data_in_obs)), "gt": int(len(stl)), "gt_above_plane": int(len(stl_above)),
            "accuracy_inliers": int(len(acc_in)), "completeness_inliers": int(len(comp_in)),
        },
        "timings_s": timings,
    }
    if alignment is not None:
        result["alignment"] = alignment.to_json()
    result["support"] = mesh_support(mesh_path)  # whether the mesh ends where the object ends (or is raw)
    _write_json(out_json, result)
    log.info("DTU scan %d: accuracy %.4f mm, completeness %.4f mm, overall %.4f mm (%.1f s)",
             scan, acc, comp, result["overall"], timings["total"])
    return result


# ------------------------------------------------------------------------------------------ generic
def sample_surface(V: np.ndarray, F: np.ndarray, areas: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly distributed over the surface (faces picked by area, uniform barycentrics)."""
    cdf = np.cumsum(areas)
    out = np.empty((n, 3))
    for s in range(0, n, _CHUNK):
        m = min(_CHUNK, n - s)
        f = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), len(F) - 1)
        u, v = rng.random(m), rng.random(m)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        tri = V[F[f]]
        out[s : s + m] = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return out


class SurfaceDistance:
    """Unsigned distance from points to a triangle mesh: exact (open3d RaycastingScene, float32 on centred
    coordinates) where open3d is available, otherwise nearest of dense surface samples."""

    def __init__(self, V: np.ndarray, F: np.ndarray, areas: np.ndarray, rng: np.random.Generator):
        self.method = "point-to-triangle"
        with quiet_open3d() as o3d:
            self.o3d = o3d
        if self.o3d is not None:
            scene = self.o3d.t.geometry.RaycastingScene()
            scene.add_triangles(self.o3d.core.Tensor(V.astype(np.float32)),
                                self.o3d.core.Tensor(F.astype(np.uint32)))
            self.scene = scene
        else:  # pragma: no cover - open3d present in the supported environment
            self.method = "point-to-samples (4M surface samples)"
            self.tree = cKDTree(sample_surface(V, F, areas, 4_000_000, rng))

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        order = spatial_order(Q)
        out = np.empty(len(Q))
        for s in range(0, len(Q), _CHUNK):
            idx = order[s : s + _CHUNK]
            if self.o3d is not None:
                out[idx] = self.scene.compute_distance(self.o3d.core.Tensor(Q[idx].astype(np.float32))).numpy()
            else:  # pragma: no cover
                out[idx] = self.tree.query(Q[idx], k=1, workers=-1)[0]
        return out


def _write_error_cloud(path: Path, pts: np.ndarray, err: np.ndarray, vmax: float) -> None:
    """Binary PLY of the samples coloured by error (viridis, 0 .. vmax) with the error as a scalar property."""
    from matplotlib import colormaps

    rgb = (colormaps["viridis"](np.clip(err / max(vmax, 1e-30), 0, 1))[:, :3] * 255).round().astype(np.uint8)
    rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                     ("blue", "u1"), ("error", "<f4")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    rec["error"] = err
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"comment accuracy error per mesh sample, colormap viridis 0..{vmax:.6g}\n"
              f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty float error\nend_header\n")
    with atomic_write(Path(path)) as fh:
        fh.write(header.encode("ascii"))
        fh.write(rec.tobytes())


def evaluate_generic(mesh_path: Path, gt_path: Path, out_json: Path, *, alignment: Similarity | None = None,
                     thresholds: list[float] | None = None, n_samples: int = 200_000,
                     error_cloud: Path | None = None, seed: int = 0) -> dict:
    """Chamfer and F-score of a mesh against a ground-truth mesh or point cloud (units of the GT).

    accuracy: ``n_samples`` area-uniform samples of the mesh -> GT surface (GT mesh) or nearest GT point (GT cloud);
    completeness: ``n_samples`` area-uniform samples of the GT mesh (for a GT cloud: its points, a random subset of
    ``n_samples`` when it has more) -> mesh surface (exact point-to-triangle distance).
    F-score thresholds default to 0.5 %, 1 % and 2 % of the GT bounding-box diagonal.
    """
    timer = StageTimer()
    timings, lap = timer.timings, timer.lap

    mesh_path, gt_path = Path(mesh_path), Path(gt_path)
    if n_samples < 1:
        raise StageError(f"n_samples must be positive, got {n_samples}")
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    V, F = read_mesh(mesh_path)
    Vg, Fg = read_geometry(gt_path, "ground truth")
    t = lap("read", t)
    if alignment is not None:
        V = alignment.apply(V)
    n_faces = len(F)
    F, areas = nonzero_faces(V, F, mesh_path)
    gt_is_mesh = len(Fg) > 0
    if gt_is_mesh:
        Fg, areas_g = nonzero_faces(Vg, Fg, gt_path)
        Vg_used = Vg[_used_vertices(Vg, Fg)]
    else:
        Vg_used = Vg
    glo, ghi = Vg_used.min(0), Vg_used.max(0)
    diag = float(np.linalg.norm(ghi - glo))
    if not diag > 0:
        raise StageError(f"{gt_path}: the ground truth has a zero-size bounding box (all points coincide)")
    if thresholds is None:
        thresholds = [0.005 * diag, 0.01 * diag, 0.02 * diag]
    thresholds = [float(x) for x in thresholds]
    if any(not x > 0 for x in thresholds):
        raise StageError(f"F-score thresholds must be positive, got {thresholds}")
    Vu = V[_used_vertices(V, F)]
    lo, hi = Vu.min(0), Vu.max(0)
    del Vu
    if (lo > ghi + diag).any() or (hi < glo - diag).any():
        log.warning("%s: the mesh box %s is far from the ground-truth box %s: wrong frame or missing alignment?",
                    mesh_path, _bbox_str(lo, hi), _bbox_str(glo, ghi))
    center = (glo + ghi) / 2  # centred coordinates keep float32 distance queries precise
    Vc, Vgc = V - center, Vg - center

    pred_s = sample_surface(Vc, F, areas, n_samples, rng)
    if gt_is_mesh:
        gt_s = sample_surface(Vgc, Fg, areas_g, n_samples, rng)
        comp_from = f"{n_samples} area-uniform GT samples"
    elif len(Vgc) > n_samples:  # a random subset bounds the cost; accuracy still uses every GT point
        gt_s = Vgc[np.sort(rng.choice(len(Vgc), n_samples, replace=False))]
        comp_from = f"{n_samples} random GT points of {len(Vgc)}"
    else:
        gt_s = Vgc
        comp_from = f"every GT point ({len(Vgc)})"
    t = lap("sample", t)
    if gt_is_mesh:
        acc_d = SurfaceDistance(Vgc, Fg, areas_g, rng)(pred_s)
        method_acc = "mesh samples -> GT surface"
    else:
        acc_d = _nn_dist(cKDTree(Vgc, balanced_tree=False), pred_s)
        method_acc = "mesh samples -> nearest GT point (every GT point)"
    t = lap("accuracy", t)
    dist_pred = SurfaceDistance(Vc, F, areas, rng)
    comp_d = dist_pred(gt_s)
    t = lap("completeness", t)

    acc, comp = float(acc_d.mean()), float(comp_d.mean())
    pct = lambda x: 100.0 * x / diag  # noqa: E731
    fs = _prf(acc_d, comp_d, thresholds)
    for row in fs:
        row["threshold_pct_diag"] = pct(row["threshold"])
    result = {
        "protocol": "generic Chamfer / F-score",
        "mesh": str(mesh_path),
        "gt": str(gt_path),
        "gt_kind": "mesh" if gt_is_mesh else "point cloud",
        "units": "ground-truth units",
        "accuracy": acc,
        "completeness": comp,
        "overall": (acc + comp) / 2,
        "accuracy_median": float(np.median(acc_d)),
        "completeness_median": float(np.median(comp_d)),
        "overall_median": float((np.median(acc_d) + np.median(comp_d)) / 2),
        "fscores": fs,
        "gt_bbox_diag": diag,
        "chamfer_pct_diag": {"accuracy": pct(acc), "completeness": pct(comp), "overall": pct((acc + comp) / 2),
                             "accuracy_median": pct(float(np.median(acc_d))),
                             "completeness_median": pct(float(np.median(comp_d)))},
        "method": {"accuracy": method_acc,
                   "completeness": comp_from + " -> mesh surface",
                   "distance": dist_pred.method},
        "parameters": {"n_samples": int(n_samples), "thresholds": thresholds, "seed": seed},
        "n_points": {"mesh_vertices": int(len(V)), "mesh_faces": int(n_faces), "faces_nonzero_area": int(len(F)),
                     "mesh_samples": int(len(pred_s)), "gt_vertices": int(len(Vg)), "gt_faces": int(len(Fg)),
                     "gt_samples": int(len(gt_s))},
        "timings_s": timings,
    }
    if alignment is not None:
        result["alignment"] = alignment.to_json()
    if error_cloud is not None:
        _write_error_cloud(error_cloud, pred_s + center, acc_d, thresholds[-1])
        result["error_cloud"] = {"path": str(error_cloud), "colormap": "viridis", "vmax": thresholds[-1]}
        t = lap("error_cloud", t)
    timer.total()
    result["support"] = mesh_support(mesh_path)  # whether the mesh ends where the object ends (or is raw)
    _write_json(out_json, result)
    log.info("Chamfer vs %s: accuracy %.4g, completeness %.4g, overall %.4g (%.3f%% of the GT diagonal), "
             "F@%.3g = %.3f (%.1f s)", gt_path.name, acc, comp, result["overall"],
             result["chamfer_pct_diag"]["overall"], thresholds[0], fs[0]["fscore"], timings["total"])
    return result
