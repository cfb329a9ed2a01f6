"""Which points fall in an occupancy grid over a box (the visual hull's, in hull.npz), after growing it by
whole voxels: numpy alone, so the quality stage needs no torch and a training node no scipy."""

from __future__ import annotations

import numpy as np


def grow(occupancy: np.ndarray, voxels: int = 1) -> np.ndarray:
    """The grid dilated by ``voxels`` with the 3x3x3 cube (scipy's binary_dilation with a full structure and
    that many iterations; outside the grid counts as empty)."""
    out = np.asarray(occupancy, dtype=bool)
    for _ in range(voxels):
        for axis in range(3):
            grown = out.copy()
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
            out = grown
    return out


def in_grid(points: np.ndarray, occupancy: np.ndarray, box_min: np.ndarray, box_max: np.ndarray) -> np.ndarray:
    """Which points (N,3), in the grid's frame, lie in an occupied cell of ``occupancy`` over the box."""
    res = np.array(occupancy.shape)
    idx = np.floor((np.asarray(points, dtype=np.float64) - box_min) / (box_max - box_min) * res).astype(np.int64)
    ok = ((idx >= 0) & (idx < res)).all(1)
    idx = np.clip(idx, 0, res - 1)
    return ok & occupancy[idx[:, 0], idx[:, 1], idx[:, 2]]
