"""The visual-hull stage: carve a voxel grid from masks and cameras; write bbox.json and hull.npz.

The carving is :mod:`neus_stage.geometry.visual_hull`: a voxel is empty only when more than
``max_background_votes`` of the views that see it call it background; masks are dilated by a voxel's
projected size, so thin parts survive the carving.

Under an object that stands on a surface no camera looks, so the hull continues below the base as a
cone. The stage finds the support plane (:mod:`neus_stage.geometry.support`, in the SfM points or in
points triangulated with reference cameras), checks that cutting there takes nothing from any
silhouette (lowering it below a base plate where needed), and bounds the hull by it; training (its box
and occupancy grid come from hull.npz) and the mesh stage then stop there too. bbox.json records the
plane, its inliers and how it was found, or why there is none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from .artifacts.box import write_bbox, write_hull
from .artifacts.dataset import read_cameras_sphere, read_masks
from .errors import StageError
from .geometry.visual_hull import box_around, carve, occupied_box

log = logging.getLogger(__name__)


SUPPORT_MODES = ("cut", "record", "off")
MAX_SILHOUETTE_LOSS = 0.005
"""A cut may take at most this share of a view's silhouette, and no region deeper than 1.5 pixels (what the
voxels' splatting leaves is boundary noise of about a pixel), in every view but the max_background_votes that may
dispute it, as they may dispute a hull voxel."""
MAX_LOWERING = 0.05
"""A support plane may be lowered (to below a base plate) by at most this share of the object's height."""


def _camera_frames(world_mats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres (N,3) and up vectors (N,3, minus the camera y axis) in the world frame."""
    from .geometry.cameras import decompose_projection

    poses = np.stack([decompose_projection(wm[:3, :4])[1] for wm in world_mats])
    return poses[:, :3, 3], -poses[:, :3, 1]


def support_points(
    dataset_dir: Path, stems: list[str], world_mats: np.ndarray, sparse_dir: Path | None
) -> tuple[np.ndarray, dict]:
    """World points to find the support plane in: the SfM model's (``sparse_dir``, mapped from the SfM frame
    into the dataset's world by meta.json's similarity) or, for reference cameras, points triangulated from
    the dataset's images with its cameras held fixed."""
    if sparse_dir is not None:
        from .artifacts.sfm import read_sfm_points
        from .frames import sfm_to_world

        sparse_dir = Path(sparse_dir)
        if not sparse_dir.is_dir():
            raise StageError(f"{sparse_dir}: SfM model not found; run the sfm stage or leave out --sparse")
        pts = sfm_to_world(dataset_dir).apply(read_sfm_points(sparse_dir).xyz)
        return pts, {"kind": "sfm points", "path": str(sparse_dir), "points": int(len(pts))}
    from .triangulate import triangulate_known_cameras

    pts, stats = triangulate_known_cameras(Path(dataset_dir) / "image", [f"{s}.png" for s in stems], world_mats)
    return pts, {
        "kind": "triangulated with the dataset's cameras held fixed",
        "path": str(Path(dataset_dir) / "image"),
        "points": int(len(pts)),
        **stats,
    }


