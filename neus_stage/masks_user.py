"""The user's own masks for the masks stage: found one per photo by name, read (alpha, grey or 0/1 labels),
refused when empty, full or inverted, and brought to the undistorted images' size with the sfm camera."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .artifacts.dataset import MASK_LEVEL
from .artifacts.reports import read_report_if_any
from .errors import StageError
from .masks_check import MAX_BAD_SHARE, degenerate
from .photos import IMAGE_SUFFIXES, to_rgb8

log = logging.getLogger(__name__)


def _names(xs: list[str]) -> str:
    return ", ".join(xs[:10]) + (" ..." if len(xs) > 10 else "")


def find_user_masks(folder: Path, stems: list[str], sfm_dir: Path | None) -> dict[str, Path]:
    """The mask file of each image stem in ``folder`` (any image suffix); a StageError naming the masks that
    are missing or match no image (photos the sfm stage dropped may keep theirs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: mask folder not found; give one <stem>.png mask per photo")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found: dict[str, Path] = {}
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in found:
            raise StageError(f"{folder}: {found[p.stem].name} and {p.name} are both masks for '{p.stem}'; keep one")
        found[p.stem] = p
    dropped: set[str] = set()
    if sfm_dir is not None:
        dropped = set(read_report_if_any(Path(sfm_dir) / "report.json").get("dropped", []))
    missing = [s for s in stems if s not in found]
    extra = sorted(set(found) - set(stems) - dropped)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no mask for {len(missing)} image(s): {_names(missing)}")
        if extra:
            parts.append(f"{len(extra)} mask(s) match no image: {_names(extra)}")
        raise StageError(
            f"{folder}: mask names do not match the photos ({'; '.join(parts)}); name each mask after its photo "
            "(photo 'IMG_0001.jpg' -> mask 'IMG_0001.png')"
        )
    return {s: found[s] for s in stems}


def read_user_mask(path: Path) -> np.ndarray:
    """A boolean mask from a mask image: the alpha channel when it has a non-trivial one, else the grey level
    (white = object). Masks stored as 0/1 (not 0/255, common from numpy or labelling tools) are read as such."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if alpha.min() < 255:
                    return alpha > MASK_LEVEL
            grey = to_rgb8(im)[..., 0] if im.mode.startswith("I") or im.mode == "F" else np.asarray(im.convert("L"))
            if grey.max() == 1:  # a 0/1 label image
                return grey >= 1
            return grey > MASK_LEVEL
    except (OSError, SyntaxError, ValueError) as exc:
        raise StageError(f"{path}: cannot read this mask ({exc}); replace the file") from exc


def refuse_bad_user_masks(masks: dict[str, np.ndarray], folder: Path) -> None:
    """User masks that are empty, full or inverted: one message naming the folder, what was found and the fix."""
    shares, empty, full = degenerate(masks)
    n = len(masks)
    if len(empty) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks are empty (no pixel of 128 or more, nor 0/1 labels) in {len(empty)} of {n} views "
            f"({', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}); masks must be white (255, or 1 in 0/1 "
            "masks) on the object and black (0) elsewhere"
        )
    # a mask that covers every image border all round is background drawn white: the masks are inverted
    framed = [
        s
        for s, m in masks.items()
        if m[0].mean() > 0.9 and m[-1].mean() > 0.9 and m[:, 0].mean() > 0.9 and m[:, -1].mean() > 0.9 and not m.all()
    ]
    if len(framed) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks look inverted: in {len(framed)} of {n} views the white part covers every image "
            f"border all round (mean white share {np.mean(list(shares.values())):.2f}); masks must be white on the "
            "object and black on the background: invert them"
        )
    if len(full) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks are all white in {len(full)} of {n} views; masks must be white on the object and "
            "black on the background"
        )
    bad = sorted(empty + full)
    if bad:
        log.warning("degenerate user masks (all white or all black) in %d view(s): %s", len(bad), ", ".join(bad))


def undistorter(sfm_dir: Path):
    """(distorted camera, function mask -> undistorted mask) for the photos' camera in ``sfm_dir/sparse/0``: the
    undistortion the sfm stage gave the photos (:mod:`neus_stage.colmap.undistort`)."""
    from .colmap.runtime import import_pycolmap
    from .colmap.undistort import undistortion

    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction(Path(sfm_dir) / "sparse" / "0")
    (camera,) = list(rec.cameras.values())
    und = undistortion(pycolmap, camera)

    def undistort(mask: np.ndarray) -> np.ndarray:
        return und.image(np.ascontiguousarray(mask.astype(np.uint8) * 255)) > MASK_LEVEL

    return camera, undistort


def _sfm_undistorter(sfm_dir: Path | None) -> Callable[[], tuple | None]:
    """A function giving :func:`undistorter` of ``sfm_dir`` (read once, when first needed), or None without
    the photos' model."""
    loaded: list = []

    def get() -> tuple | None:
        if not loaded and sfm_dir is not None and (Path(sfm_dir) / "sparse" / "0").is_dir():
            loaded.append(undistorter(sfm_dir))
        return loaded[0] if loaded else None

    return get


def _to_image_size(
    m: np.ndarray, size: tuple[int, int], path: Path, sfm: Callable[[], tuple | None]
) -> tuple[np.ndarray, bool]:
    """A user mask the size ``size`` (w, h) of its image, and whether it was undistorted to get there: a mask
    of the original photo is scaled to the sfm camera's size (where the sfm stage scaled the photos) and
    undistorted like the photo."""
    w, h = size
    if m.shape == (h, w):
        return m, False
    undistorted = False
    camera_undistort = sfm()
    if camera_undistort is not None:
        camera, undistort = camera_undistort
        same_aspect = abs(m.shape[1] / m.shape[0] - camera.width / camera.height) < 0.01
        if m.shape != (camera.height, camera.width) and same_aspect:
            # masks of the original photos, which the sfm stage brought to the working size: scale alike
            m = (
                np.asarray(
                    Image.fromarray(m.astype(np.uint8) * 255).resize(
                        (camera.width, camera.height), Image.Resampling.BILINEAR
                    )
                )
                > MASK_LEVEL
            )
        if m.shape == (camera.height, camera.width):
            m, undistorted = undistort(m), True
    if m.shape != (h, w):
        raise StageError(
            f"{path}: mask is {m.shape[1]}x{m.shape[0]} but its image is {w}x{h}; give masks the size of "
            "the original photos (they are undistorted like the photos when --sfm is given)"
        )
    return m, undistorted


def load_user_masks(
    user_masks: Path, images: dict[str, Path], sizes: dict[str, tuple[int, int]], sfm_dir: Path | None
) -> tuple[dict[str, np.ndarray], int]:
    """The user's mask of every image (by stem), each its image's size, and how many were undistorted."""
    paths = find_user_masks(user_masks, list(images), sfm_dir)
    sfm = _sfm_undistorter(sfm_dir)
    masks, n_undistorted = {}, 0
    for stem, path in paths.items():
        masks[stem], undistorted = _to_image_size(read_user_mask(path), sizes[stem], path, sfm)
        n_undistorted += undistorted
    if n_undistorted:
        log.info("undistorted %d user masks with the sfm camera", n_undistorted)
    return masks, n_undistorted
