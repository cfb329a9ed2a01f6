"""Mesh extraction from a signed distance function: block-wise sampling on a grid, then marching cubes.

``extract_mesh`` is a pure function of a callable (as in neuralangelo), so it is tested on analytic SDFs:
the SDF is sampled block by block (chunked queries under ``torch.no_grad``, a progress bar over blocks)
into one float32 grid, and marching cubes runs once on that grid. One grid (0.5 GB at 512^3, 4 GB at
1024^3) is seamless by construction; per-block marching cubes would need vertex welding across block
faces, and a network queried in different batches can return values that differ in the last bits on the
shared faces, which breaks the welding. Blocks that lie wholly outside the (dilated) visual hull are not
queried at all, which is where the time goes: marching cubes on a ready 512^3 grid takes about a second,
the network queries minutes.

Sign convention: negative inside, positive outside. Triangles are wound so that their normals point
toward positive SDF (out of the object): a closed surface has positive signed volume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import StageError
from ..progress import track

log = logging.getLogger(__name__)

SdfFunc = Callable[[torch.Tensor], torch.Tensor]
"""Points (N,3) float32 -> SDF values (N,) (negative inside)."""

FILL_VALUE = 1.0
"""SDF value written where a block is skipped (outside the object: any positive value does)."""

LARGE_GRID = 1024**3
"""Grids above this many samples (4 GB of float32) are logged as a memory warning."""

Occupancy = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A dilated occupancy grid, its box's minimum corner and its voxel size (3,)."""


class EmptySurfaceError(StageError):
    """The SDF has no zero crossing in the box (training failed or the box is wrong)."""


