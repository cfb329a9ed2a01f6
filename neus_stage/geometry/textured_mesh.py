"""A mesh made into a textured one: decimated, UV-unwrapped, its texture baked; arrays in, arrays out.

- :func:`decimate`: pymeshlab's quadric edge collapse to a face count (normals and topology preserved).
- :func:`unwrap`: an xatlas UV atlas, computed in a child process (xatlas can crash outright on degenerate
  input, and a crash must become a message, not a dead stage; the mesh goes there and back through a
  temporary folder).
- :func:`atlas_texels`: the texels the atlas covers, with their surface points and normals.
- :func:`bake_texture`: the texture of those texels from photos (:func:`neus_stage.geometry.texture.bake_colors`)
  or given colours, vertex colours where no photo sees the surface, the seams padded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import StageError
from .mesh_tools import vertex_normals
from .texture import View, bake_colors, fill_texture, interpolate, rasterize_uv

log = logging.getLogger(__name__)


def decimate(verts: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation (pymeshlab) to ``target`` faces; a smaller mesh is returned as is."""
    if len(faces) <= target:
        return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int32)))
    ms.meshing_decimation_quadric_edge_collapse(
        targetfacenum=int(target), preservenormal=True, preservetopology=True, optimalplacement=True, qualitythr=0.3
    )
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
    np.savez(
        dst,
        vmapping=vmapping.astype(np.int64),
        faces=indices.astype(np.int64),
        uv=uvs.astype(np.float64),
        charts=atlas.chart_count,
        width=atlas.width,
        height=atlas.height,
        utilization=float(np.mean(atlas.utilization)),
    )


def _child_env() -> dict[str, str]:
    """The environment of the xatlas child: this one, with the package importable."""
    import os

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def unwrap(
    verts: np.ndarray, faces: np.ndarray, size: int, padding: int = 2, timeout_s: float = 3600
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """xatlas UV atlas of the mesh: (vmapping (V',) into ``verts``, faces (F, 3) into the new vertices,
    uv (V', 2) in [0, 1], stats). Run in a child process; a crash (xatlas segfaults on some perfectly
    symmetric meshes) is retried once on positions jittered by 1/20000 of the mesh's size (the UVs only:
    the exported positions stay exact), then becomes a StageError."""
    import subprocess
    import sys
    import tempfile

    verts = np.asarray(verts, dtype=np.float64)
    diag = float(np.linalg.norm(verts.max(0) - verts.min(0)))
    env = _child_env()
    code = "from neus_stage.geometry.textured_mesh import _xatlas_main; _xatlas_main()"
    with tempfile.TemporaryDirectory(prefix="neus_xatlas_") as tmp:
        src, dst = Path(tmp) / "mesh.npz", Path(tmp) / "atlas.npz"
        for attempt in range(2):
            pos = verts if attempt == 0 else verts + np.random.default_rng(0).normal(0, 5e-5 * diag, verts.shape)
            np.savez(src, verts=pos, faces=np.asarray(faces, dtype=np.int64), size=size, padding=padding)
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", code, str(src), str(dst)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                )
                status, err = proc.returncode, proc.stderr.strip().splitlines()[-1:] or [""]
            except subprocess.TimeoutExpired:
                status, err = "timeout", [f"no result after {timeout_s:.0f} s"]
            if status == 0 and dst.is_file():
                with np.load(dst) as d:
                    stats = {
                        "charts": int(d["charts"]),
                        "atlas_size": [int(d["width"]), int(d["height"])],
                        "utilization": float(d["utilization"]),
                        "attempts": attempt + 1,
                    }
                    return d["vmapping"], d["faces"], d["uv"], stats
            log.warning(
                "xatlas failed on the mesh (exit status %s: %s)%s",
                status,
                err[0],
                "; retrying with jittered positions" if attempt == 0 else "",
            )
    raise StageError(
        f"xatlas could not unwrap the mesh ({len(faces)} faces; exit status {status}: {err[0]}); try "
        "another face count (--faces / export.faces) or re-run the mesh stage"
    )


def atlas_texels(
    verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Covered texels of a ``size``^2 texture: their flat indices, world points, unit normals, face ids and
    barycentrics."""
    face_id, bary = rasterize_uv(uv, faces, size)
    flat = np.flatnonzero(face_id.ravel() >= 0)
    fid = face_id.ravel()[flat]
    b = bary.reshape(-1, 3)[flat]
    points = interpolate(verts, faces, fid, b)
    normals = interpolate(vertex_normals(verts, faces), faces, fid, b)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    return flat, points, normals, fid, b


def _photo_colors(
    points: np.ndarray,
    normals: np.ndarray,
    views: Sequence[View] | Iterator[View],
    verts: np.ndarray,
    faces: np.ndarray,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Texel colours baked from the photos, which texels some photo sees, and the baking's statistics."""
    result = bake_colors(points, normals, views, verts, faces, top_k=top_k)
    stats = {
        "seen_share": float(result.seen.mean()) if len(points) else 0.0,
        "views_per_texel_median": float(np.median(result.n_views[result.seen])) if result.seen.any() else 0.0,
        "texels_per_view": result.views_used.tolist(),
    }
    return result.colors, result.seen, stats


def bake_texture(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    size: int,
    *,
    views: Sequence[View] | Iterator[View] | None = None,
    fallback: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    top_k: int = 3,
) -> tuple[np.ndarray, dict]:
    """The texture (S, S, 3) uint8 of a UV-mapped mesh and what went into it.

    Colours come from ``views`` (baked from the photos), or are given per covered texel as ``colors`` (in
    :func:`atlas_texels`' order, e.g. from the colour network). ``fallback`` (V, 3) uint8 vertex colours fill
    what no view sees.
    """
    flat, points, normals, fid, bary = atlas_texels(verts, faces, uv, size)
    tex = np.zeros((size * size, 3), dtype=np.float32)
    valid = np.zeros(size * size, dtype=bool)
    stats: dict = {"texels_covered": int(len(flat)), "texels_share": len(flat) / float(size * size)}
    if views is not None:
        texel_colors, seen, bake_stats = _photo_colors(points, normals, views, verts, faces, top_k)
        stats.update(bake_stats)
    else:
        texel_colors, seen = np.asarray(colors), np.ones(len(flat), dtype=bool)
        stats["seen_share"] = 1.0
    tex[flat[seen]] = texel_colors[seen]
    valid[flat[seen]] = True
    unseen = ~seen
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