def _find_plane(
    dataset_dir: Path,
    stems: list[str],
    world_mats: np.ndarray,
    scale_mat: np.ndarray,
    P: np.ndarray,
    masks: np.ndarray,
    occ: np.ndarray,
    f_lo: np.ndarray,
    f_hi: np.ndarray,
    sparse_dir: Path | None,
    points_out: dict,
    dissenting_views: int = 0,
) -> tuple[object | None, dict]:
    """The support plane in the normalised frame (lowered below a base plate where needed) that cuts no
    silhouette, or None; and the record for bbox.json. ``points_out`` receives the points searched and the
    found plane's inliers (for the report's figure)."""
    from .geometry.silhouette import lowest_safe_cut
    from .geometry.support import find_support

    rec: dict = {}
    try:
        pts, source = support_points(dataset_dir, stems, world_mats, sparse_dir)
    except StageError as exc:  # no points (plain photos, a failed triangulation): the run goes on
        rec.update(reason="no points", message=f"no points to find a support plane in: {exc}")
        return None, rec
    rec["source"] = source
    centres, ups = _camera_frames(world_mats)
    search = find_support(pts, centres, ups)
    points_out["support_points"] = pts.astype(np.float32)
    points_out["support_inliers"] = search.plane.inliers if search.plane is not None else np.zeros(len(pts), dtype=bool)
    rec["search"] = search.to_json()
    rec.update(reason=search.reason, message=search.message)
    if search.plane is None:
        return None, rec
    to_norm = np.linalg.inv(scale_mat)
    r = float(scale_mat[0, 0])
    attempts = []
    # the largest qualifying plane first; where it cuts the silhouettes (a box's top), the next one
    for plane_w in [search.plane, *search.alternatives]:
        plane_n = plane_w.transformed(to_norm)
        n_inl = max(int(plane_w.inliers.sum()), 1)
        margin = 3.0 * plane_n.rms / np.sqrt(n_inl)  # the fitted plane's own uncertainty
        lowering, trials = lowest_safe_cut(
            P,
            masks,
            occ,
            f_lo,
            f_hi,
            plane_n,
            margin,
            max_loss=MAX_SILHOUETTE_LOSS,
            max_lowering=MAX_LOWERING,
            dissenting_views=dissenting_views,
        )
        attempts.append(
            {
                "plane_world": plane_w.to_json(),
                "accepted": lowering is not None,
                "trials": [
                    {
                        **t,
                        "lowering_world": t["lowering"] * r,
                        "worst_view": None if t["worst_view"] is None else stems[t["worst_view"]],
                        "dissenting_views": [stems[v] for v in t.get("dissenting_views", [])],
                    }
                    for t in trials
                ],
            }
        )
        if lowering is not None:
            break
    rec["silhouette_check"] = {
        "max_loss": MAX_SILHOUETTE_LOSS,
        "max_depth_px": 1.5,
        "max_lowering_share": MAX_LOWERING,
        "dissenting_views": dissenting_views,
        "attempts": attempts,
    }
    rec["plane_found"] = {"world": plane_w.to_json(), "normalized": plane_n.to_json()}
    if lowering is None:
        worst = attempts[0]["trials"][-1]
        rec.update(
            reason="cuts the silhouettes",
            message=f"the plane found ({search.message}) cuts through the object's silhouettes: cut there "
            f"(or up to {MAX_LOWERING:.0%} of the object's height lower) it takes "
            f"{worst['worst_loss']:.1%} of view {worst['worst_view']}'s mask, a region "
            f"{worst['worst_depth_px']:.0f} px deep"
            + (f"; so do the {len(attempts) - 1} other plane(s) found" if len(attempts) > 1 else ""),
        )
        return None, rec
    if len(attempts) > 1:
        points_out["support_inliers"] = plane_w.inliers
        rec["message"] = (
            f"support plane through {int(plane_w.inliers.sum())} points ({plane_w.inlier_share:.0%}), "
            f"rms {plane_w.rms:.3g}, the {len(attempts)}. plane found (the larger ones cut the "
            "object's silhouettes)"
        )
    used = type(plane_n)(
        plane_n.normal,
        plane_n.offset + lowering,
        plane_n.inliers,
        plane_n.inlier_share,
        plane_n.rms,
        plane_n.tolerance,
        plane_n.tilt_deg,
        plane_n.below_share,
    )
    rec["lowered_by"] = {"normalized": lowering, "world": lowering * r}
    rec["margin"] = {"normalized": margin, "world": margin * r}
    rec["plane"] = {"normalized": used.to_json(), "world": used.transformed(scale_mat).to_json()}
    if lowering > 0:
        rec["message"] += (
            f"; lowered by {lowering * r:.3g} world units to where the object's silhouettes begin "
            "(a base plate's thickness)"
        )
    return used, rec


