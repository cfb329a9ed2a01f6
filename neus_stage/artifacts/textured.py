"""The export stage's files: what it reads (the mesh with its vertex colours, the dataset's photos with their
cameras and masks) and what it writes (the textured mesh as glTF binary and as Wavefront OBJ + MTL + PNG, and
the preview sheet ``preview.jpg``), all writes atomic.

Texture coordinates are in glTF's convention (``v`` down from the image's top; see
:mod:`neus_stage.geometry.texture`); OBJ's ``vt`` is ``(u, 1 - v)``. The vertices given to the writers are
already in the export frame.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_bytes_atomic, write_text_atomic
from ..errors import StageError
from ..geometry.texture import View
from .dataset import CAMERAS, read_cameras_sphere, view_mask


# ------------------------------------------------------------------------------------------------ reading
def read_colored_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices, faces and vertex colours (uint8 (V, 3) or None) of a .ply/.obj mesh."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: mesh not found; run the mesh stage first")
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a user message
        raise StageError(f"{path}: cannot read the mesh ({type(exc).__name__}: {exc}); re-run the mesh stage") from exc
    if len(mesh.faces) == 0:
        raise StageError(f"{path}: the mesh has no faces; re-run the mesh stage (is the object in the box?)")
    colors = None
    if getattr(mesh.visual, "kind", None) == "vertex":
        c = np.asarray(mesh.visual.vertex_colors)[:, :3]
        if c.std() > 0:  # trimesh gives a uniform default colour to meshes without any
            colors = c.astype(np.uint8)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64), colors


def dataset_views(dataset_dir: Path) -> tuple[list[str], np.ndarray, tuple[int, int]]:
    """The dataset's view names (image/ stems in sorted order), world_mats (N, 4, 4), (width, height)."""
    dataset_dir = Path(dataset_dir)
    images = sorted((dataset_dir / "image").glob("*.png"))
    if not images:
        raise StageError(f"{dataset_dir / 'image'}: no images; run the neus_dataset stage first")
    world_mats, _ = read_cameras_sphere(dataset_dir / CAMERAS, n_views=len(images))
    with Image.open(images[0]) as im:
        size = im.size
    return [p.stem for p in images], world_mats, size


def read_view(dataset_dir: Path, name: str, world_mat: np.ndarray) -> View:
    """One dataset view: its image, its mask where the dataset has one (a scene without masks has none)."""
    dataset_dir = Path(dataset_dir)
    image = np.asarray(Image.open(dataset_dir / "image" / f"{name}.png").convert("RGB"))
    return View(world_mat, image, view_mask(dataset_dir, name))


# ------------------------------------------------------------------------------------------------ writing
def png_bytes(texture: np.ndarray) -> bytes:
    """The texture (S, S, 3) uint8 as PNG."""
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_obj(
    out_dir: Path,
    name: str,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    texture_png: bytes,
) -> dict[str, Path]:
    """``name``.obj / .mtl / .png (vertices already in the export frame; ``uv`` in glTF convention)."""
    out_dir = Path(out_dir)
    mtl = (
        f"# neus-stage export: {name}\nnewmtl {name}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
        f"Ks 0.000 0.000 0.000\nd 1.0\nillum 1\nmap_Kd {name}.png\n"
    )
    buf = io.StringIO()
    buf.write(f"# neus-stage export: {name}; y-up (x, z, -y of the world frame), world units\n")
    buf.write(f"mtllib {name}.mtl\no {name}\n")
    np.savetxt(buf, verts, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), fmt="vt %.6f %.6f")
    np.savetxt(buf, normals, fmt="vn %.4f %.4f %.4f")
    buf.write(f"usemtl {name}\ns 1\n")
    f = np.asarray(faces, dtype=np.int64) + 1
    np.savetxt(buf, np.repeat(f, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    paths = {"obj": out_dir / f"{name}.obj", "mtl": out_dir / f"{name}.mtl", "png": out_dir / f"{name}.png"}
    write_bytes_atomic(paths["png"], texture_png)
    write_text_atomic(paths["mtl"], mtl)
    write_text_atomic(paths["obj"], buf.getvalue())
    return paths


def write_glb(
    path: Path,
    name: str,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    texture: np.ndarray,
) -> None:
    """A glTF 2.0 binary with one mesh, one PBR material (metallic 0, roughness 1) and the texture embedded
    as PNG (trimesh writes it; vertices already in the y-up export frame, ``uv`` in glTF convention)."""
    import trimesh

    material = trimesh.visual.material.PBRMaterial(
        name=name, baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0
    )
    # trimesh keeps UVs in OBJ's convention (v up) and flips them when it writes glTF
    visual = trimesh.visual.TextureVisuals(uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), material=material)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_normals=normals, visual=visual, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name=name, geom_name=name)
    write_bytes_atomic(Path(path), scene.export(file_type="glb", include_normals=True))


def write_preview(path: Path, views: Sequence[View], renders: Sequence[np.ndarray], height: int = 240) -> None:
    """A JPEG sheet, one row per view: the photo beside the textured mesh re-rendered from its camera."""
    rows = []
    for view, render in zip(views, renders):
        photo = np.asarray(view.image, dtype=np.uint8)
        r = np.clip(np.rint(render * 255), 0, 255).astype(np.uint8)
        pair = np.concatenate([photo, np.full((photo.shape[0], 8, 3), 255, np.uint8), r], 1)
        scale = height / pair.shape[0]
        rows.append(
            np.asarray(Image.fromarray(pair).resize((round(pair.shape[1] * scale), height), Image.Resampling.LANCZOS))
        )
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="JPEG", quality=88)
    write_bytes_atomic(Path(path), buf.getvalue())
