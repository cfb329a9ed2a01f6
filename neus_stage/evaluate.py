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
:mod:`neus_stage.geometry.dtu` and :mod:`neus_stage.geometry.generic_chamfer`, the distances and scores in
:mod:`neus_stage.geometry.distances`, the DTU files and the error cloud in :mod:`neus_stage.artifacts.evaluation`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .artifacts.evaluation import DTUEvalFiles, read_dtu_eval_files, read_dtu_points, write_error_cloud
from .artifacts.mesh_record import mesh_support
from .artifacts.meshes import read_geometry, read_mesh
from .artifacts.reports import write_report
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
from .geometry.generic_chamfer import CentredPair, accuracy_distances, centred_pair, gt_samples
from .timing import StageTimer

log = logging.getLogger(__name__)

MAX_DTU_SAMPLES = 150_000_000  # ~3.6 GB of points; a real DTU mesh gives a few million


def _bbox_str(lo, hi) -> str:
    f = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    return f"{f(lo)} .. {f(hi)}"


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
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The non-zero-area faces and the vertices within a margin of the evaluation box ``lo`` .. ``hi``, and
    their counts for eval.json; an error when there are none or when sampling them would give far too many
    points (wrong units or frame)."""
    counts = {"mesh_vertices": int(len(V)), "mesh_faces": int(len(F))}
    F, _ = nonzero_faces(V, F, mesh_path)
    counts["faces_nonzero_area"] = int(len(F))
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
    return F, v_near, {**counts, "faces_near_box": int(len(F)), "vertices_near_box": int(len(v_near))}


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
    lo, hi = gt.bb[:1] - patch, gt.bb[1:] + patch * 2
    F, v_near, mesh_counts = _dtu_mesh_near_box(V, F, lo[0], hi[0], downsample, mesh_path, scan)
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
        **mesh_counts,
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


def _generic_result(
    mesh_path: Path,
    gt_path: Path,
    s: CentredPair,
    samples: tuple[np.ndarray, np.ndarray],
    distances: tuple[np.ndarray, np.ndarray],
    method: dict,
    parameters: dict,
    timings: dict,
) -> dict:
    """eval.json of a generic evaluation: the scores of the accuracy and completeness ``distances`` of the mesh
    and GT ``samples``, how they were measured (``method``), ``parameters``, the point counts, ``timings``."""
    (pred_s, gt_s), (acc_d, comp_d) = samples, distances
    return {
        "protocol": "generic Chamfer / F-score",
        "mesh": str(mesh_path),
        "gt": str(gt_path),
        "gt_kind": "mesh" if s.gt_is_mesh else "point cloud",
        "units": "ground-truth units",
        **chamfer_scores(acc_d, comp_d, s.thresholds, s.diag),
        "method": method,
        "parameters": parameters,
        "n_points": {
            "mesh_vertices": int(len(s.V)),
            "mesh_faces": int(s.n_faces),
            "faces_nonzero_area": int(len(s.F)),
            "mesh_samples": int(len(pred_s)),
            "gt_vertices": int(len(s.Vg)),
            "gt_faces": int(len(s.Fg)),
            "gt_samples": int(len(gt_s)),
        },
        "timings_s": timings,
    }


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
    s = centred_pair(V, F, Vg, Fg, thresholds, mesh_path, gt_path)
    _warn_if_far(V, s.F, s.glo, s.ghi, s.diag, mesh_path)
    pred_s = sample_surface(s.V, s.F, s.areas, n_samples, rng)
    gt_s, comp_from = gt_samples(s.Vg, s.Fg, s.areas_g, n_samples, rng)
    t = timer.lap("sample", t)
    acc_d, method_acc = accuracy_distances(pred_s, s.Vg, s.Fg, s.areas_g, rng)
    t = timer.lap("accuracy", t)
    dist_pred = SurfaceDistance(s.V, s.F, s.areas, rng)
    comp_d = dist_pred(gt_s)
    t = timer.lap("completeness", t)

    method = {"accuracy": method_acc, "completeness": comp_from + " -> mesh surface", "distance": dist_pred.method}
    parameters = {"n_samples": int(n_samples), "thresholds": s.thresholds, "seed": seed}
    result = _generic_result(mesh_path, gt_path, s, (pred_s, gt_s), (acc_d, comp_d), method, parameters, timer.timings)
    if alignment is not None:
        result["alignment"] = alignment.to_json()
    if error_cloud is not None:
        vmax = s.thresholds[-1]
        write_error_cloud(error_cloud, pred_s + s.center, acc_d, vmax)
        result["error_cloud"] = {"path": str(error_cloud), "colormap": "viridis", "vmax": vmax}
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
        s.thresholds[0],
        result["fscores"][0]["fscore"],
        timer.timings["total"],
    )
    return result
