"""Mesh extraction: marching cubes on a signed distance function, cleaning, and DTU-style mask culling.

``extract_mesh`` is a pure function of a callable (as in neuralangelo), so it is tested on analytic SDFs:
the SDF is sampled block by block (chunked queries under ``torch.no_grad``, a progress bar over blocks)
into one float32 grid, and marching cubes runs once on that grid. One grid (0.5 GB at 512^3, 4 GB at
1024^3) is seamless by construction; per-block marching cubes would need vertex welding across block
faces, and a network queried in different batches can return values that differ in the last bits on the
shared faces, which breaks the welding. Blocks that lie wholly outside the (dilated) visual hull are not
queried at all, which is where the time goes: marching cubes on a ready 512^3 grid takes about a second,
the network queries minutes.

Where the object ends: under an object standing on a surface no camera looks, so a trained SDF keeps the
visual hull's cone there. With the support plane that the visual-hull stage recorded in bbox.json, the
sampled SDF is intersected with the half-space above the plane before marching cubes (the base becomes a
flat cap half a voxel below the plane); without one, the clean mesh loses the regions no camera observes
(:mod:`neus_stage.geometry.visibility`). ``cut_at_support=False`` keeps the raw extent.

Sign convention: negative inside, positive outside. Triangles are wound so that their normals point
toward positive SDF (out of the object): a closed surface has positive signed volume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .artifacts.box import read_bbox, read_hull, read_support
from .artifacts.dataset import dataset_masks
from .artifacts.meshes import check_mesh_path, write_mesh
from .artifacts.reports import write_report
from .errors import StageError
from .progress import track

log = logging.getLogger(__name__)

SdfFunc = Callable[[torch.Tensor], torch.Tensor]
"""Points (N,3) float32 -> SDF values (N,) (negative inside)."""

FILL_VALUE = 1.0
"""SDF value written where a block is skipped (outside the object: any positive value does)."""

LARGE_GRID = 1024**3
"""Grids above this many samples (4 GB of float32) are logged as a memory warning."""


class EmptySurfaceError(StageError):
    """The SDF has no zero crossing in the box (training failed or the box is wrong)."""


# ------------------------------------------------------------------------------------------- grid
def grid_layout(bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: int
                ) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Sample layout over a box: (shape, origin (3,), spacing).

    ``resolution`` samples span the longest side exactly; the other sides get the same spacing and as
    many samples as cover them, centred on the box (so they overhang it by less than half a voxel).
    """
    lo = np.asarray(bounds_min, dtype=np.float64).reshape(3)
    hi = np.asarray(bounds_max, dtype=np.float64).reshape(3)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise StageError(f"the extraction box is invalid (min {lo.tolist()}, max {hi.tolist()}): "
                         "need min < max on every axis")
    if int(resolution) < 8:
        raise StageError(f"mesh resolution {resolution} is too small: "
                         "give at least 8 samples along the longest side")
    extent = hi - lo
    spacing = float(extent.max() / (int(resolution) - 1))
    n = np.maximum(2, np.ceil(extent / spacing - 1e-6).astype(int) + 1)
    n[np.argmax(extent)] = int(resolution)
    origin = (lo + hi) / 2 - (n - 1) * spacing / 2
    return (int(n[0]), int(n[1]), int(n[2])), origin, spacing


