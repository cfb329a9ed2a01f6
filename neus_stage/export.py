"""The export stage: the cleaned mesh as a textured asset a 3D tool opens at once.

Writes ``<out>/<name>.glb`` (glTF 2.0 binary, texture embedded) and ``<name>.obj`` + ``<name>.mtl`` +
``<name>.png`` (Wavefront OBJ with its material and texture), plus ``export.json`` (what was done and
measured) and ``preview.jpg`` (photos beside the textured mesh re-rendered from their cameras).

Steps: ``mesh_clean`` decimated to ``faces`` (pymeshlab's quadric edge collapse, normals and topology
preserved), UV-unwrapped (xatlas, in a child process: xatlas can crash outright on degenerate input, and
a crash must become a message, not a dead stage), and a ``texture_size``^2 texture baked from the
dataset's photos (:mod:`neus_stage.geometry.texture`: each texel from the views that see it, weighted by
viewing angle and distance, occlusion tested against the mesh, seams padded) or, with
``texture_from="network"``, from the trained colour network seen head-on. Surface no photo sees takes
the mesh's vertex colours (the colour network's, which the mesh stage writes), else its neighbours'.

Frame: glTF is y-up; the workflow's world is z-up (DESIGN.md), so both files hold ``(x, z, -y)`` of the
world point, in world units (``export.json`` records the matrix). OBJ has no axis convention of its own;
it is written like the GLB, as Blender's and most tools' OBJ importers assume y-up.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .artifacts.dataset import view_mask
from .artifacts.reports import write_report
from .atomic import write_bytes_atomic, write_text_atomic
from .errors import StageError
from .geometry.texture import (
    View,
    bake_colors,
    fill_texture,
    interpolate,
    masked_psnr,
    rasterize_uv,
    render_textured,
    vertex_normals,
)
from .progress import Progress

log = logging.getLogger(__name__)

MIN_FACES = 1000
"""Fewest faces a decimation target may ask for (below it even a simple object loses its shape)."""
MIN_TEXTURE, MAX_TEXTURE = 64, 16384
TEXTURE_SOURCES = ("photos", "network")
WORLD_TO_EXPORT = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
"""World (z-up) to glTF's y-up frame: a rotation of -90 degrees about x, (x, y, z) -> (x, z, -y)."""
PREVIEW_VIEWS = 3
CHECK_VIEWS = 8
"""Views re-rendered from the textured mesh for the PSNR in export.json (evenly spaced; all held-out ones)."""


# --------------------------------------------------------------------------------------------- settings
def check_export_settings(faces: int, texture_size: int, texture_from: str = "photos", *,
                          faces_name: str = "--faces", size_name: str = "--texture-size",
                          source_name: str = "--texture-from") -> None:
    """A StageError naming the setting and the fix for a face count below MIN_FACES, a texture size that is
    not a power of two (GPUs and mip-maps want one) or an unknown texture source."""
    if isinstance(faces, bool) or not isinstance(faces, (int, np.integer)) or faces < MIN_FACES:
        raise StageError(f"{faces_name} {faces}: the target face count must be at least {MIN_FACES}; "
                         f"set {faces_name} to {MIN_FACES} or more (default 200000)")
    size = texture_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size & (size - 1):
        lower = 1 << max(int(size).bit_length() - 1, 0) if isinstance(size, (int, np.integer)) and size > 0 else 1024
        raise StageError(f"{size_name} {size}: the texture size must be a power of two; set {size_name} to "
                         f"{max(lower, MIN_TEXTURE)} or {min(max(lower, MIN_TEXTURE) * 2, MAX_TEXTURE)} "
                         "(default 2048)")
    if not MIN_TEXTURE <= size <= MAX_TEXTURE:
        raise StageError(f"{size_name} {size}: the texture size must lie between {MIN_TEXTURE} and {MAX_TEXTURE}; "
                         f"set {size_name} to a power of two in that range (default 2048)")
    if texture_from not in TEXTURE_SOURCES:
        raise StageError(f"{source_name} {texture_from!r}: the texture comes from 'photos' or 'network'; set "
                         f"{source_name} to one of them")


