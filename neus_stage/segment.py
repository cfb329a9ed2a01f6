"""Masks from what SfM already knows, for scenes where single-image saliency (rembg) fails.

The cameras of an object capture converge on the object; the SfM points near that region belong to it,
the points of a dominant support plane under it (a table or floor that extends well beyond the object)
and the points far from it do not. Each view's observations of those points are seeds: a per-view
segmentation on colour (OpenCV's GrabCut) grows the object from its seeds, and a voting visual hull of all
views' masks, projected back into each view, keeps the views consistent over a few rounds (hull <-> masks).

Point labels (``classify_points``):

- ``centrality``: the share of registered views whose image a point projects into. The object sits where
  the views overlap; the periphery of a floor or a room is in few views.
- the support plane (:func:`neus_stage.geometry.support.fit_support_plane`) counts as background only when
  it reaches well beyond the points that stand on it (a table or floor: its central inliers spread wider
  than ``FLOOR_SPREAD`` x the object points); a plane about as large as what stands on it is the object's
  own base (a model town's base plate, DTU scan 24) and stays object.
- object: above the support (where there is one), central (in at least half the views), and nearer the
  convergence point than the cameras are; background: on or below a floor, peripheral (in less than a
  quarter of the views) or beyond the cameras' distance; the rest is left to the colour model.

Measured on rendered scenes and DTU (tests/test_segment.py, README "Masks").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .geometry.cameras import CameraSet, pixel_index
from .threads import map_views

if TYPE_CHECKING:
    from .masks_check import MaskViews

log = logging.getLogger(__name__)

FLOOR_SPREAD = 1.6
"""A support plane is a floor (background) when its central inliers spread this much wider than the object."""
WORK_SIZE = 480
"""Long side (px) of the images GrabCut works on; its mask is upsampled and snapped back to full size."""


@dataclass
class PointLabels:
    """Per SfM point (ordered as ``ids``): +1 object, -1 background, 0 unknown, with how they were found."""

    ids: np.ndarray
    xyz: np.ndarray
    label: np.ndarray
    centrality: np.ndarray
    info: dict


def point_centrality(cams: CameraSet, xyz: np.ndarray, sizes: dict[str, tuple[int, int]]) -> np.ndarray:
    """Share of the views whose image (of ``sizes[name]``) each point (N,3) projects into, in front of the camera."""
    count = np.zeros(len(xyz))
    for i, s in enumerate(cams.names):
        uv, z = cams.project(i, xyz)
        count += pixel_index(uv, *sizes[s])[2] & (z > 0)
    return count / max(len(cams), 1)


def _spread(points: np.ndarray, normal: np.ndarray) -> float:
    """In-plane size of a point set: the 90th percentile of the distances to its median, across ``normal``."""
    if len(points) < 5:
        return 0.0
    d = points - np.median(points, axis=0)
    d = d - np.outer(d @ normal, normal)
    return float(np.percentile(np.linalg.norm(d, axis=1), 90))


def classify_points(cams: CameraSet, rec, sizes: dict[str, tuple[int, int]], centre: np.ndarray) -> PointLabels:
    """Object / background / unknown labels of the SfM points of the model ``rec`` (a pycolmap.Reconstruction)
    seen by the views ``cams`` (see the module notes)."""
    from .geometry.support import fit_support_plane

    ids = np.array(sorted(rec.points3D), dtype=np.int64)
    xyz = np.array([rec.points3D[i].xyz for i in ids]).reshape(-1, 3)
    label = np.zeros(len(ids), dtype=np.int8)
    centres = cams.centers
    reach = float(np.median(np.linalg.norm(centres - centre, axis=1)))
    central = point_centrality(cams, xyz, sizes)
    dist = np.linalg.norm(xyz - centre, axis=1)
    ups = -cams.R[:, 1]  # minus the camera y axis: the image's up
    plane = fit_support_plane(xyz, centres, ups) if len(xyz) >= 30 else None
    info: dict = {"points": len(ids), "reach": reach, "support": None}
    above = np.ones(len(ids), dtype=bool)
    on_floor = np.zeros(len(ids), dtype=bool)
    if plane is not None:
        h = plane.height(xyz)
        band = 2.0 * plane.tolerance
        inliers = np.abs(h) <= band
        core = central >= 0.5
        standing = core & (h > band) & (dist < reach)
        plane_spread = _spread(xyz[inliers & core], plane.normal)
        object_spread = _spread(xyz[standing], plane.normal)
        floor = plane_spread > FLOOR_SPREAD * max(object_spread, 1e-12) or standing.sum() < 10
        info["support"] = {
            "plane": plane.to_json(),
            "kind": "floor (background)" if floor else "the object's base (object)",
            "plane_spread": plane_spread,
            "object_spread": object_spread,
        }
        if floor:
            on_floor = h <= band
            above = h > band
    obj = above & (central >= 0.5) & (dist < reach)
    bg = on_floor | (central < 0.25) | (dist > reach)
    label[obj] = 1
    label[bg & ~obj] = -1
    info.update({"object_points": int((label == 1).sum()), "background_points": int((label == -1).sum())})
    log.info(
        "SfM points: %d object, %d background, %d unknown (support plane: %s)",
        info["object_points"],
        info["background_points"],
        int((label == 0).sum()),
        "none" if info["support"] is None else info["support"]["kind"],
    )
    return PointLabels(ids, xyz, label, central, info)


def view_seeds(views: MaskViews, labels: PointLabels) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per view, the pixel positions (K,2) (x, y; COLMAP convention, as SfM observations are) of its
    observations of object and of background points: (fg, bg)."""
    fg: dict[str, list] = {s: [] for s in views.names}
    bg: dict[str, list] = {s: [] for s in views.names}
    for pid, lab in zip(labels.ids, labels.label):
        if lab == 0:
            continue
        for s, xy in views.observations(views.rec.points3D[int(pid)]):
            (fg if lab > 0 else bg)[s].append(xy)
    return {s: (np.array(fg[s]).reshape(-1, 2), np.array(bg[s]).reshape(-1, 2)) for s in views.names}


