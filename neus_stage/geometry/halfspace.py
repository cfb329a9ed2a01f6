"""Bounding an object by its support plane: the half-space above the plane, applied to an occupancy grid,
a sampled SDF grid, or an SDF callable.

The kept side is ``height(x) >= -margin`` (``height`` of a :class:`~.support.SupportPlane`: positive on
the cameras' side). In SDF terms the half-space is ``-(height(x) + margin)`` (negative above the cut),
and the object bounded by it is ``max(sdf, -(height + margin))``: where the object reaches below the cut,
its surface becomes a flat cap at the cut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .support import SupportPlane

if TYPE_CHECKING:
    import torch


def voxel_centers(box_min: np.ndarray, box_max: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Centres (X,Y,Z,3) of the voxels of a grid of ``shape`` over [box_min, box_max]."""
    lo, hi = np.asarray(box_min, dtype=np.float64), np.asarray(box_max, dtype=np.float64)
    axes = [lo[k] + (np.arange(shape[k]) + 0.5) * (hi[k] - lo[k]) / shape[k] for k in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1)


def cut_occupancy(
    occ: np.ndarray, box_min: np.ndarray, box_max: np.ndarray, plane: SupportPlane, margin: float = 0.0
) -> np.ndarray:
    """``occ`` (bool (X,Y,Z) over the box) without the voxels that lie wholly below ``-margin``: a voxel
    that reaches above the cut stays, so the cut hull still covers everything above the plane."""
    occ = np.asarray(occ, dtype=bool)
    vox = (np.asarray(box_max, dtype=np.float64) - np.asarray(box_min, dtype=np.float64)) / np.array(occ.shape)
    reach = 0.5 * float(np.abs(plane.normal) @ vox)  # half the voxel's extent along the normal
    h = plane.height(voxel_centers(box_min, box_max, occ.shape))
    return occ & (h + reach >= -margin)


def halfspace_grid(
    shape: tuple[int, int, int], origin: np.ndarray, spacing: float, plane: SupportPlane, margin: float = 0.0
) -> np.ndarray:
    """The half-space's SDF ``-(height + margin)`` (float32, shape) on the lattice origin + spacing * index."""
    axes = [origin[k] + spacing * np.arange(shape[k]) for k in range(3)]
    n = plane.normal
    h = (n[0] * axes[0])[:, None, None] + (n[1] * axes[1])[None, :, None] + (n[2] * axes[2])[None, None, :]
    return (-(h + plane.offset + margin)).astype(np.float32)


def cut_sdf_grid(
    grid: np.ndarray, origin: np.ndarray, spacing: float, plane: SupportPlane, margin: float = 0.0
) -> tuple[np.ndarray, int]:
    """A sampled SDF (negative inside) intersected with the half-space: (cut grid, samples changed).
    Marching cubes of the result closes the object with a flat cap at ``height = -margin``."""
    half = halfspace_grid(grid.shape, origin, spacing, plane, margin)
    changed = int(np.count_nonzero(half > grid))
    return np.maximum(grid, half), changed


def cut_sdf(
    sdf_func: Callable[[torch.Tensor], torch.Tensor], plane: SupportPlane, margin: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable ``max(sdf(x), -(height(x) + margin))`` for points (N,3) as torch tensors."""
    import torch  # here: the masks and hull stages use this module's grids without torch

    n = torch.as_tensor(plane.normal, dtype=torch.float32)
    d = float(plane.offset) + float(margin)

    def f(p: torch.Tensor) -> torch.Tensor:
        return torch.maximum(sdf_func(p).reshape(-1), -(p @ n.to(p) + d))

    return f


__all__ = ["cut_occupancy", "cut_sdf", "cut_sdf_grid", "halfspace_grid", "voxel_centers"]
