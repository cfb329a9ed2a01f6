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
This module is the stage (read, score, write ``eval.json``); the point steps are in
:mod:`neus_stage.geometry.dtu`, the distances and scores in :mod:`neus_stage.geometry.distances`, the DTU files
and the error cloud in :mod:`neus_stage.artifacts.evaluation`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .artifacts.evaluation import DTUEvalFiles, read_dtu_eval_files, read_dtu_points, write_error_cloud
from .artifacts.meshes import read_geometry, read_mesh
from .artifacts.reports import read_report_if_any, write_report
from .errors import StageError
from .geometry.cameras import Similarity
from .geometry.distances import (
    SurfaceDistance,
    chamfer_scores,
    nearest_distances,
    nonzero_faces,
    precision_recall,
    sample_surface,
    used_vertices,
)
from .geometry.dtu import (
    above_plane,
    dtu_sample_estimate,
    dtu_sample_mesh,
    faces_near_box,
    observed_points,
    points_in_box,
    random_greedy_thin,
)
from .timing import StageTimer

log = logging.getLogger(__name__)

MAX_DTU_SAMPLES = 150_000_000  # ~3.6 GB of points; a real DTU mesh gives a few million


def _bbox_str(lo, hi) -> str:
    f = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    return f"{f(lo)} .. {f(hi)}"


def _support_record(meta: dict, meta_path: Path, mesh_path: Path, names: list[str]) -> dict:
    """What mesh.json's ``support`` says about the mesh ``mesh_path`` (the raw ``names[0]`` or clean ``names[1]``)."""
    sup = meta.get("support")
    if not isinstance(sup, dict):
        return {
            "cut": False,
            "method": "none",
            "meta": str(meta_path),
            "note": "written before the mesh stage cut at the support: the raw extent",
        }
    out = {"cut": bool(sup.get("cut")), "method": sup.get("method"), "how": sup.get("how"), "meta": str(meta_path)}
    vis = sup.get("visibility")
    if vis and (mesh_path.name == names[1] or sup.get("method") != "visibility"):
        out["area_removed"] = vis.get("area_removed")
        out["area_removed_share"] = vis.get("area_removed_share")
    elif vis:  # the raw mesh: the visibility cull applies to the clean mesh only
        out["cut"] = False
    if sup.get("margin_world") is not None:
        out["margin_world"] = sup["margin_world"]
    return out


def mesh_support(mesh_path: Path) -> dict:
    """Whether the mesh stage cut the mesh where the object ends (its support plane, or what no camera
    observes), from the mesh.json written beside it; ``cut`` is None where there is none."""
    mesh_path = Path(mesh_path)
    for meta_path in dict.fromkeys([mesh_path.with_suffix(".json"), mesh_path.parent / "mesh.json"]):
        meta = read_report_if_any(meta_path)
        names = [Path(str((meta.get(k) or {}).get("path", ""))).name for k in ("mesh", "mesh_clean")]
        if meta and mesh_path.name in names:
            return _support_record(meta, meta_path, mesh_path, names)
    return {"cut": None, "note": f"no mesh.json beside {mesh_path.name}: whether it was cut is unknown"}


# ------------------------------------------------------------------------------------------- DTU steps
def _wrong_frame(mesh_path: Path, scan: int, lo: np.ndarray, hi: np.ndarray, V: np.ndarray) -> StageError:
    return StageError(
        f"{mesh_path}: 0 samples inside the DTU evaluation box of scan {scan} ({_bbox_str(lo, hi)} mm); "
        f"the mesh spans {_bbox_str(V.min(0), V.max(0))}. It is probably in the wrong frame (e.g. the normalised "
        "unit-sphere frame instead of DTU world coordinates in mm): map it with the dataset's scale_mat "
        "(x_world = r * x + c) or give the reference alignment"
    )


