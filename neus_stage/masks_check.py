"""The masks stage's multi-view check and repair: each view's mask against the voting visual hull of all views
(:mod:`neus_stage.geometry.mask_hull`), outliers, and masks made consistent with the other views.

- outliers are views whose mask has an IoU below ``OUTLIER_IOU`` with a loosely voted hull (a part that a
  few views miss survives a loose vote; it would not survive the strict one, and then all views would
  disagree with the hull). The strict hull is then voted without them.
- :func:`repair`: a view keeps its own fine boundary, restricted to the slightly dilated loose hull (drops
  background blobs the other views reject); an outlier also gets back the parts it lost, from the strict hull.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import StageError
from .geometry.cameras import CameraSet
from .geometry.mask_hull import (
    HULL_BACKGROUND_SHARE,
    HULL_OUTLIER_SHARE,
    footprint_px,
    hull_occupancy,
    hull_surface,
    hull_votes,
    iou,
    object_region,
    project_surface,
    well_seen,
)
from .geometry.silhouette import dilate_cross
from .threads import map_views

log = logging.getLogger(__name__)

# a mask with less than this share of foreground is "all background", above 1 - this "all foreground"
DEGENERATE_SHARE = 0.005
# a view whose mask has an IoU below this with the projected hull is an outlier
OUTLIER_IOU = 0.8
# ... or, where the hull itself is loose (a narrow arc of views, a frame-filling object: every view's IoU is
# lower alike), below this share of the median IoU; masks pass with a median IoU of at least MIN_MEDIAN_IOU
RELATIVE_OUTLIER = 0.85
MIN_MEDIAN_IOU = 0.75
# stop when more than this share of views is degenerate or an outlier
MAX_BAD_SHARE = 0.5
# the SfM points a model needs to seed masks or find the support plane
MIN_POINTS = 30


@dataclass
class MaskViews:
    """The cameras of the masked views (in the images' order) and, with SfM cameras, the SfM model ``rec``
    (a pycolmap.Reconstruction: its points seed the object region) and its image id of each view by name;
    ``rec`` is None for reference cameras."""

    cams: CameraSet
    rec: object | None = None
    image_ids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cams: CameraSet, rec=None) -> MaskViews:
        """The views of ``cams`` with the SfM model ``rec`` (or none), image ids matched by stem."""
        ids = (
            {}
            if rec is None
            else {Path(im.name).stem: im.image_id for im in rec.images.values() if Path(im.name).stem in cams.names}
        )
        return cls(cams, rec, ids)

    @property
    def names(self) -> list[str]:
        return self.cams.names

    @property
    def has_points(self) -> bool:
        """Whether there is an SfM model with enough points to seed masks."""
        return self.rec is not None and self.rec.num_points3D() >= MIN_POINTS

    @functools.cached_property
    def points(self) -> np.ndarray:
        """The SfM points (K,3); none without a model."""
        if self.rec is None:
            return np.zeros((0, 3))
        return np.array([p.xyz for p in self.rec.points3D.values()]).reshape(-1, 3)

    @functools.cached_property
    def _name_of_image(self) -> dict[int, str]:
        return {iid: s for s, iid in self.image_ids.items()}

    def observations(self, point) -> Iterator[tuple[str, np.ndarray]]:
        """(view name, pixel position (x, y)) of each observation of an SfM point (a pycolmap Point3D) in the
        masked views. SfM observations keep COLMAP's convention: pixel (col, row) covers [col, col + 1)."""
        for el in point.track.elements:
            s = self._name_of_image.get(el.image_id)
            if s is not None:
                yield s, self.rec.image(el.image_id).point2D(el.point2D_idx).xy


def degenerate(masks: dict[str, np.ndarray]) -> tuple[dict[str, float], list[str], list[str]]:
    """Foreground share by view, and the views whose masks are empty and those that are full."""
    shares = {s: float(m.mean()) for s, m in masks.items()}
    empty = [s for s, v in shares.items() if v < DEGENERATE_SHARE]
    full = [s for s, v in shares.items() if v > 1 - DEGENERATE_SHARE]
    return shares, empty, full


def outlier_threshold(ious: dict[str, float]) -> float:
    """IoU with the hull below which a view is an outlier: OUTLIER_IOU, or RELATIVE_OUTLIER x the median where
    every view's IoU is lower (a loose hull, not wrong masks)."""
    return min(OUTLIER_IOU, RELATIVE_OUTLIER * float(np.median(list(ious.values()))))


@dataclass
class Consistency:
    """Masks against the loose voting hull of all views: per-view IoU, outliers, and whether they pass."""

    lo: np.ndarray
    hi: np.ndarray
    region_info: dict
    voters: list[str]
    ious: dict[str, float]
    outliers: list[str]
    occupied: bool
    votes: tuple | None = None  # (seen, background, X, voxel) of the voters, for the repair
    allowed: np.ndarray | None = None  # voxels the hull may hold (above the support plane), or None: all

    @property
    def median_iou(self) -> float:
        return float(np.median(list(self.ious.values())))

    @property
    def passed(self) -> bool:
        return (
            self.occupied and self.median_iou >= MIN_MEDIAN_IOU and len(self.outliers) <= MAX_BAD_SHARE * len(self.ious)
        )

    def failure(self) -> str:
        if not self.occupied:
            return (
                "the masks disagree across views: their visual hull is empty (no region is foreground in the "
                "views that see it)"
            )
        return (
            f"the masks disagree across views: {len(self.outliers)} of {len(self.ious)} views have an IoU below "
            f"{outlier_threshold(self.ious):.2f} with the visual hull of all views (median {self.median_iou:.2f}, "
            f"at least {MIN_MEDIAN_IOU} needed)"
        )

    def summary(self) -> dict:
        return {
            "median_iou": round(self.median_iou, 4),
            "min_iou": round(min(self.ious.values()), 4),
            "outliers": len(self.outliers),
            "passed": self.passed,
        }

    def unadjusted(self, with_box: bool = False) -> dict:
        """The report of masks taken as they are (not repaired); ``with_box`` adds the region's corners."""
        out = {
            "n_views": len(self.ious),
            "iou_with_hull": {s: round(v, 4) for s, v in self.ious.items()},
            "median_iou": self.median_iou,
            "min_iou": float(min(self.ious.values())),
            "outliers": self.outliers,
            "adjusted": False,
            "region": self.region_info,
        }
        if with_box:
            out.update({"region_lo": self.lo.tolist(), "region_hi": self.hi.tolist()})
        return out


def _hull_ious(
    cams: CameraSet, masks: dict[str, np.ndarray], occ: np.ndarray, X: np.ndarray, voxel: float
) -> dict[str, float]:
    P = hull_surface(occ, X)

    def one(s: str) -> float:
        return iou(masks[s], project_surface(cams, s, P, voxel, masks[s].shape))

    names = list(cams.names)
    return dict(zip(names, map_views(one, names)))


def check_consistency(
    views: MaskViews,
    masks: dict[str, np.ndarray],
    degenerate: list[str],
    region: tuple[np.ndarray, np.ndarray] | None = None,
) -> Consistency:
    """Each view's mask against the loose voting hull of all (non-degenerate) views, carved in ``region`` or
    in the box the silhouettes themselves bound (:func:`~neus_stage.geometry.mask_hull.object_region`).

    Outliers are found against a loose hull: a part that a few views miss (the rembg masks of the ``parts``
    scene: three views of 36 with SfM cameras) is carved away by a strict vote, and then every view would
    disagree with the hull."""
    cams = views.cams
    if len(cams) < 3:
        raise StageError("fewer than 3 of the masked images have a camera; check --images/--sfm")
    voters = [s for s in cams.names if s not in degenerate]
    if region is None:
        lo, hi, region_info = object_region(cams, masks, voters, views.points)
    else:
        (lo, hi), region_info = region, {"centre_from": "reference cameras' sphere"}
    seen, background, X, voxel = hull_votes(cams, masks, lo, hi, voters=voters)
    loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(voters))
    ious = _hull_ious(cams, masks, loose, X, voxel)
    above = _above_support(views, X, loose.shape, lo, hi)
    if above is not None:
        # No camera sees under an object on a table, so the hull continues below it as a cone, which low views
        # see beside the object (they call it background, rightly): cut at the support plane, where that
        # explains the masks at least as well (a plane through the object would make them agree less)
        cut = loose & above
        ious_cut = _hull_ious(cams, masks, cut, X, voxel)
        use = bool(cut.any() and np.median(list(ious_cut.values())) >= np.median(list(ious.values())) - 0.005)
        region_info = {**region_info, "support_cut": use}
        if use:
            ious, loose = ious_cut, cut
        else:
            above = None
    limit = outlier_threshold(ious)
    outliers = sorted(s for s, v in ious.items() if v < limit)
    return Consistency(
        lo, hi, region_info, voters, ious, outliers, bool(loose.any()), (seen, background, X, voxel), above
    )


