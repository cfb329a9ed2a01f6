"""The visual-hull stage: carve a voxel grid from masks and cameras; write bbox.json and hull.npz.

The carving is :mod:`neus_stage.geometry.visual_hull`: a voxel is empty only when more than
``max_background_votes`` of the views that see it call it background; masks are dilated by a voxel's
projected size, so thin parts survive the carving.

Under an object that stands on a surface no camera looks, so the hull continues below the base as a
cone. The stage finds the support plane (:mod:`neus_stage.hull_support`, with
:mod:`neus_stage.geometry.support`, in the SfM points or in points triangulated with reference cameras),
checks that cutting there takes nothing from any silhouette (lowering it below a base plate where needed),
and bounds the hull by it; training (its box and occupancy grid come from hull.npz) and the mesh stage
then stop there too. bbox.json records the plane, its inliers and how it was found, or why there is none.
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
from .geometry.support import SupportPlane
from .geometry.visual_hull import box_around, carve, occupied_box
from .hull_support import Silhouettes, find_cut_plane

log = logging.getLogger(__name__)


SUPPORT_MODES = ("cut", "record", "off")


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
    sil: Silhouettes,
    sparse_dir: Path | None,
    max_background_votes: int,
) -> tuple[SupportPlane | None, dict, dict]:
    """The support plane (None where there is none or the search is off), bbox.json's support record, and the
    points searched for hull.npz."""
    rec: dict = {"mode": mode}
    extra: dict[str, np.ndarray] = {}
    if mode == "off":
        rec.update(method="none", reason="off", message="support plane search switched off (support: off)")
        return None, rec, extra
    # as many views may dispute the cut as may dispute a hull voxel (max_background_votes)
    plane, found = find_cut_plane(
        dataset_dir, stems, world_mats, scale_mat, sil, sparse_dir, extra, dissenting_views=max_background_votes
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
    dataset_dir: Path,
    carve_box: Callable,
    coarse: np.ndarray,
    plane: SupportPlane,
    margin: float,
    resolution: int,
    support_rec: dict,
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
    sil = Silhouettes(P, masks, occ, f_lo, f_hi)
    plane, support_rec, extra = _search_support(
        support, dataset_dir, stems, world_mats, scale_mat, sil, sparse_dir, max_background_votes
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
