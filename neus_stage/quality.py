"""Quality without ground truth: what a user can trust of a finished scene when nothing is known to compare.

Two checks, neither of which uses what training fitted (with the surface-point term, ``point_weight``,
training fits the same points, so the geometry check then measures only the points it held out):

- **geometry**: the SfM points of the object (the sparse model's points that lie inside the visual hull,
  which COLMAP triangulated from the photos independently of the trained surface) against the mesh: the
  median and 90th percentile of their distances to the mesh surface, in world units and as a share of the
  object's size (the diagonal of the visual hull's box in bbox.json). Points far from the mesh are
  attributed to the photos that observe them. With reference cameras the points are the ones the
  visual-hull stage triangulated with them (hull.npz); a scene without masks has no hull to tell the
  object's points from the background's, so the check is left out.
- **held-out views**: the PSNR, mask IoU (and SSIM where ``neus/metrics.json`` holds it) of the views the
  trainer never trained on (``holdout_every``). A number from a training view is never called validation.

Verdict (one line, in ``quality.json``, the report and at the end of the run):

- ``failed``: the geometry is off (median above ``FAIL_MEDIAN`` or 90th percentile above ``FAIL_P90`` of the
  object size) or the held-out masks disagree (mean IoU below ``FAIL_IOU``);
- ``check these views``: some held-out view or some photos stand out (a held-out view with IoU below
  ``GOOD_IOU`` or PSNR more than ``PSNR_DROP_DB`` below the held-out median; photos that observe most of the
  SfM points far from the mesh), or the geometry is not good but not failed;
- ``good`` otherwise (median within ``GOOD_MEDIAN``, 90th percentile within ``GOOD_P90`` of the size).

The limits are shares of the object size and of the views' own median, so they mean the same on any scene.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .artifacts.box import held_out_points, read_hull, read_hull_file, read_world_box
from .artifacts.reports import read_report_if_any, write_report
from .errors import StageError

log = logging.getLogger(__name__)

GOOD_MEDIAN, GOOD_P90 = 0.01, 0.03
"""Geometry is good when half the object's SfM points lie within 1% of the object size from the mesh and
nine in ten within 3%."""
FAIL_MEDIAN, FAIL_P90 = 0.03, 0.10
"""Geometry has failed when the median distance exceeds 3% of the object size or the 90th percentile 10%."""
FAR_SHARE = 0.03
"""A point farther than this share of the object size from the mesh is 'far' (attributed to its photos)."""
GOOD_IOU, FAIL_IOU = 0.9, 0.8
"""A held-out view is checked below this mask IoU; the scene has failed below a mean of FAIL_IOU."""
PSNR_DROP_DB = 3.0
"""A held-out view is checked when its PSNR lies this far below the median of the held-out views."""


def inside_hull(points: np.ndarray, hull_npz: Path, scale_mat: np.ndarray, dilate: int = 1) -> np.ndarray:
    """Which world points (N,3) lie in the visual hull of ``hull_npz`` (occupancy in the normalised frame of
    ``scale_mat``), dilated by ``dilate`` voxels."""
    from .geometry.grid_lookup import grow, in_grid

    occ, lo, hi = read_hull(hull_npz)
    r, c = float(scale_mat[0, 0]), scale_mat[:3, 3]
    return in_grid((np.asarray(points, dtype=np.float64) - c) / r, grow(occ, dilate), lo, hi)


def untrained_points(scene_dir: Path, n: int) -> tuple[np.ndarray, str]:
    """Which of the scene's ``n`` points (hull.npz's order, the SfM model's) the training did not fit, and how
    they were chosen: all where training ran without the surface-point term (neus/config.yaml's
    point_weight 0), else the held-out ones (``held_out_points``); none where it fitted every point."""
    import yaml

    cfg = yaml.safe_load(p.read_text()) if (p := Path(scene_dir) / "neus" / "config.yaml").is_file() else None
    if not cfg or float(cfg.get("point_weight", 0.0)) <= 0:
        return np.ones(n, dtype=bool), ""
    every = int(cfg.get("holdout_every", 0))
    if every <= 0:
        return np.zeros(n, dtype=bool), "training fitted every scene point (point_weight > 0, holdout_every 0)"
    return held_out_points(n, every), f"every {every}th point, held out from training's surface-point term"


def object_points(scene_dir: Path) -> tuple[np.ndarray, list[list[str]] | None, dict]:
    """The object's points (world, (N,3)), the photos that observe each (SfM points; None for triangulated
    ones) and where they came from; (empty, None, reason) where there are none."""
    from .artifacts.dataset import read_cameras_sphere

    scene_dir = Path(scene_dir)
    meta = read_report_if_any(scene_dir / "dataset" / "meta.json")
    hull = scene_dir / "hull.npz"
    bbox = read_report_if_any(scene_dir / "bbox.json")
    if not hull.is_file() or not bbox:
        return np.zeros((0, 3)), None, {"reason": "no hull.npz/bbox.json: the visual-hull stage has not run"}
    if bbox.get("carved") is False or meta.get("masks") == "none":
        return (
            np.zeros((0, 3)),
            None,
            {"reason": "the scene has no masks, so no visual hull tells the object's points from the background's"},
        )
    _, scale_mat = read_cameras_sphere(scene_dir / "dataset" / "cameras_sphere.npz")
    sparse = scene_dir / "sfm" / "undistorted" / "sparse"
    if meta.get("source") == "sfm" and sparse.is_dir():
        from .artifacts.sfm import read_sfm_points
        from .frames import sfm_to_world

        sfm_points = read_sfm_points(sparse)
        views = sfm_points.views
        pts = sfm_to_world(scene_dir / "dataset").apply(sfm_points.xyz)
        kind, path = "SfM points inside the visual hull", sparse
    else:
        pts, views = read_hull_file(hull).support_points, None
        if pts is None:
            return np.zeros((0, 3)), None, {"reason": "no SfM model and no triangulated points in hull.npz"}
        kind, path = "points triangulated with the reference cameras, inside the visual hull", hull
    untrained, how = untrained_points(scene_dir, len(pts))
    if not untrained.any():
        return np.zeros((0, 3)), None, {"reason": f"no points independent of the training: {how}"}
    keep = inside_hull(pts, hull, scale_mat) & untrained
    src = {"kind": f"{kind}; {how}" if how else kind, "path": str(path), "points_total": int(len(pts))}
    return pts[keep], None if views is None else [v for v, k in zip(views, keep) if k], src


def geometry_check(scene_dir: Path, mesh_path: Path) -> dict:
    """Distances from the object's SfM points to the mesh (see the module docstring)."""
    from .artifacts.meshes import read_mesh
    from .geometry.distances import SurfaceDistance, nonzero_faces

    scene_dir = Path(scene_dir)
    pts, views, src = object_points(scene_dir)
    if "reason" in src:
        return {"available": False, **src}
    if len(pts) < 20:
        return {"available": False, "reason": f"only {len(pts)} object points ({src['kind']}): too few to judge", **src}
    lo, hi = read_world_box(scene_dir / "bbox.json")
    size = float(np.linalg.norm(hi - lo))
    V, F = read_mesh(mesh_path)
    F, areas = nonzero_faces(V, F, mesh_path)
    centre = (V.min(0) + V.max(0)) / 2
    d = SurfaceDistance(V - centre, F, areas, np.random.default_rng(0))(pts - centre)
    med, p90 = float(np.median(d)), float(np.percentile(d, 90))
    out = {
        "available": True,
        **src,
        "points": int(len(pts)),
        "mesh": str(mesh_path),
        "object_size": size,
        "object_size_is": "diagonal of the visual hull's box (bbox.json world)",
        "median": med,
        "p90": p90,
        "median_share": med / size,
        "p90_share": p90 / size,
        "within_1pct_share": float(np.mean(d <= 0.01 * size)),
        "far_share_limit": FAR_SHARE,
        "far_points": int((d > FAR_SHARE * size).sum()),
    }
    if views is not None and out["far_points"]:
        far = np.flatnonzero(d > FAR_SHARE * size)
        counts: dict[str, int] = {}
        for i in far:
            for v in views[i]:
                counts[v] = counts.get(v, 0) + 1
        seen = {}
        for vs in views:
            for v in vs:
                seen[v] = seen.get(v, 0) + 1
        # photos where far points are at least twice as common as over all photos
        base = len(far) / max(len(pts), 1)
        ranked = sorted(counts, key=lambda v: -counts[v] / seen[v])
        out["far_by_photo"] = {v: {"far": counts[v], "observed": seen[v]} for v in ranked[:10]}
        out["photos_to_check"] = [v for v in ranked if counts[v] / seen[v] >= max(2 * base, 0.1)][:8]
    return out


