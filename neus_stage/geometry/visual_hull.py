"""The visual hull in NeuS's convention: voxel grids carved from masks and cameras, tolerant of a few wrong masks.

A voxel is empty only when more than ``max_background_votes`` of the views that see it call it background
(:func:`neus_stage.geometry.carving.vote`); masks are dilated by half a voxel's projected size, so thin parts
survive the carving. Voxels project to NeuS pixel centres (:func:`neus_stage.geometry.cameras.project`,
rounded by :func:`~neus_stage.geometry.cameras.pixel_index`).
"""

from __future__ import annotations

import numpy as np
import torch

from .cameras import pixel_index, project
from .carving import View, vote
from .halfspace import voxel_centers
from .silhouette import dilate_square


def mask_view(P: np.ndarray, mask: np.ndarray, voxel: float, center: np.ndarray) -> View:
    """One view of the carver: NeuS pixel centres (rounded projections of ``P``, which maps the box's frame to
    pixels), the mask dilated by half a voxel's projected size (focal length * voxel / depth of the box centre
    ``center``, homogeneous (4,)), so that a voxel the silhouette grazes stays."""
    h, w = mask.shape
    focal = float(np.linalg.norm(P[0, :3]) / np.linalg.norm(P[2, :3]))
    depth = float(P[2] @ center / np.linalg.norm(P[2, :3]))
    r = min(int(np.ceil(0.5 * focal * voxel / max(depth, 1e-9))), max(h, w) // 8)
    Pt = torch.from_numpy(P).float()
    flat = torch.from_numpy(dilate_square(mask, r)).flatten()

    def look(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv, z = project(Pt, torch.from_numpy(points))
        col, row, inside = pixel_index(uv, w, h)
        inside &= z > 0
        fg = flat[(row.clamp(0, h - 1) * w + col.clamp(0, w - 1))] & inside
        return inside.numpy(), fg.numpy()

    return look


def carve(
    projections: np.ndarray,
    masks: np.ndarray,
    box_min: np.ndarray,
    box_max: np.ndarray,
    res: int,
    max_background_votes: int = 1,
    min_views: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy (res,res,res) and per-voxel background votes (counted until a voxel is carved away).

    projections: (N,3,4) mapping the box's frame to pixels; masks: (N,H,W) bool. A voxel is occupied when no
    more than ``max_background_votes`` views call it background and at least ``min_views`` (or every view, if
    fewer) see it.
    """
    pts = voxel_centers(box_min, box_max, (res, res, res)).reshape(-1, 3).astype(np.float32)
    voxel = float(np.linalg.norm((box_max - box_min) / res))
    center = np.append((box_min + box_max) / 2, 1.0)
    views = (mask_view(projections[i], masks[i], voxel, center) for i in range(len(masks)))
    seen, background = vote(pts, views, max_background_votes)
    occ = (background <= max_background_votes) & (seen >= min(min_views, len(masks)))
    return occ.reshape(res, res, res), background.reshape(res, res, res)


def occupied_box(occ: np.ndarray, box_min: np.ndarray, box_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box (min, max) of the occupied voxels of ``occ`` (a grid over [box_min, box_max])."""
    idx = np.argwhere(occ)
    size = (box_max - box_min) / np.array(occ.shape)
    return box_min + idx.min(0) * size, box_min + (idx.max(0) + 1) * size


def box_around(occ: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The occupied box of ``occ`` (a grid over [lo, hi]) padded by two voxels, within the unit cube."""
    c_lo, c_hi = occupied_box(occ, lo, hi)
    pad = 2 * (hi - lo) / np.array(occ.shape)
    return np.maximum(c_lo - pad, -1.0), np.minimum(c_hi + pad, 1.0)


__all__ = ["box_around", "carve", "mask_view", "occupied_box"]
