"""The visual hull as a prior of the SDF: its signed-distance grid (scipy's exact distance transform where
scipy is installed, else the same in torch alone), and the trilinear sampling of dense grids with which the
SDF reads it and its per-cell share."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _squared_edt(mask: torch.Tensor, sampling: tuple[float, float, float], chunk: int = 1024) -> torch.Tensor:
    """Squared Euclidean distance from every True cell to the nearest False cell (0 on False cells), exact,
    as scipy.ndimage.distance_transform_edt: the nearest False cell along the first axis by two scans, then
    a 1-D min-plus transform along each other axis (Felzenszwalb and Huttenlocher's separable form), brute
    force over each line, which a 128^3 grid affords in a second or two."""
    n0 = mask.shape[0]
    pos = torch.arange(n0, dtype=torch.float32).view(-1, 1, 1).expand(mask.shape)
    inf = torch.tensor(float("inf"))
    left = torch.where(mask, -inf, pos).cummax(0).values
    right = torch.where(mask, inf, pos).flip(0).cummin(0).values.flip(0)
    d = (torch.minimum(pos - left, right - pos) * sampling[0]) ** 2
    for axis in (1, 2):
        moved = d.movedim(axis, -1)
        n = moved.shape[-1]
        idx = torch.arange(n, dtype=torch.float32)
        cost = ((idx[:, None] - idx[None, :]) * sampling[axis]) ** 2  # (i, j)
        lines = moved.reshape(-1, n)
        out = torch.cat([(part[:, None, :] + cost[None]).amin(-1) for part in lines.split(chunk)])
        d = out.view(moved.shape).movedim(-1, axis)
    return d


def _gaussian_smooth(grid: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of a 3-D grid (edges extended; scipy.ndimage.gaussian_filter reflects them)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=grid.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    for axis in range(3):
        moved = grid.movedim(axis, -1)
        shape = moved.shape
        lines = F.pad(moved.reshape(-1, 1, shape[-1]), (radius, radius), mode="replicate")
        grid = F.conv1d(lines, kernel).view(shape).movedim(-1, axis)
    return grid


def hull_prior_grid(occupancy: np.ndarray, voxel: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Signed distance (negative inside) of the visual hull's occupancy grid, lightly smoothed. scipy's
    distance transform where scipy is installed, else the same in torch (a GPU node's stock environment)."""
    occ = np.asarray(occupancy, dtype=bool)
    voxel = np.asarray(voxel, dtype=np.float64).reshape(3)
    try:
        from scipy import ndimage
    except ImportError:
        return hull_prior_grid_torch(occ, voxel, smooth)
    outside = ndimage.distance_transform_edt(~occ, sampling=voxel)
    inside = ndimage.distance_transform_edt(occ, sampling=voxel)
    sdf = np.where(occ, -inside + 0.5 * voxel.min(), outside - 0.5 * voxel.min())
    if smooth > 0:
        sdf = ndimage.gaussian_filter(sdf, smooth)
    return sdf.astype(np.float32)


def hull_prior_grid_torch(occupancy: np.ndarray, voxel: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """``hull_prior_grid`` with torch alone (equal up to float rounding, and within a voxel's width of the
    smoothing's edge handling at the box boundary)."""
    occ = torch.from_numpy(np.asarray(occupancy, dtype=bool))
    sampling = tuple(float(v) for v in np.asarray(voxel, dtype=np.float64).reshape(3))
    with torch.no_grad():
        outside = _squared_edt(~occ, sampling).sqrt()
        inside = _squared_edt(occ, sampling).sqrt()
        half = 0.5 * min(sampling)
        sdf = torch.where(occ, -inside + half, outside - half)
        if smooth > 0:
            sdf = _gaussian_smooth(sdf, smooth)
    return sdf.float().numpy()


def corner_offsets(shape: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """Flat-index offsets (8,) of a cell's corners in a C-ordered grid of ``shape``, corner (a, b, c) at
    position 4a + 2b + c (the order of ``trilinear_dense``'s weights)."""
    _, n1, n2 = shape
    return torch.tensor([(a * n1 + b) * n2 + c for a in (0, 1) for b in (0, 1) for c in (0, 1)], device=device)


def trilinear_dense(grid: torch.Tensor, u: torch.Tensor, corners: torch.Tensor | None = None) -> torch.Tensor:
    """Sample a dense scalar grid (R0,R1,R2) at u (N,3) in [0,1] (voxel-centred), double-differentiable.
    One gather of the 8 corners from the flat grid (``corners``: ``corner_offsets(grid.shape)``, kept on the
    device by the caller) and separable weights."""
    if corners is None:
        corners = corner_offsets(tuple(grid.shape), u.device)
    _, n1, n2 = grid.shape
    axes = [(u[:, k] * n - 0.5).clamp(0.0, n - 1.0001) for k, n in enumerate(grid.shape)]
    lo = [torch.floor(p) for p in axes]
    w = [torch.stack([1 - (p - p0), p - p0], -1) for p, p0 in zip(axes, lo)]  # (N,2) per axis
    i0, i1, i2 = (p0.long() for p0 in lo)
    vals = grid.reshape(-1)[((i0 * n1 + i1) * n2 + i2)[:, None] + corners]  # (N,8)
    weights = (w[0][:, :, None, None] * w[1][:, None, :, None] * w[2][:, None, None, :]).reshape(-1, 8)
    return (weights * vals).sum(-1)