def grid_layout(
    bounds_min: Sequence[float], bounds_max: Sequence[float], resolution: int
) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Sample layout over a box: (shape, origin (3,), spacing).

    ``resolution`` samples span the longest side exactly; the other sides get the same spacing and as
    many samples as cover them, centred on the box (so they overhang it by less than half a voxel).
    """
    lo = np.asarray(bounds_min, dtype=np.float64).reshape(3)
    hi = np.asarray(bounds_max, dtype=np.float64).reshape(3)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise StageError(
            f"the extraction box is invalid (min {lo.tolist()}, max {hi.tolist()}): need min < max on every axis"
        )
    if int(resolution) < 8:
        raise StageError(f"mesh resolution {resolution} is too small: give at least 8 samples along the longest side")
    extent = hi - lo
    spacing = float(extent.max() / (int(resolution) - 1))
    n = np.maximum(2, np.ceil(extent / spacing - 1e-6).astype(int) + 1)
    n[np.argmax(extent)] = int(resolution)
    origin = (lo + hi) / 2 - (n - 1) * spacing / 2
    return (int(n[0]), int(n[1]), int(n[2])), origin, spacing


def _dilate(occupancy: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(occupancy, structure=np.ones((3, 3, 3), dtype=bool))


def _prepared_occupancy(
    occupancy: np.ndarray | None, bounds: tuple[Sequence[float], Sequence[float]]
) -> Occupancy | None:
    """The occupancy grid dilated by one voxel, with its box's corner and voxel size; None for no grid (or
    an empty one, which would skip every block)."""
    if occupancy is None:
        return None
    occ = np.asarray(occupancy, dtype=bool)
    if occ.ndim != 3:
        raise StageError(f"the occupancy grid must be 3-D, got shape {occ.shape}")
    occ_min = np.asarray(bounds[0], dtype=np.float64).reshape(3)
    occ_voxel = (np.asarray(bounds[1], dtype=np.float64).reshape(3) - occ_min) / np.asarray(occ.shape)
    if not np.all(occ_voxel > 0):
        raise StageError(f"the occupancy box is invalid (min {occ_min.tolist()}, max {bounds[1]})")
    if not occ.any():
        log.warning("the occupancy grid is empty: every block would be skipped, so it is ignored")
        return None
    return _dilate(occ), occ_min, occ_voxel


def _block_occupied(
    occ: np.ndarray, occ_min: np.ndarray, occ_voxel: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> bool:
    """Whether any voxel of ``occ`` (over a box starting at occ_min) meets the region [lo, hi]."""
    r = np.asarray(occ.shape)
    i0 = np.floor((lo - occ_min) / occ_voxel).astype(int)
    i1 = np.floor((hi - occ_min) / occ_voxel).astype(int)
    if np.any(i1 < 0) or np.any(i0 >= r):  # the block lies outside the occupancy box: empty
        return False
    i0, i1 = np.clip(i0, 0, r - 1), np.clip(i1, 0, r - 1)
    return bool(occ[i0[0] : i1[0] + 1, i0[1] : i1[1] + 1, i0[2] : i1[2] + 1].any())


def sample_sdf_grid(
    sdf_func: SdfFunc,
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int,
    *,
    block: int = 128,
    occupancy: np.ndarray | None = None,
    occupancy_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    chunk: int = 2**15,
    device: str = "cpu",
    coarse: int = 1,
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
        log.warning(
            "the SDF grid %s holds %.1f G samples (%.1f GB): lower --resolution if memory runs out",
            shape,
            n_samples / 1e9,
            n_samples * 4 / 1e9,
        )
    occ = _prepared_occupancy(occupancy, occupancy_bounds if occupancy_bounds is not None else (bounds_min, bounds_max))
    if coarse == 1:
        grid, stats = _sample_blocks(sdf_func, shape, origin, spacing, block, occ, chunk, device)
    else:
        grid, stats = _sample_coarse_to_fine(sdf_func, shape, origin, spacing, coarse, block, occ, chunk, device)
    if not np.all(np.isfinite(grid)):
        bad = int((~np.isfinite(grid)).sum())
        raise StageError(f"the SDF returned {bad} non-finite values (NaN/inf): the network diverged during training")
    log.info(
        "sampled the SDF on a %dx%dx%d grid (voxel %.4g): %d of %d blocks queried, %.1f%% of the samples",
        *shape,
        spacing,
        stats["blocks"] - stats["blocks_skipped"],
        stats["blocks"],
        100.0 * stats["samples_queried"] / n_samples,
    )
    return grid, origin, spacing, stats


def _query(sdf_func: SdfFunc, pts: torch.Tensor, chunk: int, progress: bool = False) -> np.ndarray:
    values = torch.empty(pts.shape[0], dtype=torch.float32, device="cpu")
    starts = range(0, pts.shape[0], chunk)
    for s in track(starts, "SDF near the surface", unit="chunks") if progress else starts:
        values[s : s + chunk] = torch.as_tensor(sdf_func(pts[s : s + chunk])).reshape(-1).float().cpu()
    return values.numpy()


def _sample_blocks(
    sdf_func: SdfFunc,
    shape: tuple[int, int, int],
    origin: np.ndarray,
    spacing: float,
    block: int,
    occ: Occupancy | None,
    chunk: int,
    device: str,
) -> tuple[np.ndarray, dict]:
    """Every sample of the lattice origin + spacing * index, block by block, skipping empty blocks."""
    grid = np.full(shape, FILL_VALUE, dtype=np.float32)
    starts = [range(0, s, block) for s in shape]
    blocks = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    axes = [origin[k] + spacing * np.arange(shape[k]) for k in range(3)]
    stats = {"blocks": len(blocks), "blocks_skipped": 0, "samples_queried": 0}
    with torch.no_grad():
        for i0, j0, k0 in track(blocks, "SDF grid", unit="blocks"):
            sl = (
                slice(i0, min(i0 + block, shape[0])),
                slice(j0, min(j0 + block, shape[1])),
                slice(k0, min(k0 + block, shape[2])),
            )
            xs, ys, zs = (axes[k][sl[k]] for k in range(3))
            if occ is not None:
                lo = np.array([xs[0], ys[0], zs[0]])
                hi = np.array([xs[-1], ys[-1], zs[-1]])
                if not _block_occupied(*occ, lo, hi):
                    stats["blocks_skipped"] += 1
                    continue
            pts = torch.stack(
                torch.meshgrid(
                    *(torch.as_tensor(a, dtype=torch.float32, device=device) for a in (xs, ys, zs)), indexing="ij"
                ),
                dim=-1,
            ).reshape(-1, 3)
            stats["samples_queried"] += int(pts.shape[0])
            grid[sl] = _query(sdf_func, pts, chunk).reshape(len(xs), len(ys), len(zs))
    return grid, stats


def _near_surface_samples(
    cgrid: np.ndarray, cells: list[int], c: int, spacing: float, shape: tuple[int, int, int]
) -> np.ndarray:
    """The fine samples (bool ``shape``) of the coarse cells the surface can reach, their shared faces
    included."""
    corners = [
        cgrid[i : i + cells[0], j : j + cells[1], k : k + cells[2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)
    ]
    lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
    query = (lo <= 0) & (hi >= 0) | (np.minimum(np.abs(lo), np.abs(hi)) < 1.5 * c * spacing * np.sqrt(3.0))
    for ax in range(3):
        rep = np.repeat(query, c, axis=ax)
        pad = [(0, 0)] * 3
        pad[ax] = (0, 1)
        query = np.pad(rep, pad)
        pad[ax] = (1, 0)
        query |= np.pad(rep, pad)
    return query[: shape[0], : shape[1], : shape[2]]


def _sample_coarse_to_fine(
    sdf_func: SdfFunc,
    shape: tuple[int, int, int],
    origin: np.ndarray,
    spacing: float,
    c: int,
    block: int,
    occ: Occupancy | None,
    chunk: int,
    device: str,
) -> tuple[np.ndarray, dict]:
    """Every ``c``-th sample, then the fine samples near the surface; the rest interpolated."""
    cells = [-(-(s - 1) // c) for s in shape]  # coarse cells per axis (the lattice may overhang the grid)
    cgrid, stats = _sample_blocks(
        sdf_func, tuple(k + 1 for k in cells), origin, spacing * c, max(2, block // c), occ, chunk, device
    )
    query = _near_surface_samples(cgrid, cells, c, spacing, shape)
    fine = torch.nn.functional.interpolate(
        torch.from_numpy(cgrid)[None, None], size=tuple(k * c + 1 for k in cells), mode="trilinear", align_corners=True
    )[0, 0]
    grid = np.ascontiguousarray(fine[: shape[0], : shape[1], : shape[2]].numpy())
    del fine
    idx = np.nonzero(query)
    with torch.no_grad():
        pts = torch.from_numpy(origin + spacing * np.stack(idx, -1)).float().to(device)
        grid[idx] = _query(sdf_func, pts, chunk, progress=True)
    stats["samples_queried"] += int(len(idx[0]))
    stats["coarse"] = c
    return grid, stats


def marching_cubes_grid(grid: np.ndarray, origin: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of a sampled SDF: (verts (V,3) float64 in the grid's frame, faces (F,3) int64),
    wound outward."""
    from skimage.measure import marching_cubes

    vmin, vmax = float(grid.min()), float(grid.max())
    if vmin > 0:
        raise EmptySurfaceError(
            f"the surface is empty: the SDF is positive everywhere in the box (minimum {vmin:.4g}); "
            "training failed or the box is wrong"
        )
    if vmax < 0:
        raise EmptySurfaceError(
            f"the surface is empty: the SDF is negative everywhere in the box (maximum {vmax:.4g}); "
            "training failed or the box is wrong (it lies inside the object)"
        )
    boundary = min(float(grid[[0, -1]].min()), float(grid[:, [0, -1]].min()), float(grid[:, :, [0, -1]].min()))
    if boundary < 0:
        log.warning("the surface reaches the box boundary: the mesh is open there (enlarge the box)")
    try:
        # skimage's "descent" winding puts the normals toward increasing values: out of an SDF's object.
        verts, faces, _, _ = marching_cubes(grid, level=0.0, spacing=(spacing,) * 3, gradient_direction="descent")
    except (RuntimeError, ValueError) as exc:
        raise EmptySurfaceError(f"the surface is empty: marching cubes found no zero crossing ({exc})") from exc
    return verts.astype(np.float64) + np.asarray(origin, dtype=np.float64), faces.astype(np.int64)