def _box_without_masks(
    dataset_dir: Path, bbox_path: Path, hull_path: Path, scale_mat: np.ndarray, n_views: int
) -> dict:
    """A scene without masks (masks mode none) has no visual hull: the object box is the dataset's sphere
    (from the SfM points and the cameras' convergence), and hull.npz marks all of it as possibly occupied
    (``carved`` false), so training samples the whole box and models the background beyond it."""
    lo, hi = -np.ones(3), np.ones(3)
    occ = np.ones((32, 32, 32), dtype=bool)
    r, c = scale_mat[0, 0], scale_mat[:3, 3]
    reason = "the scene has no masks (masks mode none): no visual hull, so no support plane is searched"
    bbox = {
        "normalized": {"min": lo.tolist(), "max": hi.tolist()},
        "world": {"min": (lo * r + c).tolist(), "max": (hi * r + c).tolist()},
        "hull_box": {"min": lo.tolist(), "max": hi.tolist()},
        "resolution": int(occ.shape[0]),
        "occupied_voxels": int(occ.sum()),
        "views": n_views,
        "carved": False,
        "touches_unit_cube": True,
        "support": {"mode": "off", "method": "visibility", "reason": "no masks", "message": reason, "hull_cut": False},
    }
    write_bbox(bbox_path, bbox)
    write_hull(
        hull_path, occ, lo, hi, scale_mat, background_votes=np.zeros(occ.shape, np.uint8), carved=np.array(False)
    )
    log.warning("%s: no masks, so no visual hull: the object box is the unit sphere's cube", dataset_dir)
    return bbox