def heldout_check(scene_dir: Path) -> dict:
    """The held-out views' metrics from neus/metrics.json, or why there are none."""
    m = read_report_if_any(Path(scene_dir) / "neus" / "metrics.json")
    if not m:
        return {"available": False, "reason": "neus/metrics.json not found: training has not finished"}
    if "heldout_psnr" not in m:
        return {
            "available": False,
            "reason": "no views were held out (train.holdout_every: 0), so no view "
            "measures the surface on photos it was not trained on",
        }
    names = list(m.get("heldout_views") or [])
    per = list(m.get("heldout_per_view") or [])
    rows = [{"view": n, **{k: v for k, v in r.items() if isinstance(v, (int, float))}} for n, r in zip(names, per)]
    out = {
        "available": True,
        "views": len(names),
        "psnr": m.get("heldout_psnr"),
        "mask_iou": m.get("heldout_mask_iou"),
        "ssim": m.get("heldout_ssim"),
        "per_view": rows,
    }
    psnrs = [r["psnr"] for r in rows if np.isfinite(r.get("psnr", np.nan))]
    med = float(np.median(psnrs)) if psnrs else None
    flagged = []
    for r in rows:
        why = []
        if r.get("mask_iou", 1.0) < GOOD_IOU:
            why.append(f"mask IoU {r['mask_iou']:.3f}")
        if med is not None and np.isfinite(r.get("psnr", np.nan)) and r["psnr"] < med - PSNR_DROP_DB:
            why.append(f"PSNR {r['psnr']:.1f} dB, {med - r['psnr']:.1f} dB below the held-out median")
        if why:
            flagged.append({"view": r["view"], "why": ", ".join(why)})
    out["flagged"] = flagged
    if "ssim" not in (per[0] if per else {}) and out["ssim"] is None:
        out["ssim_note"] = "neus/metrics.json holds no SSIM (the trainer does not compute it)"
    return out


