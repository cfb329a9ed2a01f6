"""The mesh stage's clean mesh (:mod:`neus_stage.mesh`): the raw mesh in world units culled by the dataset's
masks, without the regions no camera observes where bbox.json found no support plane
(:mod:`neus_stage.geometry.visibility`), cleaned of small parts (:mod:`neus_stage.geometry.mesh_tools`), and
the step timings and mesh figures mesh.json records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .artifacts.dataset import dataset_masks
from .artifacts.meshes import write_mesh
from .errors import StageError
from .geometry.mesh_tools import clean_mesh_indexed, cull_keep, edge_stats
from .geometry.visibility import visibility_cull

log = logging.getLogger("neus_stage.mesh")  # the mesh stage's log lines, under the stage's name


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """``timings[key]``: the seconds the block took."""
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


def mesh_info(verts: np.ndarray, faces: np.ndarray) -> dict:
    """mesh.json's figures of a mesh: vertex and face counts, edge statistics."""
    return {"vertices": int(len(verts)), "faces": int(len(faces)), **edge_stats(faces)}


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


def write_clean_mesh(
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
    with timed(timings, "cull"):
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
    with timed(timings, "clean"):
        v_c, f_c, index = clean_mesh_indexed(verts_w, f, min_component)
    write_mesh(clean_path, v_c, f_c, None if colors is None else colors[index])
    log.info("clean mesh: %d vertices, %d faces -> %s", len(v_c), len(f_c), clean_path)
    return {"mask_culled": bool(masks), "mesh_clean": {"path": str(clean_path), **mesh_info(v_c, f_c)}}
