"""Visual hull: carve a voxel grid from masks and cameras, tolerant of a few wrong masks.

A voxel is empty only when more than ``max_background_votes`` of the views that see it call it
background; masks are dilated by a voxel's projected size, so thin parts survive the carving.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import atomic_write, write_text_atomic
from .cameras import load_cameras_sphere
from .errors import StageError

log = logging.getLogger(__name__)


def voxel_centers(box_min: np.ndarray, box_max: np.ndarray, res: int) -> np.ndarray:
    axes = [box_min[k] + (np.arange(res) + 0.5) * (box_max[k] - box_min[k]) / res for k in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


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

    projections: (N,3,4) mapping the box's frame to pixels; masks: (N,H,W) bool.
    """
    pts = torch.from_numpy(voxel_centers(box_min, box_max, res)).float()
    alive = torch.arange(len(pts))  # voxels not yet carved away; the others need no more views
    seen = torch.zeros(len(pts), dtype=torch.int32)
    background = torch.zeros(len(pts), dtype=torch.int32)
    voxel = float(np.linalg.norm((box_max - box_min) / res))
    center = np.append((box_min + box_max) / 2, 1.0)
    n, h, w = masks.shape
    for i in range(n):
        P = torch.from_numpy(projections[i]).float()
        uvw = pts @ P[:, :3].T + P[:, 3]
        z = uvw[:, 2]
        zc = z.clamp(min=1e-9)
        ui, vi = torch.round(uvw[:, 0] / zc).long(), torch.round(uvw[:, 1] / zc).long()
        inside = (z > 0) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        # dilate the mask by half a voxel's projected size (focal length * voxel / depth of the box centre)
        focal = float(np.linalg.norm(projections[i][0, :3]) / np.linalg.norm(projections[i][2, :3]))
        depth = float(projections[i][2] @ center / np.linalg.norm(projections[i][2, :3]))
        r = min(int(np.ceil(0.5 * focal * voxel / max(depth, 1e-9))), max(h, w) // 8)
        m = torch.from_numpy(masks[i]).float()[None, None]
        if r > 0:  # separable square dilation
            m = F.max_pool2d(m, (1, 2 * r + 1), stride=1, padding=(0, r))
            m = F.max_pool2d(m, (2 * r + 1, 1), stride=1, padding=(r, 0))
        flat = (m[0, 0] > 0).flatten()
        fg = flat[(vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1))] & inside
        seen[alive] += inside.int()
        background[alive] += (inside & ~fg).int()
        keep = background[alive] <= max_background_votes
        if not keep.all():
            alive, pts = alive[keep], pts[keep]
    occ = (background <= max_background_votes) & (seen >= min(min_views, n))
    return occ.view(res, res, res).numpy(), background.view(res, res, res).numpy()


def read_masks(folder: Path, stems: list[str]) -> np.ndarray:
    """Masks ``<stem>.png`` in the given order as (N,H,W) bool; names must match."""
    masks = []
    for s in stems:
        p = Path(folder) / f"{s}.png"
        if not p.is_file():
            raise StageError(f"{p}: mask missing for image '{s}'; every image needs a mask of the same name")
        masks.append(np.asarray(Image.open(p).convert("L")) > 127)
    return np.stack(masks)


def _occupied_box(occ: np.ndarray, box_min: np.ndarray, box_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(occ)
    size = (box_max - box_min) / np.array(occ.shape)
    return box_min + idx.min(0) * size, box_min + (idx.max(0) + 1) * size


def carve_visual_hull(
    dataset_dir: Path, bbox_path: Path, hull_path: Path, *, resolution: int = 128, max_background_votes: int = 1
) -> dict:
    """Carve the hull in the normalised frame; write bbox.json (normalised and world) and hull.npz."""
    dataset_dir = Path(dataset_dir)
    stems = sorted(p.stem for p in (dataset_dir / "image").glob("*.png"))
    if not stems:
        raise StageError(f"{dataset_dir / 'image'}: no images; run the dataset stage first")
    world_mats, scale_mat = load_cameras_sphere(dataset_dir / "cameras_sphere.npz", n_views=len(stems))
    masks = read_masks(dataset_dir / "mask", stems)
    P = np.stack([(wm @ scale_mat)[:3, :4] for wm in world_mats])
    # coarse pass over the whole normalised cube, then a fine pass over the occupied part
    lo, hi = -np.ones(3), np.ones(3)
    # a voxel must be seen by a quarter of the views: voxels at the edge of a few frusta are barely constrained
    min_views = max(3, len(stems) // 4)
    coarse, _ = carve(P, masks, lo, hi, 64, max_background_votes, min_views)
    if not coarse.any():
        raise StageError(
            f"{dataset_dir}: the visual hull is empty: no region is foreground in enough views. The masks "
            "and cameras disagree (wrong masks, masks of other photos, or wrong cameras)"
        )
    c_lo, c_hi = _occupied_box(coarse, lo, hi)
    touches = bool((c_lo <= lo + 1e-6).any() or (c_hi >= hi - 1e-6).any())
    if touches:
        log.warning("the hull touches the normalised cube's boundary: the object may extend beyond the unit sphere")
    pad = 2 * (hi - lo) / 64
    f_lo, f_hi = np.maximum(c_lo - pad, -1.0), np.minimum(c_hi + pad, 1.0)
    occ, votes = carve(P, masks, f_lo, f_hi, resolution, max_background_votes, min_views)
    if not occ.any():
        raise StageError(f"{dataset_dir}: the fine visual hull is empty; check the masks")
    o_lo, o_hi = _occupied_box(occ, f_lo, f_hi)
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
    }
    write_text_atomic(Path(bbox_path), json.dumps(bbox, indent=2))
    with atomic_write(Path(hull_path)) as fh:  # all or nothing: training and meshing read it
        np.savez_compressed(
            fh,
            occupancy=occ,
            background_votes=votes.astype(np.uint8),
            bounds_min=f_lo,
            bounds_max=f_hi,
            scale_mat=scale_mat,
        )
    log.info(
        "visual hull: %d occupied voxels of %d^3, object box %s .. %s (normalised)",
        occ.sum(),
        resolution,
        np.round(o_lo, 3),
        np.round(o_hi, 3),
    )
    return bbox