def _dtu_mesh_near_box(
    V: np.ndarray, F: np.ndarray, lo: np.ndarray, hi: np.ndarray, downsample: float, mesh_path: Path, scan: int
) -> tuple[np.ndarray, np.ndarray]:
    """The faces and vertices within a margin of the evaluation box ``lo`` .. ``hi``; an error when there are
    none or when sampling them would give far too many points (wrong units or frame)."""
    # Faces and vertices more than a margin outside the evaluation box cannot give points in it: skip them
    # (far-away junk and background shells then cost nothing; thinning near the box faces is unaffected).
    margin = 5.0 * downsample
    elo, ehi = lo.astype(np.float64) - margin, hi.astype(np.float64) + margin
    F = F[faces_near_box(V, F, elo, ehi)]
    v_near = V[points_in_box(V, elo, ehi)]
    if len(F) == 0 and len(v_near) == 0:
        raise _wrong_frame(mesh_path, scan, lo, hi, V)
    estimate = dtu_sample_estimate(V, F, downsample) + len(v_near)
    if estimate > MAX_DTU_SAMPLES:
        raise StageError(
            f"{mesh_path}: sampling every {downsample} mm would give about {estimate:.3g} points (limit "
            f"{MAX_DTU_SAMPLES:.0e}); the mesh spans {_bbox_str(V.min(0), V.max(0))}, which is far too large for "
            "a DTU object in mm: probably the wrong units or frame"
        )
    return F, v_near