def _disk_mask(shape: tuple[int, int], xy: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of any of the points ``xy`` (K,2)."""
    out = np.zeros(shape, dtype=bool)
    if len(xy) == 0:
        return out
    c = np.clip(np.floor(xy[:, 0]).astype(int), 0, shape[1] - 1)
    r = np.clip(np.floor(xy[:, 1]).astype(int), 0, shape[0] - 1)
    out[r, c] = True
    if radius >= 1:
        out = ndimage.distance_transform_edt(~out) <= radius
    return out


def seed_radius(xy: np.ndarray, shape: tuple[int, int]) -> float:
    """How far a seed speaks for its neighbourhood: twice the median distance to the nearest other seed,
    between 2 px and 6% of the image."""
    if len(xy) < 2:
        return 0.06 * max(shape)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.clip(2.0 * np.median(d[:, 1]), 2.0, 0.06 * max(shape)))


@dataclass(frozen=True)
class WorkImage:
    """A view's image at GrabCut's working size (``small``, long side at most ``WORK_SIZE``), the factor
    ``scale`` it was reduced by and the full image's ``shape`` (H, W) that the masks come back at."""

    small: np.ndarray
    scale: float
    shape: tuple[int, int]

    @classmethod
    def of(cls, image: np.ndarray, work_size: int = WORK_SIZE) -> WorkImage:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, work_size / max(h, w))
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if s < 1 else image
        return cls(np.ascontiguousarray(small), s, (h, w))