def training_psnr(scene_dir: Path) -> float | None:
    """The training-batch PSNR over the last tenth of train_log.csv (rays of training views only)."""
    import pandas as pd

    csv = Path(scene_dir) / "neus" / "train_log.csv"
    if not csv.is_file():
        return None
    df = pd.read_csv(csv)
    if df.empty or "psnr" not in df:
        return None
    tail = df["psnr"].iloc[-max(1, len(df) // 10) :]
    return float(np.nanmean(tail))


def verdict(geometry: dict, heldout: dict) -> tuple[str, str]:
    """(good | check these views | failed, the reason in one sentence)."""
    fails, checks, goods = [], [], []
    g_views: list[str] = []
    if geometry.get("available"):
        med, p90 = geometry["median_share"], geometry["p90_share"]
        text = (
            f"the object's {geometry['points']} SfM points lie {100 * med:.2f}% (median) / {100 * p90:.2f}% "
            "(90%) of its size from the mesh"
        )
        if med > FAIL_MEDIAN or p90 > FAIL_P90:
            fails.append(text)
        elif med > GOOD_MEDIAN or p90 > GOOD_P90:
            g_views = list(geometry.get("photos_to_check") or [])
            checks.append(text + (f"; far points mostly seen by photos {', '.join(g_views)}" if g_views else ""))
        else:
            goods.append(text)
    if heldout.get("available"):
        ssim = f", SSIM {heldout['ssim']:.3f}" if heldout.get("ssim") is not None else ""
        text = (
            f"{heldout['views']} held-out views: PSNR {heldout['psnr']:.1f} dB{ssim}, "
            f"mask IoU {heldout['mask_iou']:.3f}"
        )
        if heldout["mask_iou"] < FAIL_IOU:
            fails.append(text)
        elif heldout["flagged"]:
            checks.append(text + "; " + "; ".join(f"view {f['view']}: {f['why']}" for f in heldout["flagged"]))
        else:
            goods.append(text)
    if not geometry.get("available") and not heldout.get("available"):
        return "check these views", (
            "nothing to judge the result by: "
            + geometry.get("reason", "no geometry check")
            + "; "
            + heldout.get("reason", "no held-out views")
        )
    missing = [x["reason"] for x in (geometry, heldout) if not x.get("available")]
    tail = f" ({'; '.join(missing)})" if missing else ""
    if fails:
        return "failed", "; ".join(fails + checks) + tail
    if checks:
        return "check these views", "; ".join(checks + goods) + tail
    return "good", "; ".join(goods) + tail


def assess(scene_dir: Path, out: Path | None = None) -> dict:
    """The scene's quality without ground truth (module docstring); written to ``out`` (quality.json) where
    given. Needs the mesh (mesh_clean.ply, else mesh.ply)."""
    scene_dir = Path(scene_dir)
    mesh = next((p for p in (scene_dir / "mesh_clean.ply", scene_dir / "mesh.ply") if p.is_file()), None)
    if mesh is None:
        raise StageError(f"{scene_dir}: no mesh_clean.ply or mesh.ply; run the mesh stage first")
    meta = read_report_if_any(scene_dir / "dataset" / "meta.json")
    geometry = geometry_check(scene_dir, mesh)
    heldout = heldout_check(scene_dir)
    label, reason = verdict(geometry, heldout)
    result = {
        "verdict": label,
        "reason": reason,
        "line": f"{label}: {reason}",
        "units": meta.get("units", "world units"),
        "geometry": geometry,
        "heldout": heldout,
        "training_batch_psnr": training_psnr(scene_dir),
        "limits": {
            "good_median": GOOD_MEDIAN,
            "good_p90": GOOD_P90,
            "fail_median": FAIL_MEDIAN,
            "fail_p90": FAIL_P90,
            "good_iou": GOOD_IOU,
            "fail_iou": FAIL_IOU,
            "psnr_drop_db": PSNR_DROP_DB,
        },
    }
    if out is not None:
        write_report(Path(out), result)
    (log.warning if label != "good" else log.info)("quality: %s", result["line"])
    return result


__all__ = ["assess", "geometry_check", "heldout_check", "inside_hull", "object_points", "verdict"]
