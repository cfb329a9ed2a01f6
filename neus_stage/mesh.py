"""The mesh stage: marching cubes on a trained SDF over the bbox, then a clean, mask-culled mesh, in world units.

The stage reads the checkpoint, the dataset's cameras and masks, bbox.json and hull.npz, and writes the raw
mesh, the clean mesh and mesh.json. The geometry is pure and lives apart: the SDF is sampled and
triangulated by :mod:`neus_stage.geometry.extraction`, cleaned and culled by
:mod:`neus_stage.geometry.mesh_tools`.

Where the object ends: under an object standing on a surface no camera looks, so a trained SDF keeps the
visual hull's cone there. With the support plane that the visual-hull stage recorded in bbox.json, the
sampled SDF is intersected with the half-space above the plane before marching cubes (the base becomes a
flat cap half a voxel below the plane); without one, the clean mesh loses the regions no camera observes
(:mod:`neus_stage.geometry.visibility`). ``cut_at_support=False`` keeps the raw extent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .artifacts.box import read_bbox, read_hull, read_support
from .artifacts.dataset import dataset_masks, read_cameras_sphere
from .artifacts.meshes import check_mesh_path, write_mesh
from .artifacts.reports import write_report
from .errors import StageError
from .geometry.extraction import EmptySurfaceError, SdfFunc, marching_cubes_grid, sample_sdf_grid
from .geometry.halfspace import cut_sdf_grid
from .geometry.mesh_tools import clean_mesh_indexed, cull_keep, edge_stats, vertex_normals
from .geometry.visibility import visibility_cull
from .train.device import pick_device

log = logging.getLogger(__name__)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """``timings[key]``: the seconds the block took."""
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


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
    scale_w = float(abs(np.linalg.det(scale_mat[:3, :3])) ** (1 / 3))
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
    sdf_func: SdfFunc,
    bmin: np.ndarray,
    bmax: np.ndarray,
    hull: tuple | None,
    support: dict | None,
    scale_mat: np.ndarray,
    *,
    resolution: int,
    block: int,
    coarse: int,
    device: str,
    timings: dict[str, float],
    record: dict,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The zero level set of ``sdf_func`` over [bmin, bmax] (normalised frame), queried only inside ``hull``
    ((occupancy, min, max) or None) and cut at ``support``'s plane where it has one: (verts, faces, the grid's
    shape, spacing and sampling figures)."""
    occ, occ_min, occ_max = hull if hull is not None else (None, None, None)
    with _timed(timings, "sdf_grid"):
        grid, origin, spacing, stats = sample_sdf_grid(
            sdf_func,
            bmin,
            bmax,
            resolution,
            block=block,
            occupancy=occ,
            occupancy_bounds=None if occ is None else (occ_min, occ_max),
            device=device,
            coarse=coarse,
        )
    if support is not None and support["plane"] is not None:
        grid = _cut_at_plane(grid, origin, spacing, support, scale_mat, record)
    with _timed(timings, "marching_cubes"):
        verts, faces = marching_cubes_grid(grid, origin, spacing)
        shape = grid.shape
        del grid
    log.info("marching cubes: %d vertices, %d faces in %.1f s", len(verts), len(faces), timings["marching_cubes"])
    return verts, faces, {"shape": shape, "spacing": spacing, "stats": stats}


def _vertex_colors(
    color_func: Callable, verts: np.ndarray, faces: np.ndarray, device: str, chunk: int = 2**16
) -> np.ndarray | None:
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


