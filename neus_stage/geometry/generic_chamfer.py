"""The point sets of the generic Chamfer / F-score (:func:`neus_stage.evaluate.evaluate_generic`): the mesh and
the ground truth centred on the GT's box, the F-score thresholds that box sets, the GT points the completeness
is measured from, and the mesh samples' distances to the GT (the accuracy); arrays in, arrays out.

A ground truth is a mesh (vertices and non-zero-area faces with their areas) or a point cloud (no faces,
``areas`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..errors import StageError
from .distances import SurfaceDistance, nearest_distances, nonzero_faces, sample_surface, used_vertices


def fscore_thresholds(thresholds: list[float] | None, diag: float) -> list[float]:
    """The F-score thresholds: as given (all positive), else 0.5 %, 1 % and 2 % of the GT box diagonal."""
    if thresholds is None:
        thresholds = [0.005 * diag, 0.01 * diag, 0.02 * diag]
    thresholds = [float(x) for x in thresholds]
    if any(not x > 0 for x in thresholds):
        raise StageError(f"F-score thresholds must be positive, got {thresholds}")
    return thresholds


def gt_box(Vg: np.ndarray, Fg: np.ndarray, gt_path: object) -> tuple[np.ndarray, np.ndarray, float]:
    """Corners and diagonal of the ground truth's box (the vertices its faces use; all points of a cloud); a
    StageError naming ``gt_path`` where it has no size."""
    Vg_used = Vg[used_vertices(Vg, Fg)] if len(Fg) else Vg
    glo, ghi = Vg_used.min(0), Vg_used.max(0)
    diag = float(np.linalg.norm(ghi - glo))
    if not diag > 0:
        raise StageError(f"{gt_path}: the ground truth has a zero-size bounding box (all points coincide)")
    return glo, ghi, diag


def gt_samples(
    Vgc: np.ndarray, Fg: np.ndarray, areas_g: np.ndarray | None, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """The GT points whose distance to the mesh is the completeness, and how they were chosen."""
    if len(Fg):
        return sample_surface(Vgc, Fg, areas_g, n_samples, rng), f"{n_samples} area-uniform GT samples"
    if len(Vgc) > n_samples:  # a random subset bounds the cost; accuracy still uses every GT point
        pick = np.sort(rng.choice(len(Vgc), n_samples, replace=False))
        return Vgc[pick], f"{n_samples} random GT points of {len(Vgc)}"
    return Vgc, f"every GT point ({len(Vgc)})"


def accuracy_distances(
    pred_s: np.ndarray, Vgc: np.ndarray, Fg: np.ndarray, areas_g: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Distances of the mesh samples to the GT surface (GT mesh) or nearest GT point (GT cloud), and which."""
    if len(Fg):
        return SurfaceDistance(Vgc, Fg, areas_g, rng)(pred_s), "mesh samples -> GT surface"
    return (
        nearest_distances(cKDTree(Vgc, balanced_tree=False), pred_s),
        "mesh samples -> nearest GT point (every GT point)",
    )


@dataclass
class CentredPair:
    """The mesh and the ground truth, both centred on the GT box (float32 distance queries stay precise):
    vertices, non-zero-area faces and their areas (None for a GT cloud); the mesh's face count as read,
    whether the GT is a mesh, the GT box (corners before centring, centre, diagonal), the F-score thresholds."""

    V: np.ndarray
    F: np.ndarray
    areas: np.ndarray
    Vg: np.ndarray
    Fg: np.ndarray
    areas_g: np.ndarray | None
    n_faces: int
    gt_is_mesh: bool
    glo: np.ndarray
    ghi: np.ndarray
    center: np.ndarray
    diag: float
    thresholds: list[float]


def centred_pair(
    V: np.ndarray,
    F: np.ndarray,
    Vg: np.ndarray,
    Fg: np.ndarray,
    thresholds: list[float] | None,
    mesh_path: object,
    gt_path: object,
) -> CentredPair:
    """The mesh and the ground truth (read from ``mesh_path`` and ``gt_path``, which errors name) without
    zero-area faces, centred on the GT box, with the F-score thresholds (:func:`fscore_thresholds`)."""
    n_faces = len(F)
    F, areas = nonzero_faces(V, F, mesh_path)
    gt_is_mesh = len(Fg) > 0
    Fg, areas_g = nonzero_faces(Vg, Fg, gt_path) if gt_is_mesh else (Fg, None)
    glo, ghi, diag = gt_box(Vg, Fg, gt_path)
    thresholds = fscore_thresholds(thresholds, diag)
    center = (glo + ghi) / 2
    return CentredPair(
        V - center, F, areas, Vg - center, Fg, areas_g, n_faces, gt_is_mesh, glo, ghi, center, diag, thresholds
    )
