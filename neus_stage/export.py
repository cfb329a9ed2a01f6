"""The export stage: the cleaned mesh as a textured asset a 3D tool opens at once.

Writes ``<out>/<name>.glb`` (glTF 2.0 binary, texture embedded) and ``<name>.obj`` + ``<name>.mtl`` +
``<name>.png`` (Wavefront OBJ with its material and texture), plus ``export.json`` (what was done and
measured) and ``preview.jpg`` (photos beside the textured mesh re-rendered from their cameras).

Steps (:mod:`neus_stage.geometry.textured_mesh`): ``mesh_clean`` decimated to ``faces`` (pymeshlab's quadric
edge collapse, normals and topology preserved), UV-unwrapped (xatlas, in a child process: xatlas can crash
outright on degenerate input, and a crash must become a message, not a dead stage), and a ``texture_size``^2
texture baked from the dataset's photos (:mod:`neus_stage.geometry.texture`: each texel from the views that
see it, weighted by viewing angle and distance, occlusion tested against the mesh, seams padded) or, with
``texture_from="network"``, from the trained colour network seen head-on. Surface no photo sees takes
the mesh's vertex colours (the colour network's, which the mesh stage writes), else its neighbours'.

Frame: glTF is y-up; the workflow's world is z-up (DESIGN.md), so both files hold ``(x, z, -y)`` of the
world point, in world units (``export.json`` records the matrix). OBJ has no axis convention of its own;
it is written like the GLB, as Blender's and most tools' OBJ importers assume y-up. The files are read and
written by :mod:`neus_stage.artifacts.textured`; the views and the colour network the texture comes from are
:mod:`neus_stage.export_sources`'.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts.dataset import mask_files
from .artifacts.reports import write_report
from .artifacts.textured import png_bytes, read_colored_mesh, write_glb, write_obj, write_preview
from .errors import StageError
from .export_sources import ExportViews, network_colors
from .geometry.mesh_tools import vertex_normals
from .geometry.texture import View, masked_psnr, render_textured
from .geometry.textured_mesh import atlas_texels, bake_texture, decimate, unwrap
from .progress import Progress
from .timing import StageTimer

log = logging.getLogger(__name__)

MIN_FACES = 1000
"""Fewest faces a decimation target may ask for (below it even a simple object loses its shape)."""
MIN_TEXTURE, MAX_TEXTURE = 64, 16384
TEXTURE_SOURCES = ("photos", "network")
WORLD_TO_EXPORT = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
"""World (z-up) to glTF's y-up frame: a rotation of -90 degrees about x, (x, y, z) -> (x, z, -y)."""
PREVIEW_VIEWS = 3


# --------------------------------------------------------------------------------------------- settings
def check_export_settings(
    faces: int,
    texture_size: int,
    texture_from: str = "photos",
    *,
    faces_name: str = "--faces",
    size_name: str = "--texture-size",
    source_name: str = "--texture-from",
) -> None:
    """A StageError naming the setting and the fix for a face count below MIN_FACES, a texture size that is
    not a power of two (GPUs and mip-maps want one) or an unknown texture source."""
    if isinstance(faces, bool) or not isinstance(faces, (int, np.integer)) or faces < MIN_FACES:
        raise StageError(
            f"{faces_name} {faces}: the target face count must be at least {MIN_FACES}; "
            f"set {faces_name} to {MIN_FACES} or more (default 200000)"
        )
    size = texture_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size & (size - 1):
        lower = 1 << max(int(size).bit_length() - 1, 0) if isinstance(size, (int, np.integer)) and size > 0 else 1024
        raise StageError(
            f"{size_name} {size}: the texture size must be a power of two; set {size_name} to "
            f"{max(lower, MIN_TEXTURE)} or {min(max(lower, MIN_TEXTURE) * 2, MAX_TEXTURE)} "
            "(default 2048)"
        )
    if not MIN_TEXTURE <= size <= MAX_TEXTURE:
        raise StageError(
            f"{size_name} {size}: the texture size must lie between {MIN_TEXTURE} and {MAX_TEXTURE}; "
            f"set {size_name} to a power of two in that range (default 2048)"
        )
    if texture_from not in TEXTURE_SOURCES:
        raise StageError(
            f"{source_name} {texture_from!r}: the texture comes from 'photos' or 'network'; set "
            f"{source_name} to one of them"
        )


def to_export_frame(verts: np.ndarray) -> np.ndarray:
    """World points (or normals) in the files' y-up frame."""
    return np.asarray(verts, dtype=np.float64) @ WORLD_TO_EXPORT[:3, :3].T


def from_export_frame(verts: np.ndarray) -> np.ndarray:
    """Points of the files back in the world frame."""
    return np.asarray(verts, dtype=np.float64) @ WORLD_TO_EXPORT[:3, :3]


