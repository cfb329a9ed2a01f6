"""Which parts of a mesh some camera observes: a visibility test of every face against the mesh itself.

A face is observed by a view when its centre projects inside the image, it faces the camera at more than
a grazing angle (``min_cos``: cos of the angle between its normal and the direction to the camera), and
the ray from the camera to its centre hits nothing nearer (open3d's RaycastingScene over the mesh). What
no view observes is what the photos cannot tell: under an object standing on a surface, the visual hull's
cone; :func:`unobserved_regions` groups such faces into connected regions so that a small unseen crevice
can be told from the underside of an object.
"""

from __future__ import annotations

import numpy as np

from .cameras import camera_centers, project


def face_geometry(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (F,3), unit normals (F,3; the mean of the area-weighted vertex normals, which is smoother
    than a marching-cubes face's own normal) and areas (F,) of a triangle mesh."""
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    t = v[f]
    cross = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    areas = 0.5 * np.linalg.norm(cross, axis=1)
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], cross)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-30)
    fn = vn[f].sum(1)
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-30)
    return t.mean(1), fn, areas


def observed_faces(
    verts: np.ndarray,
    faces: np.ndarray,
    projections: np.ndarray,
    image_size: tuple[int, int],
    *,
    min_cos: float = 0.1,
    eps: float | None = None,
) -> np.ndarray:
    """Per face (bool (F,)): whether some view observes it. ``projections`` (N,3,4) map the mesh's frame to
    pixels (integer pixel centres) of images ``image_size`` = (width, height). ``eps``: how much nearer
    than the face centre a ray may hit and still count as reaching it (default two median edge lengths)."""
    import open3d as o3d

    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return np.zeros(0, dtype=bool)
    centres, normals, _ = face_geometry(v, f)
    if eps is None:
        edges = np.linalg.norm(v[f[:, 1]] - v[f[:, 0]], axis=1)
        eps = 2.0 * float(np.median(edges))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    w, h = image_size
    seen = np.zeros(len(f), dtype=bool)
    projections = np.asarray(projections, dtype=np.float64)
    for P, c in zip(projections, camera_centers(projections), strict=True):
        todo = np.flatnonzero(~seen)
        if len(todo) == 0:
            break
        to_cam = c - centres[todo]
        dist = np.linalg.norm(to_cam, axis=1)
        cos = np.einsum("ij,ij->i", normals[todo], to_cam) / np.maximum(dist, 1e-30)
        uv, z = project(P, centres[todo])
        ok = (cos > min_cos) & (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        cand = todo[ok]
        if len(cand) == 0:
            continue
        d = -to_cam[ok] / dist[ok, None]
        rays = np.concatenate([np.broadcast_to(c, d.shape), d], 1).astype(np.float32)
        t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        seen[cand[t_hit >= dist[ok] - eps]] = True
    return seen


def unobserved_regions(faces: np.ndarray, observed: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions (through shared vertices) of the unobserved faces: (label per face, -1 for
    observed faces; area per region)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, dtype=np.int64)
    idx = np.flatnonzero(~np.asarray(observed, dtype=bool))
    labels = np.full(len(f), -1, dtype=np.int64)
    if len(idx) == 0:
        return labels, np.zeros(0)
    n_v = int(f.max()) + 1
    rows = np.repeat(np.arange(len(idx)), 3)
    cols = len(idx) + f[idx].reshape(-1)  # a bipartite graph: unobserved faces and their vertices
    n = len(idx) + n_v
    g = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    _, lab = np.unique(comp[: len(idx)], return_inverse=True)
    labels[idx] = lab
    return labels, np.bincount(lab, weights=np.asarray(areas)[idx])


def visibility_cull(
    verts: np.ndarray,
    faces: np.ndarray,
    projections: np.ndarray,
    image_size: tuple[int, int],
    *,
    min_cos: float = 0.1,
    min_region: float = 0.01,
) -> tuple[np.ndarray, dict]:
    """Faces to keep (bool (F,)): all but the unobserved regions larger than ``min_region`` of the mesh's
    area (a smaller unseen region, a crevice, stays: removing it would only punch a hole), with figures
    (areas in the mesh's units squared)."""
    _, _, areas = face_geometry(verts, faces)
    seen = observed_faces(verts, faces, projections, image_size, min_cos=min_cos)
    labels, region_area = unobserved_regions(faces, seen, areas)
    total = float(areas.sum())
    big = np.flatnonzero(region_area >= min_region * total)
    remove = np.isin(labels, big)
    stats = {
        "faces_unobserved": int((~seen).sum()),
        "area_unobserved": float(areas[~seen].sum()),
        "faces_removed": int(remove.sum()),
        "area_removed": float(areas[remove].sum()),
        "area_total": total,
        "area_removed_share": float(areas[remove].sum() / total) if total else 0.0,
        "regions_removed": int(len(big)),
        "regions_kept_unobserved": int(len(region_area) - len(big)),
        "min_cos": float(min_cos),
        "min_region": float(min_region),
    }
    return ~remove, stats


__all__ = ["face_geometry", "observed_faces", "unobserved_regions", "visibility_cull"]