def _dtu_observed_samples(
    data_down: np.ndarray, gt: DTUEvalFiles, lo: np.ndarray, hi: np.ndarray, V: np.ndarray, mesh_path: Path, scan: int
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3 and 4: the thinned samples in the evaluation box, and those of them in observed voxels."""
    data_in = data_down[points_in_box(data_down, lo, hi, closed=False)]
    if len(data_in) == 0:
        raise _wrong_frame(mesh_path, scan, lo[0], hi[0], V)
    data_in_obs = data_in[observed_points(data_in, gt.obs_mask, gt.bb[:1], gt.res)]
    if len(data_in_obs) == 0:
        raise StageError(
            f"{mesh_path}: {len(data_in)} samples lie in the evaluation box of scan {scan} but 0 in its observed "
            f"voxels (ObsMask); the mesh spans {_bbox_str(V.min(0), V.max(0))}: probably the wrong frame or scan"
        )
    return data_in, data_in_obs


def _dtu_result(
    mesh_path: Path,
    dtu_root: Path,
    scan: int,
    d2s: np.ndarray,
    s2d: np.ndarray,
    max_dist: float,
    parameters: dict,
    n_points: dict,
) -> dict:
    """Steps 5 to 7: accuracy, completeness and overall (mm) from the distances, as the eval.json record."""
    acc_in, comp_in = d2s[d2s < max_dist], s2d[s2d < max_dist]
    if len(acc_in) == 0 or len(comp_in) == 0:
        raise StageError(
            f"{mesh_path}: no point within {max_dist} mm of the ground truth of scan {scan}; "
            "the mesh is probably in the wrong frame or belongs to another scan"
        )
    acc, comp = float(acc_in.mean()), float(comp_in.mean())
    return {
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
        "fscores": precision_recall(d2s, s2d, [0.5, 1.0, 2.0]),
        "parameters": parameters,
        "n_points": {**n_points, "accuracy_inliers": int(len(acc_in)), "completeness_inliers": int(len(comp_in))},
    }


def evaluate_dtu(
    mesh_path: Path,
    dtu_root: Path,
    scan: int,
    out_json: Path,
    *,
    alignment: Similarity | None = None,
    downsample: float = 0.2,
    patch: float = 60.0,
    max_dist: float = 20.0,
    seed: int = 0,
) -> dict:
    """DTU Chamfer (mm) of a mesh in DTU world coordinates; writes ``out_json`` and returns the same dict."""
    timer = StageTimer()
    mesh_path, dtu_root = Path(mesh_path), Path(dtu_root)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    gt = read_dtu_eval_files(dtu_root, scan)
    V, F = read_mesh(mesh_path)
    t = timer.lap("read_mesh", t)

    if alignment is not None:
        V = alignment.apply(V)
    n_faces = len(F)
    F, _ = nonzero_faces(V, F, mesh_path)
    n_nonzero = len(F)
    lo, hi = gt.bb[:1] - patch, gt.bb[1:] + patch * 2
    F, v_near = _dtu_mesh_near_box(V, F, lo[0], hi[0], downsample, mesh_path, scan)
    pts = dtu_sample_mesh(V, F, thresh=downsample, vertices=v_near)
    n_sampled = len(pts)
    t = timer.lap("sample", t)
    data_down = pts[random_greedy_thin(pts, downsample, rng)]
    del pts
    t = timer.lap("thin", t)
    data_in, data_in_obs = _dtu_observed_samples(data_down, gt, lo, hi, V, mesh_path, scan)
    t = timer.lap("crop_mask", t)

    stl = read_dtu_points(gt.stl_path)
    t = timer.lap("read_gt", t)
    d2s = nearest_distances(cKDTree(stl, balanced_tree=False), data_in_obs, max_dist)
    t = timer.lap("accuracy", t)
    stl_above = stl[above_plane(stl, gt.plane)]
    s2d = nearest_distances(cKDTree(data_in, balanced_tree=False), stl_above, max_dist)
    t = timer.lap("completeness", t)

    n_points = {
        "mesh_vertices": int(len(V)),
        "mesh_faces": int(n_faces),
        "faces_nonzero_area": int(n_nonzero),
        "faces_near_box": int(len(F)),
        "vertices_near_box": int(len(v_near)),
        "sampled": int(n_sampled),
        "thinned": int(len(data_down)),
        "in_box": int(len(data_in)),
        "in_obs": int(len(data_in_obs)),
        "gt": int(len(stl)),
        "gt_above_plane": int(len(stl_above)),
    }
    parameters = {"downsample": downsample, "patch": patch, "max_dist": max_dist, "seed": seed}
    result = _dtu_result(mesh_path, dtu_root, scan, d2s, s2d, max_dist, parameters, n_points)
    timer.total()
    result["timings_s"] = timer.timings
    if alignment is not None:
        result["alignment"] = alignment.to_json()
    result["support"] = mesh_support(mesh_path)  # whether the mesh ends where the object ends (or is raw)
    write_report(Path(out_json), result)
    log.info(
        "DTU scan %d: accuracy %.4f mm, completeness %.4f mm, overall %.4f mm (%.1f s)",
        scan,
        result["accuracy"],
        result["completeness"],
        result["overall"],
        timer.timings["total"],
    )
    return result


# ------------------------------------------------------------------------------------------ generic
def _fscore_thresholds(thresholds: list[float] | None, diag: float) -> list[float]:
    """The F-score thresholds: as given (all positive), else 0.5 %, 1 % and 2 % of the GT box diagonal."""
    if thresholds is None:
        thresholds = [0.005 * diag, 0.01 * diag, 0.02 * diag]
    thresholds = [float(x) for x in thresholds]
    if any(not x > 0 for x in thresholds):
        raise StageError(f"F-score thresholds must be positive, got {thresholds}")
    return thresholds


def _gt_box(Vg: np.ndarray, Fg: np.ndarray, gt_path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Corners and diagonal of the ground truth's box (the vertices its faces use; all points of a cloud)."""
    Vg_used = Vg[used_vertices(Vg, Fg)] if len(Fg) else Vg
    glo, ghi = Vg_used.min(0), Vg_used.max(0)
    diag = float(np.linalg.norm(ghi - glo))
    if not diag > 0:
        raise StageError(f"{gt_path}: the ground truth has a zero-size bounding box (all points coincide)")
    return glo, ghi, diag


def _warn_if_far(V: np.ndarray, F: np.ndarray, glo: np.ndarray, ghi: np.ndarray, diag: float, mesh_path: Path) -> None:
    Vu = V[used_vertices(V, F)]
    lo, hi = Vu.min(0), Vu.max(0)
    if (lo > ghi + diag).any() or (hi < glo - diag).any():
        log.warning(
            "%s: the mesh box %s is far from the ground-truth box %s: wrong frame or missing alignment?",
            mesh_path,
            _bbox_str(lo, hi),
            _bbox_str(glo, ghi),
        )


def _gt_samples(
    Vgc: np.ndarray, Fg: np.ndarray, areas_g: np.ndarray | None, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """The GT points whose distance to the mesh is the completeness, and how they were chosen."""
    if len(Fg):
        return sample_surface(Vgc, Fg, areas_g, n_samples, rng), f"{n_samples} area-uniform GT samples"
    if len(Vgc) > n_samples:  # a random subset bounds the cost; accuracy still uses every GT point
        pick = np.sort(rng.choice(len(Vgc), n_samples, replace=False))
        return Vgc[pick], f"{n_samples} random GT points of {len(Vgc)}"
    return Vgc, f"every GT point ({len(Vgc)})"


def _accuracy_distances(
    pred_s: np.ndarray, Vgc: np.ndarray, Fg: np.ndarray, areas_g: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Distances of the mesh samples to the GT surface (GT mesh) or nearest GT point (GT cloud), and which."""
    if len(Fg):
        return SurfaceDistance(Vgc, Fg, areas_g, rng)(pred_s), "mesh samples -> GT surface"
    return (
        nearest_distances(cKDTree(Vgc, balanced_tree=False), pred_s),
        "mesh samples -> nearest GT point (every GT point)",
    )


def evaluate_generic(
    mesh_path: Path,
    gt_path: Path,
    out_json: Path,
    *,
    alignment: Similarity | None = None,
    thresholds: list[float] | None = None,
    n_samples: int = 200_000,
    error_cloud: Path | None = None,
    seed: int = 0,
) -> dict:
    """Chamfer and F-score of a mesh against a ground-truth mesh or point cloud (units of the GT).

    accuracy: ``n_samples`` area-uniform samples of the mesh -> GT surface (GT mesh) or nearest GT point (GT cloud);
    completeness: ``n_samples`` area-uniform samples of the GT mesh (for a GT cloud: its points, a random subset of
    ``n_samples`` when it has more) -> mesh surface (exact point-to-triangle distance).
    F-score thresholds default to 0.5 %, 1 % and 2 % of the GT bounding-box diagonal.
    """
    timer = StageTimer()
    mesh_path, gt_path = Path(mesh_path), Path(gt_path)
    if n_samples < 1:
        raise StageError(f"n_samples must be positive, got {n_samples}")
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    V, F = read_mesh(mesh_path)
    Vg, Fg = read_geometry(gt_path, "ground truth")
    t = timer.lap("read", t)
    if alignment is not None:
        V = alignment.apply(V)
    n_faces = len(F)
    F, areas = nonzero_faces(V, F, mesh_path)
    gt_is_mesh = len(Fg) > 0
    Fg, areas_g = nonzero_faces(Vg, Fg, gt_path) if gt_is_mesh else (Fg, None)
    glo, ghi, diag = _gt_box(Vg, Fg, gt_path)
    thresholds = _fscore_thresholds(thresholds, diag)
    _warn_if_far(V, F, glo, ghi, diag, mesh_path)
    center = (glo + ghi) / 2  # centred coordinates keep float32 distance queries precise
    Vc, Vgc = V - center, Vg - center

    pred_s = sample_surface(Vc, F, areas, n_samples, rng)
    gt_s, comp_from = _gt_samples(Vgc, Fg, areas_g, n_samples, rng)
    t = timer.lap("sample", t)
    acc_d, method_acc = _accuracy_distances(pred_s, Vgc, Fg, areas_g, rng)
    t = timer.lap("accuracy", t)
    dist_pred = SurfaceDistance(Vc, F, areas, rng)
    comp_d = dist_pred(gt_s)
    t = timer.lap("completeness", t)

    result = {
        "protocol": "generic Chamfer / F-score",
        "mesh": str(mesh_path),
        "gt": str(gt_path),
        "gt_kind": "mesh" if gt_is_mesh else "point cloud",
        "units": "ground-truth units",
        **chamfer_scores(acc_d, comp_d, thresholds, diag),
        "method": {
            "accuracy": method_acc,
            "completeness": comp_from + " -> mesh surface",
            "distance": dist_pred.method,
        },
        "parameters": {"n_samples": int(n_samples), "thresholds": thresholds, "seed": seed},
        "n_points": {
            "mesh_vertices": int(len(V)),
            "mesh_faces": int(n_faces),
            "faces_nonzero_area": int(len(F)),
            "mesh_samples": int(len(pred_s)),
            "gt_vertices": int(len(Vg)),
            "gt_faces": int(len(Fg)),
            "gt_samples": int(len(gt_s)),
        },
        "timings_s": timer.timings,
    }
    if alignment is not None:
        result["alignment"] = alignment.to_json()
    if error_cloud is not None:
        write_error_cloud(error_cloud, pred_s + center, acc_d, thresholds[-1])
        result["error_cloud"] = {"path": str(error_cloud), "colormap": "viridis", "vmax": thresholds[-1]}
        t = timer.lap("error_cloud", t)
    timer.total()
    result["support"] = mesh_support(mesh_path)  # whether the mesh ends where the object ends (or is raw)
    write_report(Path(out_json), result)
    log.info(
        "Chamfer vs %s: accuracy %.4g, completeness %.4g, overall %.4g (%.3f%% of the GT diagonal), "
        "F@%.3g = %.3f (%.1f s)",
        gt_path.name,
        result["accuracy"],
        result["completeness"],
        result["overall"],
        result["chamfer_pct_diag"]["overall"],
        thresholds[0],
        result["fscores"][0]["fscore"],
        timer.timings["total"],
    )
    return result
