"""The mesh stage: marching cubes on a trained SDF over the bbox, then a clean, mask-culled mesh, in world units.

The stage reads the checkpoint, the dataset's cameras and masks, bbox.json and hull.npz, and writes the raw
mesh, the clean mesh (:mod:`neus_stage.mesh_clean`) and mesh.json. The geometry is pure and lives apart: the
SDF is sampled and triangulated by :mod:`neus_stage.geometry.extraction`, mapped to the world by
:mod:`neus_stage.geometry.normalized_frame`, cleaned and culled by :mod:`neus_stage.geometry.mesh_tools`.

Where the object ends: under an object standing on a surface no camera looks, so a trained SDF keeps the
visual hull's cone there. With the support plane that the visual-hull stage recorded in bbox.json, the
sampled SDF is intersected with the half-space above the plane before marching cubes (the base becomes a
flat cap half a voxel below the plane); without one, the clean mesh loses the regions no camera observes
(:mod:`neus_stage.geometry.visibility`). ``cut_at_support=False`` keeps the raw extent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .artifacts.box import read_bbox, read_hull, read_support
from .artifacts.dataset import read_cameras_sphere
from .artifacts.meshes import check_mesh_path, write_mesh
from .artifacts.reports import write_report
from .errors import StageError
from .geometry.extraction import EmptySurfaceError, SdfFunc, marching_cubes_grid, sample_sdf_grid
from .geometry.halfspace import cut_sdf_grid
from .geometry.mesh_tools import vertex_normals
from .geometry.normalized_frame import mesh_to_world, world_scale
from .mesh_clean import mesh_info, timed, write_clean_mesh
from .train.device import pick_device

log = logging.getLogger(__name__)


@dataclass
class _Settings:
    """The settings of :func:`mesh_from_checkpoint` its steps share (their defaults live in its signature)."""

    resolution: int
    block: int
    coarse: int
    cut_at_support: bool
    dilation: int
    min_component: float
    visibility_min_cos: float


@dataclass
class _Inputs:
    """What a run reads before the trained fields: its input files, the dataset's cameras and ``scale_mat``,
    the extraction box (normalised frame) with bbox.json's support record, the hull ((occupancy, min, max)
    or None), and the device it runs on."""

    checkpoint: Path
    dataset_dir: Path
    bbox_path: Path
    hull_path: Path | None
    world_mats: np.ndarray
    scale_mat: np.ndarray
    bmin: np.ndarray
    bmax: np.ndarray
    support: dict
    hull: tuple | None
    device: str


def _check_inputs(checkpoint: Path, out_path: Path, clean_path: Path | None) -> None:
    check_mesh_path(out_path, "--out")
    if clean_path is not None:
        check_mesh_path(clean_path, "--clean")
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: checkpoint not found; run the train stage first")


def _extraction_box(bbox_path: Path, resolution: int, cut_at_support: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """The bbox (with room for the flat cap where the SDF is cut at a support plane) and its support record."""
    bmin, bmax = read_bbox(bbox_path)
    support = read_support(bbox_path)
    if cut_at_support and support["plane"] is not None:
        # the flat cap lies half a voxel below the plane, which may be the hull's lowest face: two voxels of
        # room all round keep the cap inside the grid (the half-space leaves no surface below it)
        pad = 2.0 * float((bmax - bmin).max()) / max(int(resolution) - 1, 1)
        bmin, bmax = bmin - pad, bmax + pad
    return bmin, bmax, support


def _read_inputs(
    checkpoint: Path, dataset_dir: Path, bbox_path: Path, hull_path: Path | None, settings: _Settings, device: str
) -> _Inputs:
    """The cameras, the box, the hull and the device the mesh is extracted with (logged)."""
    world_mats, scale_mat = read_cameras_sphere(dataset_dir / "cameras_sphere.npz")
    bmin, bmax, support = _extraction_box(bbox_path, settings.resolution, settings.cut_at_support)
    hull = None if hull_path is None else read_hull(hull_path)
    device = str(pick_device(device))
    log.info(
        "mesh: %s on %s, resolution %d, box %s .. %s",
        checkpoint,
        device,
        settings.resolution,
        np.round(bmin, 4).tolist(),
        np.round(bmax, 4).tolist(),
    )
    return _Inputs(
        checkpoint, dataset_dir, bbox_path, hull_path, world_mats, scale_mat, bmin, bmax, support, hull, device
    )


def _load_fields(checkpoint: Path, device: str) -> tuple[SdfFunc, Callable | None]:
    """The trained SDF (and the colour function where the trainer provides one)."""
    import pickle

    from .train.checkpoint import load_fields

    try:
        sdf, color = load_fields(checkpoint, device)
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise StageError(
            f"{checkpoint}: cannot load the trained model ({type(exc).__name__}: {exc}); re-run the train stage"
        ) from exc
    if color is None:
        log.info("no vertex colours: the trained field has no colour network")
    return sdf, color


def _support_record(support: dict, cut_at_support: bool) -> dict:
    """mesh.json's support entry before any cut."""
    rec: dict = {
        "method": support["method"],
        "cut_at_support": bool(cut_at_support),
        "bbox_message": support["message"],
        "cut": False,
    }
    if not cut_at_support:
        rec["how"] = "not cut (cut_at_support: false): the raw extent"
    return rec


