"""Meshes and point clouds: the mesh stage's ``mesh.ply`` / ``mesh_clean.ply``, ground truths, test scenes.

Written by extension (binary PLY or Wavefront OBJ, through trimesh: no system libraries needed), atomically;
read from any format open3d or trimesh know (PLY, OBJ, OFF, STL, glTF/GLB; XYZ/PTS/PCD point clouds),
validated: a missing, empty, corrupt or all-NaN file is a StageError naming it; NaN vertices are dropped with
the faces that use them. The textured exports (GLB/OBJ with a texture) belong to :mod:`.textured`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import StageError

log = logging.getLogger(__name__)

MESH_FORMATS = (".ply", ".obj")
"""Mesh files this package writes, named by their extension."""
READ_FORMATS = {".ply", ".obj", ".off", ".stl", ".glb", ".gltf"}
"""Mesh files it reads."""
POINT_FORMATS = {".xyz", ".pts", ".pcd"}
"""Point-cloud files it reads (a PLY may hold a point cloud too)."""


@contextmanager
def quiet_open3d() -> Iterator[object | None]:
    """open3d with its console output limited to errors, or None where it cannot be imported."""
    try:
        import open3d as o3d
    except Exception:  # noqa: BLE001 - open3d needs system libraries (libusb) that may be missing
        yield None
        return
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        yield o3d


def check_mesh_path(path: Path, what: str = "--out") -> Path:
    """``path`` if its extension names a format this package writes; else a StageError before any work."""
    path = Path(path)
    if path.suffix.lower() not in MESH_FORMATS:
        raise StageError(
            f"{what} {path}: cannot write a mesh as '{path.suffix or '(no extension)'}'; name the file "
            f"with one of {', '.join(MESH_FORMATS)} (e.g. {path.with_suffix('.ply').name})"
        )
    return path


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    """The mesh in the format its extension names: binary PLY (.ply, float32 vertices as PLY readers expect)
    or Wavefront OBJ (.obj, vertex colours as the common ``v x y z r g b`` extension)."""
    import trimesh

    path = check_mesh_path(path, "mesh file")
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_colors=colors, process=False)
    if path.suffix.lower() == ".ply":
        data = mesh.export(file_type="ply", encoding="binary")
    else:
        data = mesh.export(
            file_type="obj", include_color=colors is not None, include_normals=False, include_texture=False
        )
    write_bytes_atomic(path, data.encode() if isinstance(data, str) else data)


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: {what} file not found")
    if not path.is_file():
        raise StageError(f"{path}: {what} is not a file")
    if path.stat().st_size == 0:
        raise StageError(f"{path}: {what} file is empty (0 bytes)")
    return path


def read_geometry(path: Path, what: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n,3) float64, faces (m,3) int64; m may be 0 for a point cloud). StageError when unreadable."""
    path = _check_file(path, what)
    suffix = path.suffix.lower()
    if suffix not in READ_FORMATS | POINT_FORMATS:
        raise StageError(f"{path}: unsupported {what} format {path.suffix!r}; give a .ply or .obj file")
    if suffix == ".ply":
        with open(path, "rb") as fh:
            if fh.read(3) != b"ply":
                raise StageError(f"{path}: not a PLY file (it does not start with 'ply'); give a .ply or .obj {what}")
    V = F = None
    with quiet_open3d() as o3d:
        if o3d is not None:
            if suffix in POINT_FORMATS:
                V = np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64)
                F = np.zeros((0, 3), np.int64)
            else:
                m = o3d.io.read_triangle_mesh(str(path))
                V = np.asarray(m.vertices, dtype=np.float64)
                F = np.asarray(m.triangles, dtype=np.int64)
                if len(V) == 0 and suffix == ".ply":  # maybe a point cloud open3d reads otherwise
                    V = np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64)
                    F = np.zeros((0, 3), np.int64)
    if V is None or len(V) == 0:
        # open3d missing, or it silently returned nothing: trimesh gives a real error message
        try:
            import trimesh

            g = trimesh.load(str(path), process=False)
            if isinstance(g, trimesh.Scene):
                g = g.to_geometry() if hasattr(g, "to_geometry") else g.dump(concatenate=True)
            V = np.asarray(g.vertices, dtype=np.float64)
            F = np.asarray(getattr(g, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a user-facing message
            raise StageError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from exc
    if len(V) == 0:
        raise StageError(f"{path}: the {what} has no vertices (empty or unreadable file)")
    if len(F) and (F.min() < 0 or F.max() >= len(V)):
        raise StageError(f"{path}: the {what} has faces that index missing vertices (corrupt file)")
    finite = np.isfinite(V).all(1)
    if not finite.all():
        if not finite.any():
            raise StageError(f"{path}: every vertex of the {what} is NaN or infinite")
        log.warning("%s: %d vertices are NaN/inf; faces using them are dropped", path, int((~finite).sum()))
        F = F[finite[F].all(1)]
        remap = np.cumsum(finite) - 1
        V, F = V[finite], remap[F]
    return V, F


def read_mesh(path: Path, what: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of a triangle mesh; a point cloud or a file without faces is a StageError."""
    V, F = read_geometry(path, what)
    if len(F) == 0:
        raise StageError(f"{path}: the {what} has {len(V)} vertices but no faces; a triangle mesh is needed")
    return V, F


def read_points(path: Path, what: str = "point cloud") -> np.ndarray:
    """The points (n,3) of a point cloud, or the vertices of a mesh."""
    return read_geometry(path, what)[0]


def read_mesh_decimated(path: Path, max_faces: int, what: str = "mesh") -> tuple[np.ndarray, np.ndarray, int]:
    """Vertices, faces (quadric-decimated to at most ``max_faces``: for previews) and the file's face count."""
    V, F = read_mesh(path, what)
    n_faces = len(F)
    if n_faces > max_faces:
        with quiet_open3d() as o3d:
            if o3d is None:
                raise StageError(f"{path}: decimating a preview needs open3d, which cannot be imported here")
            m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V), o3d.utility.Vector3iVector(F.astype(np.int32)))
            m = m.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
            m.remove_unreferenced_vertices()
            V, F = np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64)
    return V, F, n_faces
