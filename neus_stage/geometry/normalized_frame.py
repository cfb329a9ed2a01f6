"""NeuS's normalised (unit-sphere) frame and the world: the dataset's ``scale_mat`` maps a normalised point x to
the world point ``A @ x + c`` (A its upper-left 3x3, c its translation); arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np


def world_scale(scale_mat: np.ndarray) -> float:
    """World units per normalised unit: the cube root of |det A| (A uniform: its scale factor)."""
    return float(abs(np.linalg.det(scale_mat[:3, :3])) ** (1 / 3))


def mesh_to_world(verts: np.ndarray, faces: np.ndarray, scale_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mesh mapped from the normalised frame by ``scale_mat``, still wound outward (a mirroring ``scale_mat``
    would turn it inside out: its faces are then reversed)."""
    A, c = scale_mat[:3, :3], scale_mat[:3, 3]
    if np.linalg.det(A) < 0:
        faces = faces[:, ::-1].copy()
    return verts @ A.T + c, faces


def to_normalized(points: np.ndarray, normals: np.ndarray, scale_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) and their unit normals in the normalised frame (the normals renormalised)."""
    A, c = scale_mat[:3, :3], scale_mat[:3, 3]
    pts_n = np.linalg.solve(A, (points - c).T).T
    nrm_n = normals @ A  # the inverse transpose of A^-1: a normal stays a normal
    nrm_n /= np.maximum(np.linalg.norm(nrm_n, axis=1, keepdims=True), 1e-30)
    return pts_n, nrm_n