def extract_mesh(
    sdf_func: SdfFunc,
    bounds_min: Sequence[float],
    bounds_max: Sequence[float],
    resolution: int,
    *,
    block: int = 128,
    occupancy: np.ndarray | None = None,
    occupancy_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    chunk: int = 2**15,
    device: str = "cpu",
    coarse: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the zero level set of ``sdf_func`` inside [bounds_min, bounds_max].

    ``resolution`` samples span the longest side of the box (the others proportional, same spacing).
    ``occupancy`` (bool (R,R,R), indexed [ix,iy,iz], over ``occupancy_bounds``, default the box) lets
    blocks outside it be skipped; ``coarse`` > 1 queries the full grid only near the surface (see
    ``sample_sdf_grid``). Returns (verts (V,3) float64 in the box's frame, faces (F,3) int64),
    wound outward. Raises EmptySurfaceError when the SDF has no zero crossing in the box.
    """
    grid, origin, spacing, _ = sample_sdf_grid(
        sdf_func,
        bounds_min,
        bounds_max,
        resolution,
        block=block,
        occupancy=occupancy,
        occupancy_bounds=occupancy_bounds,
        chunk=chunk,
        device=device,
        coarse=coarse,
    )
    return marching_cubes_grid(grid, origin, spacing)


__all__ = [
    "EmptySurfaceError",
    "FILL_VALUE",
    "SdfFunc",
    "extract_mesh",
    "grid_layout",
    "marching_cubes_grid",
    "sample_sdf_grid",
]