def grabcut(
    image: np.ndarray | WorkImage,
    fg: np.ndarray,
    bg: np.ndarray,
    prior: np.ndarray | None,
    *,
    iterations: int = 3,
) -> np.ndarray:
    """One view's mask from seeds and a prior: GrabCut (OpenCV) on colour at a working size.

    ``image`` is the full image or its :class:`WorkImage`; ``fg``/``bg`` (K,2) are pixel positions (full
    size) of object and background seeds (definite labels); ``prior`` (H,W) bool marks the probable object (a
    projected hull, or rembg's mask), else the seeds' own neighbourhood (disks as large as the seeds' spacing,
    closed) is the probable object. GrabCut's colour models start from k-means with OpenCV's random
    generator, seeded here for each view, so a view's mask does not depend on which views (or thread) ran
    before it."""
    import cv2

    work = image if isinstance(image, WorkImage) else WorkImage.of(image)
    s, (h, w), small = work.scale, work.shape, work.small
    sh = small.shape[:2]
    fg_s, bg_s = fg * s, bg * s
    if prior is not None:
        probable = cv2.resize(prior.astype(np.uint8), (sh[1], sh[0]), interpolation=cv2.INTER_NEAREST) > 0
    else:
        rad = seed_radius(fg_s, sh)
        probable = ndimage.binary_closing(_disk_mask(sh, fg_s, rad), iterations=max(1, int(rad)))
    labels = np.where(probable, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[_disk_mask(sh, bg_s, 1.0)] = cv2.GC_BGD
    labels[_disk_mask(sh, fg_s, 1.0)] = cv2.GC_FGD
    background = (labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)
    foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if background.mean() < 0.005 or foreground.mean() < 0.005:  # GrabCut needs both colour models
        out_small = foreground
    else:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # the calling thread's generator
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        out_small = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if s < 1:
        up = cv2.resize(out_small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return up >= 0.5
    return out_small


def seed_agreement(masks: dict[str, np.ndarray], seeds: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """How well masks agree with the point labels: the share of object-seed pixels inside the masks (recall)
    and of background-seed pixels outside them, over all views."""
    hit = n_fg = rej = n_bg = 0
    for s, m in masks.items():
        fg, bg = seeds.get(s, (np.zeros((0, 2)), np.zeros((0, 2))))
        for xy, inside_counts in ((fg, True), (bg, False)):
            if len(xy) == 0:
                continue
            c = np.clip(np.floor(xy[:, 0]).astype(int), 0, m.shape[1] - 1)
            r = np.clip(np.floor(xy[:, 1]).astype(int), 0, m.shape[0] - 1)
            v = m[r, c]
            if inside_counts:
                hit, n_fg = hit + int(v.sum()), n_fg + len(v)
            else:
                rej, n_bg = rej + int((~v).sum()), n_bg + len(v)
    return {
        "object_seeds_inside": hit / n_fg if n_fg else None,
        "background_seeds_outside": rej / n_bg if n_bg else None,
        "object_seeds": n_fg,
        "background_seeds": n_bg,
    }


def work_images(images: dict[str, Path], desc: str = "reading views") -> dict[str, WorkImage]:
    """Each view's image at GrabCut's working size, read once (about 0.5 MB a view, whatever the photos'
    size): the rounds of :func:`segment_views` reuse them instead of decoding every image again."""
    from .photos import read_photo

    def one(path: Path) -> WorkImage:
        return WorkImage.of(read_photo(path))

    return dict(zip(images, map_views(one, list(images.values()), desc)))


def segment_views(
    images: dict[str, Path | np.ndarray | WorkImage],
    seeds: dict[str, tuple[np.ndarray, np.ndarray]],
    priors: dict[str, np.ndarray] | None = None,
    desc: str = "geometry masks",
) -> dict[str, np.ndarray]:
    """GrabCut every view from its seeds (and prior, where given), several views at a time (threads); paths
    are read one view at a time (pass :func:`work_images` to read them once for several rounds)."""
    from .photos import read_photo

    empty = (np.zeros((0, 2)), np.zeros((0, 2)))

    def one(s: str) -> np.ndarray:
        img = images[s]
        img = read_photo(img) if isinstance(img, Path) else img
        fg, bg = seeds.get(s, empty)
        prior = None if priors is None else priors.get(s)
        if prior is None and len(fg) == 0:
            return np.zeros(img.shape if isinstance(img, WorkImage) else img.shape[:2], dtype=bool)
        return grabcut(img, fg, bg, prior)

    return dict(zip(images, map_views(one, list(images), desc)))