def _cut_at_plane(
    grid: np.ndarray, origin: np.ndarray, spacing: float, support: dict, scale_mat: np.ndarray, record: dict
) -> np.ndarray:
    """The sampled SDF intersected with the half-space above the support plane; ``record`` gets the figures."""
    # the flat cap half a voxel below the plane, plus the fit's own uncertainty up to another half voxel:
    # never more than one voxel below it (a larger margin only grows a skirt nothing observed)
    margin = min(support["margin"], 0.5 * spacing) + 0.5 * spacing
    grid, changed = cut_sdf_grid(grid, origin, spacing, support["plane"], margin)
    scale_w = world_scale(scale_mat)
    record.update(
        cut=True,
        how="SDF intersected with the half-space above the support plane",
        plane_normalized={"normal": support["plane"].normal.tolist(), "offset": support["plane"].offset},
        margin_normalized=margin,
        margin_world=margin * scale_w,
        grid_samples_cut=changed,
    )
    log.info(
        "support plane: the SDF is cut %.3g world units below the plane (%d grid samples changed)",
        margin * scale_w,
        changed,
    )
    return grid


def _surface(
    sdf_func: SdfFunc, inputs: _Inputs, settings: _Settings, timings: dict[str, float], record: dict
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The zero level set of ``sdf_func`` over the inputs' box (normalised frame), queried only inside their
    hull where they have one and cut at their support plane where they have one and ``cut_at_support`` is
    set: (verts, faces, the grid's shape, spacing and sampling figures)."""
    hull, bmin, bmax, device = inputs.hull, inputs.bmin, inputs.bmax, inputs.device
    support = inputs.support if settings.cut_at_support else None
    occ, occ_min, occ_max = hull if hull is not None else (None, None, None)
    with timed(timings, "sdf_grid"):
        grid, origin, spacing, stats = sample_sdf_grid(
            sdf_func,
            bmin,
            bmax,
            settings.resolution,
            block=settings.block,
            occupancy=occ,
            occupancy_bounds=None if occ is None else (occ_min, occ_max),
            device=device,
            coarse=settings.coarse,
        )
    if support is not None and support["plane"] is not None:
        grid = _cut_at_plane(grid, origin, spacing, support, inputs.scale_mat, record)
    with timed(timings, "marching_cubes"):
        verts, faces = marching_cubes_grid(grid, origin, spacing)
        shape = grid.shape
        del grid
    log.info("marching cubes: %d vertices, %d faces in %.1f s", len(verts), len(faces), timings["marching_cubes"])
    return verts, faces, {"shape": shape, "spacing": spacing, "stats": stats}


def _vertex_colors(
    color_func: Callable, verts: np.ndarray, faces: np.ndarray, device: str, chunk: int = 2**16
) -> np.ndarray | None:
    """The colour network's colours (uint8 (V, 3)) at the vertices, seen along their normals; None where the
    trainer's colour function is not implemented."""
    normals = vertex_normals(verts, faces)
    out = np.empty((len(verts), 3), dtype=np.float32)
    try:
        with torch.no_grad():
            for s in range(0, len(verts), chunk):
                p = torch.as_tensor(verts[s : s + chunk], dtype=torch.float32, device=device)
                n = torch.as_tensor(normals[s : s + chunk], dtype=torch.float32, device=device)
                out[s : s + chunk] = torch.as_tensor(color_func(p, n)).reshape(-1, 3).float().cpu().numpy()
    except NotImplementedError as exc:
        log.info("no vertex colours: %s", exc or "the colour function is not implemented")
        return None
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _raw_mesh(
    inputs: _Inputs, settings: _Settings, out_path: Path, timings: dict[str, float], record: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Write the raw mesh: the trained SDF's surface in world units with the colour network's vertex colours.
    Returns its vertices, faces, colours (or None) and the grid's figures."""
    with timed(timings, "load"):
        sdf_func, color_func = _load_fields(inputs.checkpoint, inputs.device)
    try:
        verts_n, faces, grid = _surface(sdf_func, inputs, settings, timings, record)
    except EmptySurfaceError as exc:
        raise EmptySurfaceError(f"{inputs.checkpoint}: {exc} (box from {inputs.bbox_path})") from exc
    colors = None
    if color_func is not None:
        with timed(timings, "colors"):
            colors = _vertex_colors(color_func, verts_n, faces, inputs.device)
    verts_w, faces = mesh_to_world(verts_n, faces, inputs.scale_mat)
    write_mesh(out_path, verts_w, faces, colors)
    return verts_w, faces, colors, grid


def _mesh_record(inputs: _Inputs, settings: _Settings, grid: dict, colors: bool, mesh: dict) -> dict:
    """mesh.json's entries for the raw mesh (``mesh``: its path and figures), in their order."""
    return {
        "checkpoint": str(inputs.checkpoint),
        "dataset": str(inputs.dataset_dir),
        "bbox": str(inputs.bbox_path),
        "hull": None if inputs.hull_path is None else str(inputs.hull_path),
        "device": inputs.device,
        "resolution": int(settings.resolution),
        "block": int(settings.block),
        "grid_shape": list(grid["shape"]),
        "voxel_size_normalized": grid["spacing"],
        "voxel_size_world": grid["spacing"] * world_scale(inputs.scale_mat),
        "box_normalized": {"min": inputs.bmin.tolist(), "max": inputs.bmax.tolist()},
        "scale_mat": inputs.scale_mat.tolist(),
        **{f"grid_{k}": v for k, v in grid["stats"].items()},
        "colors": colors,
        "dilation": int(settings.dilation),
        "min_component": float(settings.min_component),
        "mesh": mesh,
    }


def _clean_mesh(
    inputs: _Inputs,
    settings: _Settings,
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    clean_path: Path,
    timings: dict[str, float],
    record: dict,
) -> dict:
    """Write the clean mesh of the raw ``mesh`` (vertices, faces, colours); the visibility cull where bbox.json
    found no support plane and ``cut_at_support`` is set. Returns mesh.json's entries for it."""
    visibility = settings.cut_at_support and inputs.support["method"] == "visibility"
    return write_clean_mesh(
        *mesh,
        inputs.world_mats,
        inputs.dataset_dir,
        clean_path,
        dilation=settings.dilation,
        min_component=settings.min_component,
        visibility_min_cos=settings.visibility_min_cos if visibility else None,
        support=inputs.support,
        record=record,
        timings=timings,
    )


def mesh_from_checkpoint(
    checkpoint: Path,
    dataset_dir: Path,
    bbox_path: Path,
    out_path: Path,
    *,
    clean_path: Path | None = None,
    hull_path: Path | None = None,
    resolution: int = 512,
    block: int = 128,
    dilation: int = 12,
    min_component: float = 0.05,
    device: str = "auto",
    coarse: int = 4,
    cut_at_support: bool = True,
    visibility_min_cos: float = 0.1,
) -> dict:
    """The mesh stage: marching cubes on a trained SDF over the bbox, written in world units.

    Writes ``out_path`` (the raw mesh), ``clean_path`` where given (mask-culled with ``dilation``, then
    cleaned of small parts) and ``<out_path stem>.json`` (parameters, counts, timings), which is also
    returned as a dict. Meshes are written in the format their extension names (.ply or .obj).

    With ``cut_at_support``, the object ends where bbox.json says it ends: on a support plane the SDF is
    intersected with the half-space above it (half a voxel below the plane), so the base is a flat cap,
    not the visual hull's cone; without a plane the clean mesh loses the regions no camera observes
    (``visibility_min_cos``: the grazing limit), and mesh.json records the area removed.
    """
    t_start = time.perf_counter()
    checkpoint, dataset_dir, bbox_path, out_path = map(Path, (checkpoint, dataset_dir, bbox_path, out_path))
    _check_inputs(checkpoint, out_path, clean_path)
    settings = _Settings(
        resolution=resolution,
        block=block,
        coarse=coarse,
        cut_at_support=cut_at_support,
        dilation=dilation,
        min_component=min_component,
        visibility_min_cos=visibility_min_cos,
    )
    inputs = _read_inputs(checkpoint, dataset_dir, bbox_path, hull_path, settings, device)
    timings: dict[str, float] = {}
    support_rec = _support_record(inputs.support, cut_at_support)
    verts_w, faces, colors, grid = _raw_mesh(inputs, settings, out_path, timings, support_rec)
    meta = _mesh_record(
        inputs, settings, grid, colors is not None, {"path": str(out_path), **mesh_info(verts_w, faces)}
    )
    if clean_path is not None:
        meta.update(_clean_mesh(inputs, settings, (verts_w, faces, colors), clean_path, timings, support_rec))
    meta["support"] = support_rec
    timings["total"] = time.perf_counter() - t_start
    meta["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    meta_path = out_path.with_suffix(".json")
    write_report(meta_path, meta)
    log.info("mesh: %d faces -> %s (%.1f s; metadata %s)", len(faces), out_path, timings["total"], meta_path)
    return meta


__all__ = ["EmptySurfaceError", "mesh_from_checkpoint"]
