"""Signed distance primitives of the synthetic scenes (negative inside, world units), smooth union and
intersection, and rigid placement of a local-frame SDF in the world.

Every function takes points ``p`` (N,3) and returns distances (N,); the smooth operators are lower bounds
of the exact ones, so sphere tracing a combination stays safe.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SDF = Callable[[np.ndarray], np.ndarray]
"""A signed distance function: points (N,3) -> distances (N,), negative inside."""


def length(*xs: np.ndarray) -> np.ndarray:
    """Euclidean norm of the components ``xs`` (each (N,))."""
    return np.sqrt(sum(x * x for x in xs))


def sd_capped_cylinder_z(p: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    """Exact SDF of a solid cylinder about the z axis, centred at the origin."""
    dx = length(p[:, 0], p[:, 1]) - radius
    dz = np.abs(p[:, 2]) - half_height
    outside = length(np.maximum(dx, 0.0), np.maximum(dz, 0.0))
    return np.minimum(np.maximum(dx, dz), 0.0) + outside


def sd_rounded_cylinder_z(p: np.ndarray, radius: float, half_height: float, rounding: float) -> np.ndarray:
    """A solid cylinder about the z axis with edges rounded by ``rounding`` (same outer size)."""
    return sd_capped_cylinder_z(p, radius - rounding, half_height - rounding) - rounding


def sd_torus_y(p: np.ndarray, major: float, minor: float) -> np.ndarray:
    """Torus whose ring lies in the xz plane (axis along y)."""
    q = length(p[:, 0], p[:, 2]) - major
    return length(q, p[:, 1]) - minor


def sd_round_box(p: np.ndarray, half: np.ndarray, rounding: float) -> np.ndarray:
    """A box of half sides ``half`` centred at the origin, edges rounded by ``rounding`` (same outer size)."""
    q = np.abs(p) - (np.asarray(half) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    return outside + np.minimum(q.max(axis=1), 0.0) - rounding


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (a lower bound of min, so sphere tracing stays safe)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum (smooth intersection; ``smax(a, -b)`` cuts ``b`` out of ``a``)."""
    return -smin(-a, -b, k)


def rot_z(deg: float) -> np.ndarray:
    """Rotation (3,3) by ``deg`` degrees about the z axis."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def placed(local: SDF, rotation: np.ndarray, offset: np.ndarray) -> SDF:
    """World SDF of a local-frame SDF placed by x_world = rotation @ x_local + offset (rigid: exact)."""
    rot = np.asarray(rotation, dtype=np.float32)
    off = np.asarray(offset, dtype=np.float32)

    def sdf(p: np.ndarray) -> np.ndarray:
        return local((p - off) @ rot)  # rows: R^T (p - off)

    return sdf