def _dilate(occupancy: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(occupancy, structure=np.ones((3, 3, 3), dtype=bool))


def _block_occupied(occ: np.ndarray, occ_min: np.ndarray, occ_voxel: np.ndarray,
                    lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether any voxel of ``occ`` (over a box starting at occ_min) meets the region [lo, hi]."""
    r = np.asarray(occ.shape)
    i0 = np.floor((lo - occ_min) / occ_voxel).astype(int)
    i1 = np.floor((hi - occ_min) / occ_voxel).astype(int)
    if np.any(i1 < 0) or np.any(i0 >= r):  # the block lies outside the occupancy box: empty
        return False
    i0, i1 = np.clip(i0, 0, r - 1), np.clip(i1, 0, r - 1)
    return bool(occ[i0[0]: i1[0] + 1, i0[1]: i1[1] + 1, i0[2]: i1[2] + 1].any())


def sample_sdf_grid(sdf_func: SdfFunc, bounds_min: Sequence[float], bounds_max: Sequence[float],
                    resolution: int, *, block: int = 128, occupancy: np.ndarray | None = None,
                    occupancy_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                    chunk: int = 2**15, device: str = "cpu", coarse: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """Sample ``sdf_func`` on the grid of ``grid_layout``: (grid float32 [ix,iy,iz], origin, spacing, stats).

    Blocks of ``block``^3 samples whose region meets no voxel of ``occupancy`` (dilated by one voxel)
    are filled with a positive value instead of being queried; samples outside the occupancy box count
    as empty. The occupancy grid must be solid (a visual hull: object interior included), not a shell
    around the surface, or skipped interior blocks would turn into spurious inner surfaces.

    ``coarse`` > 1 samples every ``coarse``-th point first and queries the full grid only in the coarse
    cells the surface can reach: a sign change, or a corner closer to zero than 1.5 cell diagonals (an SDF
    changes by at most the distance, and the eikonal loss keeps a trained one close to that). The other
    cells get the coarse values interpolated, which have no zero crossing there, so marching cubes
    returns the same mesh for a fraction of the queries (tests/test_mesh.py).
    """
    shape, origin, spacing = grid_layout(bounds_min, bounds_max, resolution)
    if block < 2:
        raise StageError(f"block size {block} is too small: give at least 2")
    if coarse < 1:
        raise StageError(f"coarse step {coarse} is invalid: give 1 (query every sample) or more")
    n_samples = shape[0] * shape[1] * shape[2]
    if n_samples > LARGE_GRID:
        log.warning("the SDF grid %s holds %.1f G samples (%.1f GB): lower --resolution if memory runs out",
                    shape, n_samples / 1e9, n_samples * 4 / 1e9)
    occ = None
    if occupancy is not None:
        occ = np.asarray(occupancy, dtype=bool)
        if occ.ndim != 3:
            raise StageError(f"the occupancy grid must be 3-D, got shape {occ.shape}")
        ob = occupancy_bounds if occupancy_bounds is not None else (bounds_min, bounds_max)
        occ_min = np.asarray(ob[0], dtype=np.float64).reshape(3)
        occ_voxel = (np.asarray(ob[1], dtype=np.float64).reshape(3) - occ_min) / np.asarray(occ.shape)
        if not np.all(occ_voxel > 0):
            raise StageError(f"the occupancy box is invalid (min {occ_min.tolist()}, max {ob[1]})")
        if not occ.any():
            log.warning("the occupancy grid is empty: every block would be skipped, so it is ignored")
            occ = None
        else:
            occ = (_dilate(occ), occ_min, occ_voxel)
    if coarse == 1:
        grid, stats = _sample_blocks(sdf_func, shape, origin, spacing, block, occ, chunk, device)
    else:
        grid, stats = _sample_coarse_to_fine(sdf_func, shape, origin, spacing, coarse, block, occ, chunk, device)
    if not np.all(np.isfinite(grid)):
        bad = int((~np.isfinite(grid)).sum())
        raise StageError(f"the SDF returned {bad} non-finite values (NaN/inf): "
                         "the network diverged during training")
    log.info("sampled the SDF on a %dx%dx%d grid (voxel %.4g): %d of %d blocks queried, %.1f%% of the samples",
             *shape, spacing, stats["blocks"] - stats["blocks_skipped"], stats["blocks"],
             100.0 * stats["samples_queried"] / n_samples)
    return grid, origin, spacing, stats


def _query(sdf_func: SdfFunc, pts: torch.Tensor, chunk: int, progress: bool = False) -> np.ndarray:
    values = torch.empty(pts.shape[0], dtype=torch.float32, device="cpu")
    starts = range(0, pts.shape[0], chunk)
    for s in (track(starts, "SDF near the surface", unit="chunks") if progress else starts):
        values[s: s + chunk] = torch.as_tensor(sdf_func(pts[s: s + chunk])).reshape(-1).float().cpu()
    return values.numpy()


def _sample_blocks(sdf_func: SdfFunc, shape: tuple[int, int, int], origin: np.ndarray, spacing: float,
                   block: int, occ: tuple | None, chunk: int, device: str) -> tuple[np.ndarray, dict]:
    """Every sample of the lattice origin + spacing * index, block by block, skipping empty blocks."""
    grid = np.full(shape, FILL_VALUE, dtype=np.float32)
    starts = [range(0, s, block) for s in shape]
    blocks = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    axes = [origin[k] + spacing * np.arange(shape[k]) for k in range(3)]
    stats = {"blocks": len(blocks), "blocks_skipped": 0, "samples_queried": 0}
    with torch.no_grad():
        for i0, j0, k0 in track(blocks, "SDF grid", unit="blocks"):
            sl = (slice(i0, min(i0 + block, shape[0])), slice(j0, min(j0 + block, shape[1])),
                  slice(k0, min(k0 + block, shape[2])))
            xs, ys, zs = (axes[k][sl[k]] for k in range(3))
            if occ is not None:
                lo = np.array([xs[0], ys[0], zs[0]])
                hi = np.array([xs[-1], ys[-1], zs[-1]])
                if not _block_occupied(*occ, lo, hi):
                    stats["blocks_skipped"] += 1
                    continue
            pts = torch.stack(torch.meshgrid(
                *(torch.as_tensor(a, dtype=torch.float32, device=device) for a in (xs, ys, zs)),
                indexing="ij"), dim=-1).reshape(-1, 3)
            stats["samples_queried"] += int(pts.shape[0])
            grid[sl] = _query(sdf_func, pts, chunk).reshape(len(xs), len(ys), len(zs))
    return grid, stats


def _sample_coarse_to_fine(sdf_func: SdfFunc, shape: tuple[int, int, int], origin: np.ndarray, spacing: float,
                           c: int, block: int, occ: tuple | None, chunk: int, device: str
                           ) -> tuple[np.ndarray, dict]:
    cells = [-(-(s - 1) // c) for s in shape]  # coarse cells per axis (the lattice may overhang the grid)
    cgrid, stats = _sample_blocks(sdf_func, tuple(k + 1 for k in cells), origin, spacing * c,
                                  max(2, block // c), occ, chunk, device)
    corners = [cgrid[i:i + cells[0], j:j + cells[1], k:k + cells[2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
    near = (lo <= 0) & (hi >= 0) | (np.minimum(np.abs(lo), np.abs(hi)) < 1.5 * c * spacing * np.sqrt(3.0))
    query = near
    for ax in range(3):  # fine samples of the near cells, their shared faces included
        rep = np.repeat(query, c, axis=ax)
        pad = [(0, 0)] * 3
        pad[ax] = (0, 1)
        query = np.pad(rep, pad)
        pad[ax] = (1, 0)
        query |= np.pad(rep, pad)
    query = query[: shape[0], : shape[1], : shape[2]]
    fine = torch.nn.functional.interpolate(torch.from_numpy(cgrid)[None, None], size=tuple(k * c + 1 for k in cells),
                                           mode="trilinear", align_corners=True)[0, 0]
    grid = np.ascontiguousarray(fine[: shape[0], : shape[1], : shape[2]].numpy())
    del fine
    idx = np.nonzero(query)
    with torch.no_grad():
        pts = torch.from_numpy(origin + spacing * np.stack(idx, -1)).float().to(device)
        grid[idx] = _query(sdf_func, pts, chunk, progress=True)
    stats["samples_queried"] += int(len(idx[0]))
    stats["coarse"] = c
    return grid, stats


def marching_cubes_grid(grid: np.ndarray, origin: np.ndarray, spacing: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of a sampled SDF: (verts (V,3) float64 in the grid's frame, faces (F,3) int64),
    wound outward."""
    from skimage.measure import marching_cubes

    vmin, vmax = float(grid.min()), float(grid.max())
    if vmin > 0:
        raise EmptySurfaceError(
            f"the surface is empty: the SDF is positive everywhere in the box (minimum {vmin:.4g}); "
            "training failed or the box is wrong")
    if vmax < 0:
        raise EmptySurfaceError(
            f"the surface is empty: the SDF is negative everywhere in the box (maximum {vmax:.4g}); "
            "training failed or the box is wrong (it lies inside the object)")
    boundary = min(float(grid[[0, -1]].min()), float(grid[:, [0, -1]].min()),
                   float(grid[:, :, [0, -1]].min()))
    if boundary < 0:
        log.warning("the surface reaches the box boundary: the mesh is open there (enlarge the box)")
    try:
        # skimage's "descent" winding puts the normals toward increasing values: out of an SDF's object.
        verts, faces, _, _ = marching_cubes(grid, level=0.0, spacing=(spacing,) * 3,
                                            gradient_direction="descent")
    except (RuntimeError, ValueError) as exc:
        raise EmptySurfaceError(
            f"the surface is empty: marching cubes found no zero crossing ({exc})") from exc
    return verts.astype(np.float64) + np.asarray(origin, dtype=np.float64), faces.astype(np.int64)


def extract_mesh(sdf_func: SdfFunc, bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: int,
                 *, block: int = 128, occupancy: np.ndarray | None = None,
                 occupancy_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 chunk: int = 2**15, device: str = "cpu", coarse: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the zero level set of ``sdf_func`` inside [bounds_min, bounds_max].

    ``resolution`` samples span the longest side of the box (the others proportional, same spacing).
    ``occupancy`` (bool (R,R,R), indexed [ix,iy,iz], over ``occupancy_bounds``, default the box) lets
    blocks outside it be skipped; ``coarse`` > 1 queries the full grid only near the surface (see
    ``sample_sdf_grid``). Returns (verts (V,3) float64 in the box's frame, faces (F,3) int64),
    wound outward. Raises EmptySurfaceError when the SDF has no zero crossing in the box.
    """
    grid, origin, spacing, _ = sample_sdf_grid(sdf_func, bounds_min, bounds_max, resolution, block=block,
                                               occupancy=occupancy, occupancy_bounds=occupancy_bounds,
                                               chunk=chunk, device=device, coarse=coarse)
    return marching_cubes_grid(grid, origin, spacing)


# -------------------------------------------------------------------------------------- mesh tools
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
    t = verts[faces]
    fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    idx = faces.reshape(-1)
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=len(verts))
                   for k in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices: (verts, faces, index of each kept vertex in the input)."""
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    index = np.flatnonzero(used)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[index] = np.arange(len(index))
    return verts[index], remap[faces].reshape(-1, 3), index


def _clean(verts: np.ndarray, faces: np.ndarray, min_component: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """clean_mesh plus the index of each output vertex in the input (to carry per-vertex data)."""
    import pymeshlab
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int32)
    if len(faces) == 0:
        return verts[:0], faces[:0].astype(np.int64), np.zeros(0, dtype=np.int64)
    ms = pymeshlab.MeshSet()
    # the input index rides along as vertex quality, so that colours can follow the surviving vertices
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=verts, face_matrix=faces,
                               v_scalar_array=np.arange(len(verts), dtype=np.float64)))
    ms.meshing_remove_duplicate_vertices()
    ms.meshing_remove_duplicate_faces()
    ms.meshing_remove_null_faces()
    ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    v = np.asarray(m.vertex_matrix(), dtype=np.float64)
    f = np.asarray(m.face_matrix(), dtype=np.int64)
    index = np.rint(m.vertex_scalar_array()).astype(np.int64)
    if len(f) and min_component > 0:
        # connected components through shared vertices; keep those with >= min_component * largest faces
        n = len(v)
        rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
        n_comp, labels = connected_components(graph, directed=False)
        face_label = labels[f[:, 0]]
        sizes = np.bincount(face_label, minlength=n_comp)
        keep = sizes[face_label] >= min_component * sizes.max()
        log.info("cleaning: %d connected parts, kept %d (%d of %d faces)", n_comp,
                 int((sizes >= min_component * sizes.max()).sum()), int(keep.sum()), len(f))
        f = f[keep]
    v, f, kept = _compact(v, f)
    return v, f, index[kept]


def clean_mesh(verts: np.ndarray, faces: np.ndarray, *, min_component: float = 0.05
               ) -> tuple[np.ndarray, np.ndarray]:
    """Remove duplicate vertices and faces, zero-area faces, unreferenced vertices (pymeshlab), and the
    connected parts with fewer faces than ``min_component`` times the largest part's."""
    v, f, _ = _clean(verts, faces, min_component)
    return v, f


def _cull_keep(verts_world: np.ndarray, world_mats: np.ndarray, masks: Sequence[np.ndarray], dilation: int
               ) -> np.ndarray:
    """Per-vertex keep flags of the DTU mask culling."""
    from scipy.ndimage import distance_transform_edt

    verts_world = np.asarray(verts_world, dtype=np.float64)
    world_mats = np.asarray(world_mats, dtype=np.float64)
    if len(world_mats) != len(masks):
        raise StageError(f"mask culling got {len(world_mats)} cameras but {len(masks)} masks")
    keep = np.ones(len(verts_world), dtype=bool)
    homo = np.concatenate([verts_world, np.ones((len(verts_world), 1))], axis=1)
    for wm, mask in zip(world_mats, masks, strict=True):
        fg = np.asarray(mask) > 0
        if fg.ndim == 3:
            fg = fg.any(axis=2)
        if dilation > 0:  # foreground dilated by a disk of radius `dilation` px (skimage disk(r) == EDT <= r)
            fg = distance_transform_edt(~fg) <= dilation if fg.any() else fg
        h, w = fg.shape
        p = homo @ wm[:3, :4].T
        z = p[:, 2]
        front = z > 1e-9
        u = np.full(len(p), -1.0)
        v = np.full(len(p), -1.0)
        u[front] = p[front, 0] / z[front]
        v[front] = p[front, 1] / z[front]
        # pixel centres at integer coordinates (NeuS rays); inside = within the pixel-centre span
        inside = front & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        ui = np.rint(u[inside]).astype(np.int64)
        vi = np.rint(v[inside]).astype(np.int64)
        on_fg = np.ones(len(p), dtype=bool)
        on_fg[inside] = fg[vi, ui]
        keep &= on_fg
    return keep


def cull_by_masks(verts_world: np.ndarray, faces: np.ndarray, world_mats: np.ndarray,
                  masks: Sequence[np.ndarray], *, dilation: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """DTU-protocol culling: drop every vertex that projects, in a view whose image it falls in, onto
    background (the foreground dilated by a disk of ``dilation`` px); keep the faces whose three vertices
    survive; drop unreferenced vertices. ``world_mats`` (N,4,4) map world -> pixel; ``masks`` N (H,W)
    arrays, non-zero = foreground."""
    keep = _cull_keep(verts_world, world_mats, masks, dilation)
    faces = np.asarray(faces, dtype=np.int64)
    v, f, _ = _compact(np.asarray(verts_world, dtype=np.float64), faces[keep[faces].all(axis=1)])
    return v, f


# ----------------------------------------------------------------------------------------- stage
def _resolve_device(device: str) -> str:
    from .train.device import pick_device

    return str(pick_device(device))


def _image_size(dataset_dir: Path, masks: list[np.ndarray]) -> tuple[int, int]:
    """(width, height) of the dataset's views: its masks', else its first image's."""
    if masks:
        return int(masks[0].shape[1]), int(masks[0].shape[0])
    from PIL import Image

    images = sorted((Path(dataset_dir) / "image").glob("*.png"))
    if not images:
        raise StageError(f"{Path(dataset_dir) / 'image'}: no images to size the views for the visibility cull")
    with Image.open(images[0]) as im:
        return im.size


def _load_fields(checkpoint: Path, device: str) -> tuple[SdfFunc, Callable | None]:
    """The trained SDF (and the colour function where the trainer provides one)."""
    import pickle

    from .train.checkpoint import load_fields

    try:
        sdf, color = load_fields(checkpoint, device)
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise StageError(f"{checkpoint}: cannot load the trained model ({type(exc).__name__}: {exc}); "
                         "re-run the train stage") from exc
    if color is None:
        log.info("no vertex colours: the trained field has no colour network")
    return sdf, color


def _vertex_colors(color_func: Callable, verts: np.ndarray, faces: np.ndarray, device: str,
                   chunk: int = 2**16) -> np.ndarray | None:
    normals = vertex_normals(verts, faces)
    out = np.empty((len(verts), 3), dtype=np.float32)
    try:
        with torch.no_grad():
            for s in range(0, len(verts), chunk):
                p = torch.as_tensor(verts[s: s + chunk], dtype=torch.float32, device=device)
                n = torch.as_tensor(normals[s: s + chunk], dtype=torch.float32, device=device)
                out[s: s + chunk] = torch.as_tensor(color_func(p, n)).reshape(-1, 3).float().cpu().numpy()
    except NotImplementedError as exc:
        log.info("no vertex colours: %s", exc or "the colour function is not implemented")
        return None
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _mesh_info(verts: np.ndarray, faces: np.ndarray) -> dict:
    return {"vertices": int(len(verts)), "faces": int(len(faces)), **edge_stats(faces)}


def mesh_from_checkpoint(checkpoint: Path, dataset_dir: Path, bbox_path: Path, out_path: Path, *,
                         clean_path: Path | None = None, hull_path: Path | None = None, resolution: int = 512,
                         block: int = 128, dilation: int = 12, min_component: float = 0.05,
                         device: str = "auto", coarse: int = 4, cut_at_support: bool = True,
                         visibility_min_cos: float = 0.1) -> dict:
    """The mesh stage: marching cubes on a trained SDF over the bbox, written in world units.

    Writes ``out_path`` (the raw mesh), ``clean_path`` where given (mask-culled with ``dilation``, then
    cleaned of small parts) and ``<out_path stem>.json`` (parameters, counts, timings), which is also
    returned as a dict. Meshes are written in the format their extension names (.ply or .obj).

    With ``cut_at_support``, the object ends where bbox.json says it ends: on a support plane the SDF is
    intersected with the half-space above it (half a voxel below the plane), so the base is a flat cap,
    not the visual hull's cone; without a plane the clean mesh loses the regions no camera observes
    (``visibility_min_cos``: the grazing limit), and mesh.json records the area removed.
    """
    from .artifacts.dataset import read_cameras_sphere

    t_start = time.perf_counter()
    checkpoint, dataset_dir, bbox_path, out_path = map(Path, (checkpoint, dataset_dir, bbox_path, out_path))
    check_mesh_path(out_path, "--out")
    if clean_path is not None:
        check_mesh_path(clean_path, "--clean")
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: checkpoint not found; run the train stage first")
    cameras = dataset_dir / "cameras_sphere.npz"
    world_mats, scale_mat = read_cameras_sphere(cameras)
    bmin, bmax = read_bbox(bbox_path)
    support = read_support(bbox_path)
    if cut_at_support and support["plane"] is not None:
        # the flat cap lies half a voxel below the plane, which may be the hull's lowest face: two voxels of
        # room all round keep the cap inside the grid (the half-space leaves no surface below it)
        pad = 2.0 * float((bmax - bmin).max()) / max(int(resolution) - 1, 1)
        bmin, bmax = bmin - pad, bmax + pad
    occupancy = None
    if hull_path is not None:
        occ, omin, omax = read_hull(hull_path)
        occupancy = (occ, (omin, omax))
    device = _resolve_device(device)
    log.info("mesh: %s on %s, resolution %d, box %s .. %s", checkpoint, device, resolution,
             np.round(bmin, 4).tolist(), np.round(bmax, 4).tolist())

    timings: dict[str, float] = {}
    t = time.perf_counter()
    sdf_func, color_func = _load_fields(checkpoint, device)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    grid, origin, spacing, grid_stats = sample_sdf_grid(
        sdf_func, bmin, bmax, resolution, block=block,
        occupancy=None if occupancy is None else occupancy[0],
        occupancy_bounds=None if occupancy is None else occupancy[1], device=device, coarse=coarse)
    timings["sdf_grid"] = time.perf_counter() - t
    support_meta: dict = {"method": support["method"], "cut_at_support": bool(cut_at_support),
                          "bbox_message": support["message"], "cut": False}
    if cut_at_support and support["plane"] is not None:
        from .geometry.halfspace import cut_sdf_grid

        # the flat cap half a voxel below the plane, plus the fit's own uncertainty up to another half voxel:
        # never more than one voxel below it (a larger margin only grows a skirt nothing observed)
        margin = min(support["margin"], 0.5 * spacing) + 0.5 * spacing
        grid, changed = cut_sdf_grid(grid, origin, spacing, support["plane"], margin)
        scale_w = float(abs(np.linalg.det(scale_mat[:3, :3])) ** (1 / 3))
        support_meta.update(cut=True, how="SDF intersected with the half-space above the support plane",
                            plane_normalized={"normal": support["plane"].normal.tolist(),
                                              "offset": support["plane"].offset},
                            margin_normalized=margin, margin_world=margin * scale_w, grid_samples_cut=changed)
        log.info("support plane: the SDF is cut %.3g world units below the plane (%d grid samples changed)",
                 margin * scale_w, changed)
    elif not cut_at_support:
        support_meta["how"] = "not cut (cut_at_support: false): the raw extent"
    t = time.perf_counter()
    try:
        verts_n, faces = marching_cubes_grid(grid, origin, spacing)
    except EmptySurfaceError as exc:
        raise EmptySurfaceError(f"{checkpoint}: {exc} (box from {bbox_path})") from exc
    shape = grid.shape
    del grid
    timings["marching_cubes"] = time.perf_counter() - t
    log.info("marching cubes: %d vertices, %d faces in %.1f s", len(verts_n), len(faces),
             timings["marching_cubes"])

    colors = None
    if color_func is not None:
        t = time.perf_counter()
        colors = _vertex_colors(color_func, verts_n, faces, device)
        timings["colors"] = time.perf_counter() - t

    A, c = scale_mat[:3, :3], scale_mat[:3, 3]
    verts_w = verts_n @ A.T + c
    if np.linalg.det(A) < 0:  # a mirroring scale_mat would turn the mesh inside out
        faces = faces[:, ::-1].copy()
    write_mesh(out_path, verts_w, faces, colors)
    scale = float(abs(np.linalg.det(A)) ** (1 / 3))
    meta: dict = {
        "checkpoint": str(checkpoint), "dataset": str(dataset_dir), "bbox": str(bbox_path),
        "hull": None if hull_path is None else str(hull_path), "device": device,
        "resolution": int(resolution), "block": int(block), "grid_shape": list(shape),
        "voxel_size_normalized": spacing, "voxel_size_world": spacing * scale,
        "box_normalized": {"min": bmin.tolist(), "max": bmax.tolist()},
        "scale_mat": scale_mat.tolist(), **{f"grid_{k}": v for k, v in grid_stats.items()},
        "colors": colors is not None, "dilation": int(dilation), "min_component": float(min_component),
        "mesh": {"path": str(out_path), **_mesh_info(verts_w, faces)},
    }

    if clean_path is not None:
        t = time.perf_counter()
        masks = dataset_masks(dataset_dir, len(world_mats))
        if masks:
            keep = _cull_keep(verts_w, world_mats, masks, dilation)
            log.info("mask culling (dilation %d px): kept %d of %d vertices", dilation, int(keep.sum()),
                     len(keep))
        else:  # a scene trained without masks (use_mask=false): clean it without culling
            log.warning("%s: no masks, so the clean mesh is not mask-culled (small parts are still removed)",
                        dataset_dir / "mask")
            keep = np.ones(len(verts_w), dtype=bool)
        meta["mask_culled"] = bool(masks)
        face_keep = keep[faces].all(axis=1)
        if cut_at_support and support["method"] == "visibility":
            from .geometry.visibility import visibility_cull

            t_vis = time.perf_counter()
            seen_keep, vis = visibility_cull(verts_w, faces, world_mats[:, :3, :4], _image_size(dataset_dir, masks),
                                             min_cos=visibility_min_cos)
            face_keep &= seen_keep
            support_meta.update(cut=vis["faces_removed"] > 0,
                                how="regions no camera observes removed from the clean mesh (no support plane)",
                                visibility=vis, visibility_s=round(time.perf_counter() - t_vis, 2))
            log.info("visibility cull (no support plane: %s): removed %d faces, %.4g world units^2 (%.1f%% of the "
                     "area)", support.get("reason") or support["message"], vis["faces_removed"], vis["area_removed"],
                     100 * vis["area_removed_share"])
        f = faces[face_keep]
        if len(f) == 0:
            raise StageError(f"{clean_path}: mask culling removed the whole mesh: the mesh does not project "
                             f"onto the masks of {dataset_dir} (wrong frame or cameras?)")
        timings["cull"] = time.perf_counter() - t
        t = time.perf_counter()
        v_c, f_c, index = _clean(verts_w, f, min_component)
        timings["clean"] = time.perf_counter() - t
        write_mesh(clean_path, v_c, f_c, None if colors is None else colors[index])
        meta["mesh_clean"] = {"path": str(clean_path), **_mesh_info(v_c, f_c)}
        log.info("clean mesh: %d vertices, %d faces -> %s", len(v_c), len(f_c), clean_path)

    meta["support"] = support_meta
    timings["total"] = time.perf_counter() - t_start
    meta["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    meta_path = out_path.with_suffix(".json")
    write_report(meta_path, meta)
    log.info("mesh: %d faces -> %s (%.1f s; metadata %s)", len(faces), out_path, timings["total"], meta_path)
    return meta


__all__ = ["EmptySurfaceError", "clean_mesh", "cull_by_masks", "edge_stats", "extract_mesh", "grid_layout",
           "marching_cubes_grid", "mesh_from_checkpoint", "read_bbox", "read_hull", "sample_sdf_grid",
           "signed_volume", "write_mesh"]
