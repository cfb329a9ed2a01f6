"""Triangle-mesh tools: signed volume, edge counts, vertex normals, cleaning and DTU-style mask culling.

A mesh is ``verts`` (V,3) and ``faces`` (F,3) int indices into them; cleaning and culling return a new
mesh with the unreferenced vertices dropped (and, where asked, the index of each kept vertex in the input,
so that per-vertex data such as colours can follow).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import StageError
from .cameras import pixel_index, project

log = logging.getLogger(__name__)


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a triangle mesh (positive for a closed, outward-wound surface)."""
    t = np.asarray(verts, dtype=np.float64)[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


def edge_stats(faces: np.ndarray) -> dict:
    """Counts of boundary edges (one face) and non-manifold edges (three or more faces);
    watertight = none of either."""
    if len(faces) == 0:
        return {"boundary_edges": 0, "nonmanifold_edges": 0, "watertight": False}
    faces = np.asarray(faces, dtype=np.int64)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e[:, 0] * (int(faces.max()) + 1) + e[:, 1], return_counts=True)
    b, nm = int((counts == 1).sum()), int((counts > 2).sum())
    return {"boundary_edges": b, "nonmanifold_edges": nm, "watertight": b == 0 and nm == 0}


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V,3)."""
    verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    t = verts[faces]
    fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    idx = faces.reshape(-1)
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=len(verts)) for k in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices: (verts, faces, index of each kept vertex in the input)."""
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    index = np.flatnonzero(used)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[index] = np.arange(len(index))
    return verts[index], remap[faces].reshape(-1, 3), index


def _large_components(verts: np.ndarray, faces: np.ndarray, min_component: float) -> np.ndarray:
    """Per face: whether its connected part (through shared vertices) has at least ``min_component``
    times the largest part's faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    n_comp, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    sizes = np.bincount(face_label, minlength=n_comp)
    keep = sizes[face_label] >= min_component * sizes.max()
    log.info(
        "cleaning: %d connected parts, kept %d (%d of %d faces)",
        n_comp,
        int((sizes >= min_component * sizes.max()).sum()),
        int(keep.sum()),
        len(faces),
    )
    return keep


def clean_mesh_indexed(
    verts: np.ndarray, faces: np.ndarray, min_component: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`clean_mesh` plus the index of each output vertex in the input (to carry per-vertex data)."""
    import pymeshlab

    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int32)
    if len(faces) == 0:
        return verts[:0], faces[:0].astype(np.int64), np.zeros(0, dtype=np.int64)
    ms = pymeshlab.MeshSet()
    # the input index rides along as vertex quality, so that colours can follow the surviving vertices
    ms.add_mesh(
        pymeshlab.Mesh(vertex_matrix=verts, face_matrix=faces, v_scalar_array=np.arange(len(verts), dtype=np.float64))
    )
    ms.meshing_remove_duplicate_vertices()
    ms.meshing_remove_duplicate_faces()
    ms.meshing_remove_null_faces()
    ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    v = np.asarray(m.vertex_matrix(), dtype=np.float64)
    f = np.asarray(m.face_matrix(), dtype=np.int64)
    index = np.rint(m.vertex_scalar_array()).astype(np.int64)
    if len(f) and min_component > 0:
        f = f[_large_components(v, f, min_component)]
    v, f, kept = compact(v, f)
    return v, f, index[kept]


def clean_mesh(verts: np.ndarray, faces: np.ndarray, *, min_component: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Remove duplicate vertices and faces, zero-area faces, unreferenced vertices (pymeshlab), and the
    connected parts with fewer faces than ``min_component`` times the largest part's."""
    v, f, _ = clean_mesh_indexed(verts, faces, min_component)
    return v, f


def _dilated_foreground(mask: np.ndarray, dilation: int) -> np.ndarray:
    """A mask's foreground (non-zero; any channel) dilated by a disk of radius ``dilation`` px (skimage
    disk(r) == EDT <= r)."""
    from scipy.ndimage import distance_transform_edt

    fg = np.asarray(mask) > 0
    if fg.ndim == 3:
        fg = fg.any(axis=2)
    if dilation > 0:
        fg = distance_transform_edt(~fg) <= dilation if fg.any() else fg
    return fg


def cull_keep(
    verts_world: np.ndarray, world_mats: np.ndarray, masks: Sequence[np.ndarray], dilation: int
) -> np.ndarray:
    """Per-vertex keep flags of the DTU mask culling (see :func:`cull_by_masks`)."""
    verts_world = np.asarray(verts_world, dtype=np.float64)
    world_mats = np.asarray(world_mats, dtype=np.float64)
    if len(world_mats) != len(masks):
        raise StageError(f"mask culling got {len(world_mats)} cameras but {len(masks)} masks")
    keep = np.ones(len(verts_world), dtype=bool)
    for wm, mask in zip(world_mats, masks, strict=True):
        fg = _dilated_foreground(mask, dilation)
        h, w = fg.shape
        uv, z = project(wm, verts_world)
        # inside = in front and within the pixel-centre span (NeuS rays), then rounded to the pixel
        inside = (z > 1e-9) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        col, row, _ = pixel_index(uv[inside], w, h)
        on_fg = np.ones(len(verts_world), dtype=bool)
        on_fg[inside] = fg[row, col]
        keep &= on_fg
    return keep


def cull_by_masks(
    verts_world: np.ndarray,
    faces: np.ndarray,
    world_mats: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    dilation: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """DTU-protocol culling: drop every vertex that projects, in a view whose image it falls in, onto
    background (the foreground dilated by a disk of ``dilation`` px); keep the faces whose three vertices
    survive; drop unreferenced vertices. ``world_mats`` (N,4,4) map world -> pixel; ``masks`` N (H,W)
    arrays, non-zero = foreground."""
    keep = cull_keep(verts_world, world_mats, masks, dilation)
    faces = np.asarray(faces, dtype=np.int64)
    v, f, _ = compact(np.asarray(verts_world, dtype=np.float64), faces[keep[faces].all(axis=1)])
    return v, f


__all__ = [
    "clean_mesh",
    "clean_mesh_indexed",
    "compact",
    "cull_by_masks",
    "cull_keep",
    "edge_stats",
    "signed_volume",
    "vertex_normals",
]
