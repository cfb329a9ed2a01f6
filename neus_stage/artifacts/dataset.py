"""The NeuS dataset the dataset stage writes and training, the visual hull, the mesh, the export and the
report read: ``image/<stem>.png``, ``mask/<stem>.png`` (0/255; empty for a scene without masks),
``cameras_sphere.npz`` (NeuS's ``world_mat_i`` / ``scale_mat_i``, view i = the i-th sorted stem) and
``meta.json`` (views, frame, units, masks mode).

One rule reads every mask of the package: a pixel is foreground where any colour channel is above 127
(alpha ignored), so grey, RGB and RGBA masks all mean the same thing. Readers validate and name the file
in their StageError; writers are atomic. Only numpy and Pillow: training imports this module on machines
without the geometry libraries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write
from ..errors import StageError
from .reports import read_report, write_report

MASK_LEVEL = 127
"""A mask pixel is foreground where a colour channel is above this."""
CAMERAS = "cameras_sphere.npz"
META = "meta.json"


# -------------------------------------------------------------------------------------------- masks
def mask_from_array(a: np.ndarray) -> np.ndarray:
    """A mask image's pixels (H,W) or (H,W,C) as foreground booleans (H,W)."""
    a = np.asarray(a)
    if a.dtype == bool:
        return a if a.ndim == 2 else a[..., :3].any(-1)
    if a.dtype == np.uint16:  # 16-bit PNG
        a = a >> 8
    return (a[..., :3].max(-1) if a.ndim == 3 else a) > MASK_LEVEL


def read_mask(path: Path) -> np.ndarray:
    """One mask file as (H,W) bool."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: mask not found; every image needs a mask of the same name")
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "LA", "PA", "I", "F", "1"):  # 16-bit stays: mask_from_array scales it
                im = im.convert("L")
            a = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - an unreadable image becomes a user message
        raise StageError(f"{path}: not a readable mask image ({type(exc).__name__}: {exc}); rebuild it") from exc
    return mask_from_array(a)


def read_masks(folder: Path, stems: list[str]) -> np.ndarray:
    """Masks ``<stem>.png`` of ``folder`` in the given order as (N,H,W) bool; names must match."""
    for s in stems:
        if not (Path(folder) / f"{s}.png").is_file():
            raise StageError(
                f"{Path(folder) / f'{s}.png'}: mask missing for image '{s}'; every image needs a mask of the same name"
            )
    masks = [read_mask(Path(folder) / f"{s}.png") for s in stems]
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise StageError(f"{folder}: masks have different sizes {sorted(shapes)}; every mask is its image's size")
    return np.stack(masks) if masks else np.zeros((0, 0, 0), bool)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A (H,W) bool mask as an 8-bit 0/255 PNG, atomically."""
    with atomic_write(Path(path)) as fh:
        Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(fh, format="PNG")


def mask_files(dataset_dir: Path) -> list[Path]:
    """The dataset's ``mask/*.png`` in sorted order (none for a scene without masks)."""
    folder = Path(dataset_dir) / "mask"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def dataset_masks(dataset_dir: Path, n_views: int) -> list[np.ndarray]:
    """The dataset's masks, one per camera in sorted order, as bool arrays; none for a scene without masks."""
    files = mask_files(dataset_dir)
    if files and len(files) != n_views:
        raise StageError(
            f"{Path(dataset_dir) / 'mask'}: {len(files)} masks but {CAMERAS} holds {n_views} cameras; "
            "they must match one to one in sorted order"
        )
    return [read_mask(p) for p in files]


def view_mask(dataset_dir: Path, stem: str) -> np.ndarray | None:
    """The mask of one view, or None where the dataset has none."""
    path = Path(dataset_dir) / "mask" / f"{stem}.png"
    return read_mask(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------ cameras
def write_cameras_sphere(path: Path, world_mats: np.ndarray, scale_mat: np.ndarray) -> None:
    """Write ``cameras_sphere.npz`` with world_mat_i, scale_mat_i and the optional inverse extras."""
    arrays: dict[str, np.ndarray] = {}
    for i, wm in enumerate(world_mats):
        arrays[f"world_mat_{i}"] = wm.astype(np.float64)
        arrays[f"world_mat_inv_{i}"] = np.linalg.inv(wm).astype(np.float64)
        arrays[f"scale_mat_{i}"] = scale_mat.astype(np.float64)
        arrays[f"scale_mat_inv_{i}"] = np.linalg.inv(scale_mat).astype(np.float64)
    with atomic_write(path) as fh:  # all or nothing: later stages read it
        np.savez(fh, **arrays)


def read_cameras_sphere(path: Path, n_views: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (world_mats (N,4,4), scale_mat (4,4)) from a NeuS ``cameras_sphere.npz``.

    Raises StageError naming the file when keys are missing or inconsistent with ``n_views``.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: camera file not found; give a NeuS cameras_sphere.npz (world_mat_i, scale_mat_i)")
    try:
        data = np.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a user message
        raise StageError(f"{path}: not a readable .npz file ({exc}); give a NeuS cameras_sphere.npz") from exc
    indices = sorted(int(k[len("world_mat_") :]) for k in data.files if k.startswith("world_mat_") and "inv" not in k)
    if not indices:
        raise StageError(f"{path}: no world_mat_i arrays; this is not a NeuS cameras_sphere.npz")
    if indices != list(range(len(indices))):
        raise StageError(f"{path}: world_mat indices are not 0..{len(indices) - 1} without gaps")
    if n_views is not None and len(indices) != n_views:
        raise StageError(
            f"{path}: holds {len(indices)} cameras but the scene has {n_views} photos; "
            "the camera file must list exactly one world_mat_i per photo, in sorted photo order"
        )
    world_mats = np.stack([data[f"world_mat_{i}"].astype(np.float64) for i in indices])
    scale_key = "scale_mat_0"
    scale_mat = data[scale_key].astype(np.float64) if scale_key in data.files else np.eye(4)
    return world_mats, scale_mat


# --------------------------------------------------------------------------------------------- meta
def read_meta(dataset_dir: Path) -> dict:
    """The dataset's ``meta.json``; a StageError naming it when missing or unreadable."""
    return read_report(Path(dataset_dir) / META, "the dataset stage")


def write_meta(dataset_dir: Path, meta: dict) -> None:
    write_report(Path(dataset_dir) / META, meta)