def _above_support(
    views: MaskViews, X: np.ndarray, shape: tuple[int, int, int], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray | None:
    """Voxels (grid ``shape`` of centres ``X``) above the support plane of the SfM points, less a margin that
    keeps a thin base plate (3% of the box's height along the plane's normal, at least two point tolerances);
    None without SfM points or a plane."""
    if not views.has_points:
        return None
    from .geometry.support import fit_support_plane

    plane = fit_support_plane(views.points, views.cams.centers, -views.cams.R[:, 1])
    if plane is None:
        return None
    extent = float(np.abs(np.asarray(hi) - np.asarray(lo)) @ np.abs(plane.normal))
    margin = max(2.0 * plane.tolerance, 0.03 * extent)
    return (plane.height(X) > -margin).reshape(shape)


def agrees_with_points(masks: dict[str, np.ndarray], views: MaskViews, trust: float) -> bool:
    """Whether masks agree on the observations of the SfM points: the share of points seen in >= 2 views
    whose observations the masks agree on (all inside or all outside) is at least ``trust``. Masks that cut
    an object in two (rembg on a frame-filling scene) split many points' observations between inside and
    outside."""
    agree = total = 0
    for p in views.rec.points3D.values():
        votes = []
        for s, (x, y) in views.observations(p):
            m = masks[s]
            c, r = int(x), int(y)
            if 0 <= r < m.shape[0] and 0 <= c < m.shape[1]:
                votes.append(bool(m[r, c]))
        if len(votes) >= 2:
            total += 1
            agree += all(votes) or not any(votes)
    return total == 0 or agree / total >= trust


def restore_missing_parts(
    own: np.ndarray, hull: np.ndarray, footprint: int, evidence: np.ndarray | None = None
) -> np.ndarray:
    """The parts of a view's silhouette its mask lost: where the projected hull of the other views, eroded by
    three voxel footprints, holds a region the mask lacks (at least 1% of the hull's area), grown back within the
    hull. A loose hull projects a little wider than the object all round (a narrow arc of views, a one-sided
    capture); that band is thinner than the erosion and is never added to a mask that is right.

    With ``evidence`` (pixel positions (K,2) of this view's observations of SfM points inside the hull, COLMAP's
    convention), a region is restored only where the view itself saw the object there (at least 3 such points):
    a hull can be fat by more than the erosion near an object's base seen from one side (DTU scan 65's lowest
    views), and there the view saw the table, not the object."""
    k = 3 * max(1, footprint)
    core = ndimage.binary_erosion(hull, iterations=k)
    missing = core & ~own
    labels, n = ndimage.label(missing)
    if n == 0:
        return np.zeros_like(own)
    sizes = ndimage.sum(missing, labels, np.arange(1, n + 1))
    ok = sizes >= max(0.01 * hull.sum(), k * k)
    if evidence is not None:
        c = np.clip(np.floor(evidence[:, 0]).astype(int), 0, own.shape[1] - 1)
        r = np.clip(np.floor(evidence[:, 1]).astype(int), 0, own.shape[0] - 1)
        hits = np.bincount(labels[r, c], minlength=n + 1)[1:]
        ok &= hits >= 3
    seeds = np.isin(labels, 1 + np.flatnonzero(ok))
    return ndimage.binary_dilation(seeds, iterations=k, mask=hull) if seeds.any() else seeds


def _observations_in(views: MaskViews, occ: np.ndarray, lo: np.ndarray, voxel: float) -> dict[str, np.ndarray]:
    """Per view, the pixel positions of its observations of the SfM points that lie in the occupied voxels."""
    out: dict[str, list] = {s: [] for s in views.names}
    for p in views.rec.points3D.values():
        idx = np.floor((p.xyz - lo) / voxel).astype(int)
        if np.any(idx < 0) or np.any(idx >= occ.shape) or not occ[tuple(idx)]:
            continue
        for s, xy in views.observations(p):
            out[s].append(xy)
    return {s: np.array(v).reshape(-1, 2) for s, v in out.items()}


def _repair_hulls(
    views: MaskViews, masks: dict[str, np.ndarray], check: Consistency
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The loose hull of all voters and the strict hull of the consistent ones (cut at the support where the
    check cut), their voxel centres and size."""
    lo, hi = check.lo, check.hi
    seen, background, X, voxel = check.votes or hull_votes(views.cams, masks, lo, hi, voters=check.voters)
    loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(check.voters))
    if check.outliers:
        consistent = [s for s in check.voters if s not in check.outliers]
        seen, background, X, voxel = hull_votes(views.cams, masks, lo, hi, voters=consistent)
    strict = hull_occupancy(seen, background, min_views=well_seen(check.voters))
    if check.allowed is not None:
        loose, strict = loose & check.allowed, strict & check.allowed
    return loose, strict, X, voxel


def repair(views: MaskViews, masks: dict[str, np.ndarray], check: Consistency) -> tuple[dict[str, np.ndarray], dict]:
    """Masks made consistent with the other views, and the report of the check.

    Every view keeps its own fine boundary, restricted to the loose hull dilated by 2 voxels: blobs that the
    other views see through (a shadow, a patch of floor) are cut off, while a thin part that a few views
    missed (a spout) stays, as it does in the loose hull. An outlier also gets back the parts it lost (a
    whole part of the object, half of it): :func:`restore_missing_parts` against the strict hull of the
    consistent views."""
    cams, lo, hi = views.cams, check.lo, check.hi
    outliers = set(check.outliers)
    if outliers:
        log.warning(
            "masks inconsistent with the other views, redrawn from the projected hull: %s", ", ".join(sorted(outliers))
        )
    loose, strict, X, voxel = _repair_hulls(views, masks, check)
    evidence = _observations_in(views, strict, lo, voxel) if outliers and views.rec is not None else None
    final = dict(masks)
    centre = 0.5 * (lo + hi)
    loose_surface, strict_surface = hull_surface(loose, X), hull_surface(strict, X)

    def repaired(s: str) -> np.ndarray:
        d = footprint_px(cams, s, voxel, centre)
        own = masks[s] & dilate_cross(project_surface(cams, s, loose_surface, voxel, masks[s].shape), 2 * d)
        if s in outliers:
            own |= restore_missing_parts(
                masks[s],
                project_surface(cams, s, strict_surface, voxel, masks[s].shape),
                d,
                None if evidence is None else evidence.get(s, np.zeros((0, 2))),
            )
        return own

    final.update(zip(cams.names, map_views(repaired, list(cams.names), "repairing masks")))
    consistency = {
        "n_views": len(cams),
        "hull_resolution": list(strict.shape),
        "voxel_size": voxel,
        "region_lo": lo.tolist(),
        "region_hi": hi.tolist(),
        "region": check.region_info,
        "occupied_voxels": int(strict.sum()),
        "background_share": {"outliers": HULL_OUTLIER_SHARE, "repair": HULL_BACKGROUND_SHARE},
        "iou_with_hull": {s: round(v, 4) for s, v in check.ious.items()},
        "median_iou": check.median_iou,
        "min_iou": float(min(check.ious.values())),
        "outliers": sorted(outliers),
        "adjusted": True,
    }
    return final, consistency