# ---------------------------------------------------------------------------------------------- geometry
def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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


def decimate(verts: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation (pymeshlab) to ``target`` faces; a smaller mesh is returned as is."""
    if len(faces) <= target:
        return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int32)))
    ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(target), preservenormal=True,
                                                preservetopology=True, optimalplacement=True, qualitythr=0.3)
    ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    return m.vertex_matrix().astype(np.float64), m.face_matrix().astype(np.int64)


def _xatlas_main(args: list[str] | None = None) -> None:
    """The child process of :func:`unwrap`: mesh from the .npz ``args[0]``, atlas to the .npz ``args[1]``."""
    import sys

    import xatlas

    src, dst = (args or sys.argv[1:])[:2]
    with np.load(src) as d:
        verts, faces, size, padding = d["verts"], d["faces"], int(d["size"]), int(d["padding"])

    def generate(resolution: int):
        atlas = xatlas.Atlas()
        atlas.add_mesh(np.ascontiguousarray(verts, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
        pack = xatlas.PackOptions()
        pack.resolution, pack.padding, pack.bilinear = int(resolution), int(padding), True
        atlas.generate(pack_options=pack)
        return atlas

    atlas = generate(size)
    if atlas.atlas_count != 1:  # charts that do not fit one atlas of that size: one atlas of its own size
        atlas = generate(0)
    vmapping, indices, uvs = atlas.get_mesh(0)
    np.savez(dst, vmapping=vmapping.astype(np.int64), faces=indices.astype(np.int64), uv=uvs.astype(np.float64),
             charts=atlas.chart_count, width=atlas.width, height=atlas.height,
             utilization=float(np.mean(atlas.utilization)))


def unwrap(verts: np.ndarray, faces: np.ndarray, size: int, padding: int = 2, timeout_s: float = 3600
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """xatlas UV atlas of the mesh: (vmapping (V',) into ``verts``, faces (F, 3) into the new vertices,
    uv (V', 2) in [0, 1], stats). Run in a child process; a crash (xatlas segfaults on some perfectly
    symmetric meshes) is retried once on positions jittered by 1/20000 of the mesh's size (the UVs only:
    the exported positions stay exact), then becomes a StageError."""
    import os
    import subprocess
    import sys
    import tempfile

    verts = np.asarray(verts, dtype=np.float64)
    diag = float(np.linalg.norm(verts.max(0) - verts.min(0)))
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "from neus_stage.export import _xatlas_main; _xatlas_main()"
    with tempfile.TemporaryDirectory(prefix="neus_xatlas_") as tmp:
        src, dst = Path(tmp) / "mesh.npz", Path(tmp) / "atlas.npz"
        for attempt in range(2):
            pos = verts if attempt == 0 else verts + np.random.default_rng(0).normal(0, 5e-5 * diag, verts.shape)
            np.savez(src, verts=pos, faces=np.asarray(faces, dtype=np.int64), size=size, padding=padding)
            try:
                proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], env=env, capture_output=True,
                                      text=True, timeout=timeout_s)
                status, err = proc.returncode, proc.stderr.strip().splitlines()[-1:] or [""]
            except subprocess.TimeoutExpired:
                status, err = "timeout", [f"no result after {timeout_s:.0f} s"]
            if status == 0 and dst.is_file():
                with np.load(dst) as d:
                    stats = {"charts": int(d["charts"]), "atlas_size": [int(d["width"]), int(d["height"])],
                             "utilization": float(d["utilization"]), "attempts": attempt + 1}
                    return d["vmapping"], d["faces"], d["uv"], stats
            log.warning("xatlas failed on the mesh (exit status %s: %s)%s", status, err[0],
                        "; retrying with jittered positions" if attempt == 0 else "")
    raise StageError(f"xatlas could not unwrap the mesh ({len(faces)} faces; exit status {status}: {err[0]}); try "
                     "another face count (--faces / export.faces) or re-run the mesh stage")


# ------------------------------------------------------------------------------------------------ views
def dataset_views(dataset_dir: Path) -> tuple[list[str], np.ndarray, tuple[int, int]]:
    """The dataset's view names (image/ stems in sorted order), world_mats (N, 4, 4), (width, height)."""
    from .artifacts.dataset import read_cameras_sphere

    dataset_dir = Path(dataset_dir)
    images = sorted((dataset_dir / "image").glob("*.png"))
    if not images:
        raise StageError(f"{dataset_dir / 'image'}: no images; run the neus_dataset stage first")
    world_mats, _ = read_cameras_sphere(dataset_dir / "cameras_sphere.npz", n_views=len(images))
    with Image.open(images[0]) as im:
        size = im.size
    return [p.stem for p in images], world_mats, size


def read_view(dataset_dir: Path, name: str, world_mat: np.ndarray) -> View:
    """One dataset view: its image, its mask where the dataset has one (a scene without masks has none)."""
    dataset_dir = Path(dataset_dir)
    image = np.asarray(Image.open(dataset_dir / "image" / f"{name}.png").convert("RGB"))
    return View(world_mat, image, view_mask(dataset_dir, name))


def _iter_views(dataset_dir: Path, names: Sequence[str], world_mats: np.ndarray, progress: Progress
                ) -> Iterator[View]:
    for name, wm in zip(names, world_mats):
        yield read_view(dataset_dir, name, wm)
        progress.update()


def holdout_names(names: Sequence[str], every: int) -> list[str]:
    """Every ``every``-th view (0: none), starting with the middle one of the first block."""
    if every <= 0:
        return []
    return [n for i, n in enumerate(names) if i % every == every // 2]


# ------------------------------------------------------------------------------------------------ texture
def _texels(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, size: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Covered texels: their flat indices, world points, unit normals, face ids and barycentrics."""
    face_id, bary = rasterize_uv(uv, faces, size)
    flat = np.flatnonzero(face_id.ravel() >= 0)
    fid = face_id.ravel()[flat]
    b = bary.reshape(-1, 3)[flat]
    points = interpolate(verts, faces, fid, b)
    normals = interpolate(vertex_normals(verts, faces), faces, fid, b)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    return flat, points, normals, fid, b


def network_colors(checkpoint: Path, dataset_dir: Path, points: np.ndarray, normals: np.ndarray,
                   device: str = "auto", chunk: int = 1 << 16) -> np.ndarray:
    """The trained colour network's colour (N, 3) in [0, 1] at world points, seen head-on (along -normal)."""
    import torch

    from .artifacts.dataset import read_cameras_sphere
    from .mesh import _resolve_device

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: checkpoint not found; run the train stage first (texture from the network)")
    try:
        from .train.checkpoint import load_color_function

        device = _resolve_device(device)
        color = load_color_function(checkpoint, device)
    except (OSError, RuntimeError, KeyError, EOFError, NotImplementedError, ImportError) as exc:
        raise StageError(f"{checkpoint}: cannot load the colour network ({type(exc).__name__}: {exc}); re-run the "
                         "train stage, or bake the texture from the photos (--texture-from photos)") from exc
    _, scale_mat = read_cameras_sphere(Path(dataset_dir) / "cameras_sphere.npz")
    A, c = scale_mat[:3, :3], scale_mat[:3, 3]
    pts_n = np.linalg.solve(A, (points - c).T).T
    nrm_n = normals @ A  # the inverse transpose of A^-1: a normal stays a normal
    nrm_n /= np.maximum(np.linalg.norm(nrm_n, axis=1, keepdims=True), 1e-30)
    out = np.empty((len(points), 3), dtype=np.float32)
    with torch.no_grad(), Progress("colour network", len(points), "texels") as bar:
        for s in range(0, len(points), chunk):
            p = torch.as_tensor(pts_n[s:s + chunk], dtype=torch.float32, device=device)
            n = torch.as_tensor(nrm_n[s:s + chunk], dtype=torch.float32, device=device)
            out[s:s + chunk] = color(p, n).reshape(-1, 3).float().cpu().numpy()
            bar.update(len(p))
    return np.clip(out, 0, 1)


def bake_texture(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, size: int, *,
                 views: Sequence[View] | Iterator[View] | None = None, fallback: np.ndarray | None = None,
                 colors: np.ndarray | None = None, top_k: int = 3) -> tuple[np.ndarray, dict]:
    """The texture (S, S, 3) uint8 of a UV-mapped mesh and what went into it.

    Colours come from ``views`` (baked from the photos), or are given per covered texel as ``colors`` (in
    :func:`_texels`' order, e.g. from :func:`network_colors`). ``fallback`` (V, 3) uint8 vertex colours fill
    what no view sees.
    """
    flat, points, normals, fid, bary = _texels(verts, faces, uv, size)
    tex = np.zeros((size * size, 3), dtype=np.float32)
    valid = np.zeros(size * size, dtype=bool)
    stats: dict = {"texels_covered": int(len(flat)), "texels_share": len(flat) / float(size * size)}
    if views is not None:
        result = bake_colors(points, normals, views, verts, faces, top_k=top_k)
        tex[flat[result.seen]] = result.colors[result.seen]
        valid[flat[result.seen]] = True
        unseen = ~result.seen
        stats.update(seen_share=float(result.seen.mean()) if len(flat) else 0.0,
                     views_per_texel_median=float(np.median(result.n_views[result.seen])) if result.seen.any()
                     else 0.0, texels_per_view=result.views_used.tolist())
    else:
        tex[flat] = colors
        valid[flat] = True
        unseen = np.zeros(len(flat), dtype=bool)
        stats["seen_share"] = 1.0
    if unseen.any() and fallback is not None:
        tex[flat[unseen]] = interpolate(np.asarray(fallback, np.float64) / 255.0, faces, fid[unseen], bary[unseen])
        valid[flat[unseen]] = True
        stats["fallback"] = "vertex colours of the mesh (the colour network's)"
    elif unseen.any():
        stats["fallback"] = "filled from the neighbouring texels (the mesh has no vertex colours)"
    stats["unseen_share"] = float(unseen.mean()) if len(flat) else 0.0
    rings = max(2, size // 256)
    texture = fill_texture(tex.reshape(size, size, 3), valid.reshape(size, size), rings=rings)
    stats["padding_rings"] = rings
    return np.clip(np.rint(texture * 255), 0, 255).astype(np.uint8), stats


# ------------------------------------------------------------------------------------------------ writing
def _png_bytes(texture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def to_export_frame(verts: np.ndarray) -> np.ndarray:
    return np.asarray(verts, dtype=np.float64) @ WORLD_TO_EXPORT[:3, :3].T


def from_export_frame(verts: np.ndarray) -> np.ndarray:
    return np.asarray(verts, dtype=np.float64) @ WORLD_TO_EXPORT[:3, :3]


def write_obj(out_dir: Path, name: str, verts: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              normals: np.ndarray, texture_png: bytes) -> dict[str, Path]:
    """``name``.obj / .mtl / .png (vertices already in the export frame; ``uv`` in glTF convention)."""
    out_dir = Path(out_dir)
    mtl = (f"# neus-stage export: {name}\nnewmtl {name}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
           f"Ks 0.000 0.000 0.000\nd 1.0\nillum 1\nmap_Kd {name}.png\n")
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


def write_glb(path: Path, name: str, verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray,
              texture: np.ndarray) -> None:
    """A glTF 2.0 binary with one mesh, one PBR material (metallic 0, roughness 1) and the texture embedded
    as PNG (trimesh writes it; vertices already in the y-up export frame, ``uv`` in glTF convention)."""
    import trimesh

    material = trimesh.visual.material.PBRMaterial(name=name, baseColorTexture=Image.fromarray(texture),
                                                   metallicFactor=0.0, roughnessFactor=1.0)
    # trimesh keeps UVs in OBJ's convention (v up) and flips them when it writes glTF
    visual = trimesh.visual.TextureVisuals(uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), material=material)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_normals=normals, visual=visual, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name=name, geom_name=name)
    write_bytes_atomic(Path(path), scene.export(file_type="glb", include_normals=True))


def preview_image(views: Sequence[View], renders: Sequence[np.ndarray], height: int = 240) -> bytes:
    """JPEG: one row per view, the photo beside the textured mesh re-rendered from its camera."""
    rows = []
    for view, render in zip(views, renders):
        photo = np.asarray(view.image, dtype=np.uint8)
        r = np.clip(np.rint(render * 255), 0, 255).astype(np.uint8)
        pair = np.concatenate([photo, np.full((photo.shape[0], 8, 3), 255, np.uint8), r], 1)
        scale = height / pair.shape[0]
        rows.append(np.asarray(Image.fromarray(pair).resize((round(pair.shape[1] * scale), height),
                                                            Image.Resampling.LANCZOS)))
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- the stage
def export_textured(mesh_path: Path, dataset_dir: Path, out_dir: Path, *, name: str | None = None,
                    faces: int = 200_000, texture_size: int = 2048, texture_from: str = "photos",
                    checkpoint: Path | None = None, holdout_every: int = 0, top_k: int = 3,
                    device: str = "auto") -> dict:
    """The export stage: decimate, unwrap, bake, write GLB + OBJ/MTL/PNG, export.json and preview.jpg.

    ``holdout_every`` > 0 leaves every k-th view out of the texture, so that the PSNR of those views
    re-rendered from the textured mesh (in export.json) is measured on photos the texture never saw.
    """
    check_export_settings(faces, texture_size, texture_from)
    mesh_path, dataset_dir, out_dir = Path(mesh_path), Path(dataset_dir), Path(out_dir)
    name = name or mesh_path.parent.name
    if texture_from == "network" and checkpoint is None:
        raise StageError("--texture-from network needs --checkpoint (the trained neus/checkpoint.pt)")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(key: str, t: float) -> float:
        now = time.perf_counter()
        timings[key] = round(now - t, 2)
        return now

    verts0, faces0, colors0 = read_mesh(mesh_path)
    names, world_mats, (width, height) = dataset_views(dataset_dir)
    held = holdout_names(names, holdout_every)
    if held and len(held) >= len(names):
        raise StageError(f"--holdout-every {holdout_every} leaves no view for the texture; use 0 or a larger value")
    log.info("export: %s (%d faces) -> %d faces, %d^2 texture from the %s (%d views%s)", mesh_path, len(faces0),
             min(faces, len(faces0)), texture_size, texture_from, len(names) - len(held),
             f", {len(held)} held out" if held else "")
    t = time.perf_counter()
    verts, tris = decimate(verts0, faces0, faces)
    t = lap("decimate_s", t)
    log.info("decimated to %d faces, %d vertices in %.1f s", len(tris), len(verts), timings["decimate_s"])
    fallback = None
    if colors0 is not None:
        from scipy.spatial import cKDTree

        fallback = colors0[cKDTree(verts0).query(verts, k=1)[1]]
    normals = vertex_normals(verts, tris)

    padding = max(2, texture_size // 512)
    vmapping, uv_faces, uv, atlas = unwrap(verts, tris, texture_size, padding)
    verts_uv, normals_uv = verts[vmapping], normals[vmapping]
    fallback_uv = None if fallback is None else fallback[vmapping]
    t = lap("unwrap_s", t)
    log.info("xatlas: %d charts, atlas %dx%d, %.0f%% used, in %.1f s", atlas["charts"], *atlas["atlas_size"],
             100 * atlas["utilization"], timings["unwrap_s"])

    if texture_from == "photos":
        use = [(n, wm) for n, wm in zip(names, world_mats) if n not in held]
        with Progress("baking the texture", len(use), "views") as bar:
            texture, bake = bake_texture(verts_uv, uv_faces, uv, texture_size,
                                         views=_iter_views(dataset_dir, [n for n, _ in use],
                                                           np.stack([wm for _, wm in use]), bar),
                                         fallback=fallback_uv, top_k=top_k)
    else:
        _, points, nrm, _, _ = _texels(verts_uv, uv_faces, uv, texture_size)
        cols = network_colors(checkpoint, dataset_dir, points, nrm, device=device)
        texture, bake = bake_texture(verts_uv, uv_faces, uv, texture_size, colors=cols)
    t = lap("bake_s", t)
    log.info("texture: %.0f%% of the atlas covered, %.1f%% of the surface seen by a photo, in %.1f s",
             100 * bake["texels_share"], 100 * bake["seen_share"], timings["bake_s"])

    out_dir.mkdir(parents=True, exist_ok=True)
    v_exp = to_export_frame(verts_uv)
    n_exp = to_export_frame(normals_uv)
    png = _png_bytes(texture)
    paths = write_obj(out_dir, name, v_exp, uv_faces, uv, n_exp, png)
    paths["glb"] = out_dir / f"{name}.glb"
    write_glb(paths["glb"], name, v_exp, uv_faces, uv, n_exp, texture)
    t = lap("write_s", t)

    # how well the textured mesh reproduces the photos: held-out views where there are any, else a spread
    check = list(held) or [names[i] for i in np.unique(np.linspace(0, len(names) - 1, CHECK_VIEWS).round()
                                                       .astype(int))]
    psnr: dict[str, float] = {}
    shown: list[tuple[View, np.ndarray]] = []
    show = set(check[:: max(1, len(check) // PREVIEW_VIEWS)][:PREVIEW_VIEWS])
    for n in check:
        view = read_view(dataset_dir, n, world_mats[names.index(n)])
        render, hit = render_textured(verts_uv, uv_faces, uv, texture, view.world_mat, width, height)
        region = hit if view.mask is None else hit & view.mask
        psnr[n] = round(masked_psnr(render, view.image, region), 2)
        if n in show:
            shown.append((view, render))
    write_bytes_atomic(out_dir / "preview.jpg", preview_image([v for v, _ in shown], [r for _, r in shown]))
    lap("check_s", t)
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    vals = [v for v in psnr.values() if np.isfinite(v)]
    meta = {
        "mesh": str(mesh_path), "dataset": str(dataset_dir), "name": name,
        "files": {k: p.name for k, p in paths.items()},
        "faces_in": int(len(faces0)), "faces": int(len(uv_faces)), "vertices": int(len(verts_uv)),
        "target_faces": int(faces), "texture_size": int(texture_size), "texture_from": texture_from,
        "frame": {"description": "glTF y-up: (x, y, z) of the files = (x, z, -y) of the world frame, world units",
                  "world_to_export": WORLD_TO_EXPORT.tolist()},
        "atlas": {**atlas, "padding_texels": padding},
        "bake": {**bake, "top_k": top_k, "views": len(names) - len(held)},
        "held_out": held,
        "psnr": {"views": psnr, "mean": round(float(np.mean(vals)), 2) if vals else None,
                 "kind": "held-out views (not used for the texture)" if held else
                 "views used for the texture (not held out)",
                 "region": "pixels inside the view's mask where the mesh is hit" if dataset_has_masks(dataset_dir)
                 else "pixels where the mesh is hit"},
        "preview": {"file": "preview.jpg", "views": [v for v in check if v in show]},
        "timings": timings,
    }
    write_report(out_dir / "export.json", meta)
    log.info("export: %s and %s (%d faces, %d^2 texture); re-rendered %s: PSNR %s dB, in %.1f s", paths["glb"],
             paths["obj"], len(uv_faces), texture_size, meta["psnr"]["kind"], meta["psnr"]["mean"],
             timings["total_s"])
    return meta


def dataset_has_masks(dataset_dir: Path) -> bool:
    return any((Path(dataset_dir) / "mask").glob("*.png"))