def _to_world(verts_n: np.ndarray, faces: np.ndarray, scale_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh mapped from the normalised frame by ``scale_mat``, still wound outward."""
    A, c = scale_mat[:3, :3], scale_mat[:3, 3]
    if np.linalg.det(A) < 0:  # a mirroring scale_mat would turn the mesh inside out
        faces = faces[:, ::-1].copy()
    return verts_n @ A.T + c, faces


def _mesh_info(verts: np.ndarray, faces: np.ndarray) -> dict:
    return {"vertices": int(len(verts)), "faces": int(len(faces)), **edge_stats(faces)}


def _mask_keep(
    verts_w: np.ndarray, world_mats: np.ndarray, masks: list[np.ndarray], dilation: int, dataset_dir: Path
) -> np.ndarray:
    """Per vertex: whether the mask culling keeps it (all of them for a scene without masks)."""
    if not masks:  # a scene trained without masks (use_mask=false): clean it without culling
        log.warning(
            "%s: no masks, so the clean mesh is not mask-culled (small parts are still removed)", dataset_dir / "mask"
        )
        return np.ones(len(verts_w), dtype=bool)
    keep = cull_keep(verts_w, world_mats, masks, dilation)
    log.info("mask culling (dilation %d px): kept %d of %d vertices", dilation, int(keep.sum()), len(keep))
    return keep


def _observed_keep(
    verts_w: np.ndarray,
    faces: np.ndarray,
    world_mats: np.ndarray,
    image_size: tuple[int, int],
    min_cos: float,
    support: dict,
    record: dict,
) -> np.ndarray:
    """Per face: whether the visibility cull keeps it (no support plane); ``record`` gets the figures."""
    t = time.perf_counter()
    keep, vis = visibility_cull(verts_w, faces, world_mats[:, :3, :4], image_size, min_cos=min_cos)
    record.update(
        cut=vis["faces_removed"] > 0,
        how="regions no camera observes removed from the clean mesh (no support plane)",
        visibility=vis,
        visibility_s=round(time.perf_counter() - t, 2),
    )
    log.info(
        "visibility cull (no support plane: %s): removed %d faces, %.4g world units^2 (%.1f%% of the area)",
        support.get("reason") or support["message"],
        vis["faces_removed"],
        vis["area_removed"],
        100 * vis["area_removed_share"],
    )
    return keep


def _clean_mesh(
    verts_w: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None,
    world_mats: np.ndarray,
    dataset_dir: Path,
    clean_path: Path,
    *,
    dilation: int,
    min_component: float,
    visibility_min_cos: float | None,
    support: dict,
    record: dict,
    timings: dict[str, float],
) -> dict:
    """Write the clean mesh: mask-culled, without the regions no camera observes where ``visibility_min_cos``
    is given, cleaned of small parts. Returns mesh.json's entries for it."""
    with _timed(timings, "cull"):
        masks = dataset_masks(dataset_dir, len(world_mats))
        face_keep = _mask_keep(verts_w, world_mats, masks, dilation, dataset_dir)[faces].all(axis=1)
        if visibility_min_cos is not None:
            face_keep &= _observed_keep(
                verts_w, faces, world_mats, _image_size(dataset_dir, masks), visibility_min_cos, support, record
            )
        f = faces[face_keep]
        if len(f) == 0:
            raise StageError(
                f"{clean_path}: mask culling removed the whole mesh: the mesh does not project "
                f"onto the masks of {dataset_dir} (wrong frame or cameras?)"
            )
    with _timed(timings, "clean"):
        v_c, f_c, index = clean_mesh_indexed(verts_w, f, min_component)
    write_mesh(clean_path, v_c, f_c, None if colors is None else colors[index])
    log.info("clean mesh: %d vertices, %d faces -> %s", len(v_c), len(f_c), clean_path)
    return {"mask_culled": bool(masks), "mesh_clean": {"path": str(clean_path), **_mesh_info(v_c, f_c)}}


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
    world_mats, scale_mat = read_cameras_sphere(dataset_dir / "cameras_sphere.npz")
    bmin, bmax, support = _extraction_box(bbox_path, resolution, cut_at_support)
    hull = None if hull_path is None else read_hull(hull_path)
    device = str(pick_device(device))
    log.info(
        "mesh: %s on %s, resolution %d, box %s .. %s",
        checkpoint,
        device,
        resolution,
        np.round(bmin, 4).tolist(),
        np.round(bmax, 4).tolist(),
    )

    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        sdf_func, color_func = _load_fields(checkpoint, device)
    support_rec = _support_record(support, cut_at_support)
    try:
        verts_n, faces, grid = _surface(
            sdf_func,
            bmin,
            bmax,
            hull,
            support if cut_at_support else None,
            scale_mat,
            resolution=resolution,
            block=block,
            coarse=coarse,
            device=device,
            timings=timings,
            record=support_rec,
        )
    except EmptySurfaceError as exc:
        raise EmptySurfaceError(f"{checkpoint}: {exc} (box from {bbox_path})") from exc

    colors = None
    if color_func is not None:
        with _timed(timings, "colors"):
            colors = _vertex_colors(color_func, verts_n, faces, device)
    verts_w, faces = _to_world(verts_n, faces, scale_mat)
    write_mesh(out_path, verts_w, faces, colors)
    scale = float(abs(np.linalg.det(scale_mat[:3, :3])) ** (1 / 3))
    meta: dict = {
        "checkpoint": str(checkpoint),
        "dataset": str(dataset_dir),
        "bbox": str(bbox_path),
        "hull": None if hull_path is None else str(hull_path),
        "device": device,
        "resolution": int(resolution),
        "block": int(block),
        "grid_shape": list(grid["shape"]),
        "voxel_size_normalized": grid["spacing"],
        "voxel_size_world": grid["spacing"] * scale,
        "box_normalized": {"min": bmin.tolist(), "max": bmax.tolist()},
        "scale_mat": scale_mat.tolist(),
        **{f"grid_{k}": v for k, v in grid["stats"].items()},
        "colors": colors is not None,
        "dilation": int(dilation),
        "min_component": float(min_component),
        "mesh": {"path": str(out_path), **_mesh_info(verts_w, faces)},
    }
    if clean_path is not None:
        min_cos = visibility_min_cos if cut_at_support and support["method"] == "visibility" else None
        meta.update(
            _clean_mesh(
                verts_w,
                faces,
                colors,
                world_mats,
                dataset_dir,
                clean_path,
                dilation=dilation,
                min_component=min_component,
                visibility_min_cos=min_cos,
                support=support,
                record=support_rec,
                timings=timings,
            )
        )
    meta["support"] = support_rec
    timings["total"] = time.perf_counter() - t_start
    meta["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    meta_path = out_path.with_suffix(".json")
    write_report(meta_path, meta)
    log.info("mesh: %d faces -> %s (%.1f s; metadata %s)", len(faces), out_path, timings["total"], meta_path)
    return meta


__all__ = ["EmptySurfaceError", "mesh_from_checkpoint"]