# ------------------------------------------------------------------------------------------------ texture
@dataclass
class UVMesh:
    """The decimated mesh cut along its UV seams: per-vertex positions, unit normals, texture coordinates
    (glTF convention) and fallback colours (uint8, or None), its faces and the atlas's statistics."""

    verts: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    normals: np.ndarray
    fallback: np.ndarray | None
    atlas: dict


def _unwrapped(
    verts0: np.ndarray, colors0: np.ndarray | None, verts: np.ndarray, tris: np.ndarray, texture_size: int
) -> UVMesh:
    """The decimated mesh ``verts``/``tris`` unwrapped, with the vertex colours of the nearest original vertex."""
    fallback = None
    if colors0 is not None:
        from scipy.spatial import cKDTree

        fallback = colors0[cKDTree(verts0).query(verts, k=1)[1]]
    normals = vertex_normals(verts, tris)
    padding = max(2, texture_size // 512)
    vmapping, uv_faces, uv, atlas = unwrap(verts, tris, texture_size, padding)
    return UVMesh(
        verts[vmapping],
        uv_faces,
        uv,
        normals[vmapping],
        None if fallback is None else fallback[vmapping],
        {**atlas, "padding_texels": padding},
    )


def _bake(
    mesh: UVMesh,
    views: ExportViews,
    texture_size: int,
    texture_from: str,
    checkpoint: Path | None,
    top_k: int,
    device: str,
    timer: StageTimer,
) -> tuple[np.ndarray, dict]:
    """The texture, from the photos not held out or from the colour network, and what went into it (timed,
    logged)."""
    t = time.perf_counter()
    if texture_from == "photos":
        with Progress("baking the texture", len(views.texture_names()), "views") as bar:
            texture, bake = bake_texture(
                mesh.verts,
                mesh.faces,
                mesh.uv,
                texture_size,
                views=views.texture_views(bar),
                fallback=mesh.fallback,
                top_k=top_k,
            )
    else:
        _, points, nrm, _, _ = atlas_texels(mesh.verts, mesh.faces, mesh.uv, texture_size)
        cols = network_colors(checkpoint, views.dataset_dir, points, nrm, device=device)
        texture, bake = bake_texture(mesh.verts, mesh.faces, mesh.uv, texture_size, colors=cols)
    timer.lap("bake_s", t)
    log.info(
        "texture: %.0f%% of the atlas covered, %.1f%% of the surface seen by a photo, in %.1f s",
        100 * bake["texels_share"],
        100 * bake["seen_share"],
        timer.timings["bake_s"],
    )
    return texture, bake


def _write_files(out_dir: Path, name: str, mesh: UVMesh, texture: np.ndarray) -> dict[str, Path]:
    """GLB and OBJ/MTL/PNG of the textured mesh in the export frame; their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    v_exp = to_export_frame(mesh.verts)
    n_exp = to_export_frame(mesh.normals)
    paths = write_obj(out_dir, name, v_exp, mesh.faces, mesh.uv, n_exp, png_bytes(texture))
    paths["glb"] = out_dir / f"{name}.glb"
    write_glb(paths["glb"], name, v_exp, mesh.faces, mesh.uv, n_exp, texture)
    return paths


def _rerender_check(mesh: UVMesh, texture: np.ndarray, views: ExportViews, preview_path: Path) -> dict:
    """How well the textured mesh reproduces the photos (held-out views where there are any): the PSNR per
    view re-rendered from its camera, and a preview sheet of a few of them."""
    check = views.check_names()
    show = set(check[:: max(1, len(check) // PREVIEW_VIEWS)][:PREVIEW_VIEWS])
    psnr: dict[str, float] = {}
    shown: list[tuple[View, np.ndarray]] = []
    for n in check:
        view = views.view(n)
        render, hit = render_textured(mesh.verts, mesh.faces, mesh.uv, texture, view.world_mat, *views.size)
        region = hit if view.mask is None else hit & view.mask
        psnr[n] = round(masked_psnr(render, view.image, region), 2)
        if n in show:
            shown.append((view, render))
    write_preview(preview_path, [v for v, _ in shown], [r for _, r in shown])
    vals = [v for v in psnr.values() if np.isfinite(v)]
    return {
        "psnr": {
            "views": psnr,
            "mean": round(float(np.mean(vals)), 2) if vals else None,
            "kind": "held-out views (not used for the texture)"
            if views.held
            else "views used for the texture (not held out)",
            "region": "pixels inside the view's mask where the mesh is hit"
            if mask_files(views.dataset_dir)
            else "pixels where the mesh is hit",
        },
        "preview": {"file": preview_path.name, "views": [v for v in check if v in show]},
    }


def _uv_mesh(
    verts0: np.ndarray, faces0: np.ndarray, colors0: np.ndarray | None, faces: int, texture_size: int, timer: StageTimer
) -> UVMesh:
    """The mesh decimated to ``faces`` and unwrapped for a ``texture_size``^2 texture (timed, logged)."""
    t = time.perf_counter()
    verts, tris = decimate(verts0, faces0, faces)
    t = timer.lap("decimate_s", t)
    log.info("decimated to %d faces, %d vertices in %.1f s", len(tris), len(verts), timer.timings["decimate_s"])
    mesh = _unwrapped(verts0, colors0, verts, tris, texture_size)
    timer.lap("unwrap_s", t)
    log.info(
        "xatlas: %d charts, atlas %dx%d, %.0f%% used, in %.1f s",
        mesh.atlas["charts"],
        *mesh.atlas["atlas_size"],
        100 * mesh.atlas["utilization"],
        timer.timings["unwrap_s"],
    )
    return mesh


def _export_record(
    mesh_path: Path,
    dataset_dir: Path,
    name: str,
    paths: dict[str, Path],
    faces_in: int,
    mesh: UVMesh,
    settings: dict,
    bake: dict,
    views: ExportViews,
    check: dict,
) -> dict:
    """export.json without its timings: the files, the counts, ``settings`` (faces, texture_size, texture_from,
    top_k), the frame, the atlas, the bake, the held-out views and the re-render ``check``."""
    return {
        "mesh": str(mesh_path),
        "dataset": str(dataset_dir),
        "name": name,
        "files": {k: p.name for k, p in paths.items()},
        "faces_in": int(faces_in),
        "faces": int(len(mesh.faces)),
        "vertices": int(len(mesh.verts)),
        "target_faces": int(settings["faces"]),
        "texture_size": int(settings["texture_size"]),
        "texture_from": settings["texture_from"],
        "frame": {
            "description": "glTF y-up: (x, y, z) of the files = (x, z, -y) of the world frame, world units",
            "world_to_export": WORLD_TO_EXPORT.tolist(),
        },
        "atlas": mesh.atlas,
        "bake": {**bake, "top_k": settings["top_k"], "views": len(views.names) - len(views.held)},
        "held_out": views.held,
        **check,
    }


# ---------------------------------------------------------------------------------------------- the stage
def export_textured(
    mesh_path: Path,
    dataset_dir: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    faces: int = 200_000,
    texture_size: int = 2048,
    texture_from: str = "photos",
    checkpoint: Path | None = None,
    holdout_every: int = 0,
    top_k: int = 3,
    device: str = "auto",
) -> dict:
    """The export stage: decimate, unwrap, bake, write GLB + OBJ/MTL/PNG, export.json and preview.jpg.

    ``holdout_every`` > 0 leaves every k-th view out of the texture, so that the PSNR of those views
    re-rendered from the textured mesh (in export.json) is measured on photos the texture never saw.
    """
    check_export_settings(faces, texture_size, texture_from)
    mesh_path, dataset_dir, out_dir = Path(mesh_path), Path(dataset_dir), Path(out_dir)
    name = name or mesh_path.parent.name
    if texture_from == "network" and checkpoint is None:
        raise StageError("--texture-from network needs --checkpoint (the trained neus/checkpoint.pt)")
    timer = StageTimer(digits=2)
    timings = timer.timings

    verts0, faces0, colors0 = read_colored_mesh(mesh_path)
    views = ExportViews.read(dataset_dir, holdout_every)
    log.info(
        "export: %s (%d faces) -> %d faces, %d^2 texture from the %s (%d views%s)",
        mesh_path,
        len(faces0),
        min(faces, len(faces0)),
        texture_size,
        texture_from,
        len(views.names) - len(views.held),
        f", {len(views.held)} held out" if views.held else "",
    )
    mesh = _uv_mesh(verts0, faces0, colors0, faces, texture_size, timer)
    texture, bake = _bake(mesh, views, texture_size, texture_from, checkpoint, top_k, device, timer)
    t = time.perf_counter()
    paths = _write_files(out_dir, name, mesh, texture)
    t = timer.lap("write_s", t)
    check = _rerender_check(mesh, texture, views, out_dir / "preview.jpg")
    timer.lap("check_s", t)
    timer.total("total_s")
    settings = {"faces": faces, "texture_size": texture_size, "texture_from": texture_from, "top_k": top_k}
    meta = {
        **_export_record(mesh_path, dataset_dir, name, paths, len(faces0), mesh, settings, bake, views, check),
        "timings": timings,
    }
    write_report(out_dir / "export.json", meta)
    log.info(
        "export: %s and %s (%d faces, %d^2 texture); re-rendered %s: PSNR %s dB, in %.1f s",
        paths["glb"],
        paths["obj"],
        len(mesh.faces),
        texture_size,
        meta["psnr"]["kind"],
        meta["psnr"]["mean"],
        timings["total_s"],
    )
    return meta