def _carve_hull(
    dataset_dir: Path, carve_box: Callable, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A coarse pass over the whole normalised cube, then a fine pass over its occupied part: (coarse grid,
    fine box min, max, fine grid, its background votes)."""
    coarse, _ = carve_box(-np.ones(3), np.ones(3), 64)
    if not coarse.any():
        raise StageError(
            f"{dataset_dir}: the visual hull is empty: no region is foreground in enough views. The masks "
            "and cameras disagree (wrong masks, masks of other photos, or wrong cameras)"
        )
    f_lo, f_hi = box_around(coarse, -np.ones(3), np.ones(3))
    occ, votes = carve_box(f_lo, f_hi, resolution)
    if not occ.any():
        raise StageError(f"{dataset_dir}: the fine visual hull is empty; check the masks")
    return coarse, f_lo, f_hi, occ, votes


def _search_support(
    mode: str,
    dataset_dir: Path,
    stems: list[str],
    world_mats: np.ndarray,
    scale_mat: np.ndarray,
    P: np.ndarray,
    masks: np.ndarray,
    occ: np.ndarray,
    f_lo: np.ndarray,
    f_hi: np.ndarray,
    sparse_dir: Path | None,
    max_background_votes: int,
) -> tuple[object | None, dict, dict]:
    """The support plane (None where there is none or the search is off), bbox.json's support record, and the
    points searched for hull.npz."""
    rec: dict = {"mode": mode}
    extra: dict[str, np.ndarray] = {}
    if mode == "off":
        rec.update(method="none", reason="off", message="support plane search switched off (support: off)")
        return None, rec, extra
    # as many views may dispute the cut as may dispute a hull voxel (max_background_votes)
    plane, found = _find_plane(
        dataset_dir,
        stems,
        world_mats,
        scale_mat,
        P,
        masks,
        occ,
        f_lo,
        f_hi,
        sparse_dir,
        extra,
        dissenting_views=max_background_votes,
    )
    rec.update(found)
    rec["method"] = "plane" if plane is not None else "visibility"
    if plane is None:
        log.warning(
            "no support plane (%s): %s; the mesh stage culls what no camera observes instead",
            found.get("reason"),
            found.get("message"),
        )
    else:
        log.info("support plane: %s", found["message"])
    return plane, rec, extra


def _touches_cube(coarse: np.ndarray, hull_cut: bool) -> bool:
    """Whether the coarse hull reaches the normalised cube's boundary (warned about)."""
    lo, hi = -np.ones(3), np.ones(3)
    c_lo, c_hi = occupied_box(coarse, lo, hi)
    touches = bool((c_lo <= lo + 1e-6).any() or (c_hi >= hi - 1e-6).any())
    if touches:
        log.warning(
            "the hull touches the normalised cube's boundary: the object may extend beyond the unit sphere%s",
            "" if hull_cut else " (or it is the cone under an object no camera sees from below)",
        )
    return touches


def _carve_above(
    dataset_dir: Path, carve_box: Callable, coarse: np.ndarray, plane, margin: float, resolution: int, support_rec: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fine hull again over the box of the cut coarse hull, cut at the plane: (box min, max, grid, votes)."""
    from .geometry.halfspace import cut_occupancy

    f_lo, f_hi = box_around(coarse, -np.ones(3), np.ones(3))
    occ, votes = carve_box(f_lo, f_hi, resolution)
    before = int(occ.sum())
    occ = cut_occupancy(occ, f_lo, f_hi, plane, margin)
    support_rec["hull_voxels_removed"] = before - int(occ.sum())
    if not occ.any():  # pragma: no cover - the silhouette check keeps the object
        raise StageError(f"{dataset_dir}: the visual hull is empty above the support plane")
    return f_lo, f_hi, occ, votes


def carve_visual_hull(
    dataset_dir: Path,
    bbox_path: Path,
    hull_path: Path,
    *,
    resolution: int = 128,
    max_background_votes: int = 1,
    support: str = "cut",
    sparse_dir: Path | None = None,
) -> dict:
    """Carve the hull in the normalised frame; write bbox.json (normalised and world) and hull.npz.

    ``support``: "cut" finds the support plane (in the SfM points of ``sparse_dir``, or in points
    triangulated with the dataset's cameras) and bounds the hull by it; "record" finds and records it
    only; "off" does neither. Where no plane is found, or the plane would cut the object's silhouettes,
    bbox.json says so and the mesh stage culls what no camera observes instead.
    """
    from .geometry.halfspace import cut_occupancy

    if support not in SUPPORT_MODES:
        raise StageError(f"unknown support mode {support!r}; choose one of {', '.join(SUPPORT_MODES)}")
    dataset_dir = Path(dataset_dir)
    stems = sorted(p.stem for p in (dataset_dir / "image").glob("*.png"))
    if not stems:
        raise StageError(f"{dataset_dir / 'image'}: no images; run the dataset stage first")
    world_mats, scale_mat = read_cameras_sphere(dataset_dir / "cameras_sphere.npz", n_views=len(stems))
    if not any((dataset_dir / "mask").glob("*.png")):
        return _box_without_masks(dataset_dir, bbox_path, hull_path, scale_mat, len(stems))
    masks = read_masks(dataset_dir / "mask", stems)
    P = np.stack([(wm @ scale_mat)[:3, :4] for wm in world_mats])
    # a voxel must be seen by a quarter of the views: voxels at the edge of a few frusta are barely constrained
    carve_box = partial(carve, P, masks, max_background_votes=max_background_votes, min_views=max(3, len(stems) // 4))
    coarse, f_lo, f_hi, occ, votes = _carve_hull(dataset_dir, carve_box, resolution)
    plane, support_rec, extra = _search_support(
        support, dataset_dir, stems, world_mats, scale_mat, P, masks, occ, f_lo, f_hi, sparse_dir, max_background_votes
    )
    hull_cut = plane is not None and support == "cut"
    support_rec["hull_cut"] = hull_cut
    if hull_cut:
        margin = support_rec["margin"]["normalized"]
        coarse = cut_occupancy(coarse, -np.ones(3), np.ones(3), plane, margin)
    touches = _touches_cube(coarse, hull_cut)
    if hull_cut:
        f_lo, f_hi, occ, votes = _carve_above(dataset_dir, carve_box, coarse, plane, margin, resolution, support_rec)
    o_lo, o_hi = occupied_box(occ, f_lo, f_hi)
    r, c = scale_mat[0, 0], scale_mat[:3, 3]
    bbox = {
        "normalized": {"min": o_lo.tolist(), "max": o_hi.tolist()},
        "world": {"min": (o_lo * r + c).tolist(), "max": (o_hi * r + c).tolist()},
        "hull_box": {"min": f_lo.tolist(), "max": f_hi.tolist()},
        "resolution": resolution,
        "occupied_voxels": int(occ.sum()),
        "views": len(stems),
        "max_background_votes": max_background_votes,
        "touches_unit_cube": touches,
        "support": support_rec,
    }
    write_bbox(bbox_path, bbox)
    # support_points (world) and support_inliers in extra, where a plane was searched
    write_hull(hull_path, occ, f_lo, f_hi, scale_mat, background_votes=votes.astype(np.uint8), **extra)
    log.info(
        "visual hull: %d occupied voxels of %d^3, object box %s .. %s (normalised)",
        occ.sum(),
        resolution,
        np.round(o_lo, 3),
        np.round(o_hi, 3),
    )
    return bbox
