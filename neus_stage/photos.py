"""Finding, checking and reading the user's photos: every problem is reported before any long work starts."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import StageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
MIN_PHOTOS = 3


def list_photos(folder: Path, min_photos: int = MIN_PHOTOS) -> list[Path]:
    """The image files of ``folder`` in sorted name order (the view order of every later stage).

    Hidden files are ignored; any other file that is not an image is an error, so that nothing is
    silently skipped. Two files with the same stem (``a.jpg`` and ``a.png``) are an error because
    every artifact is named after the stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: photo folder not found; check the 'photos' column of the scene table")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        names = ", ".join(p.name for p in others[:5])
        raise StageError(
            f"{folder}: holds files that are not photos ({names}); move them out of the photo folder "
            f"(accepted: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    photos = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise StageError(f"{folder}: no photos found; put the object's photos (jpg/png) in this folder")
    stems: dict[str, Path] = {}
    for p in photos:
        if p.stem in stems:
            raise StageError(
                f"{folder}: {stems[p.stem].name} and {p.name} share the name '{p.stem}'; "
                "rename one (every artifact is named after the photo's stem)"
            )
        stems[p.stem] = p
    if len(photos) < min_photos:
        raise StageError(
            f"{folder}: only {len(photos)} photo(s); a reconstruction needs at least {min_photos} "
            "overlapping photos of the object (30 or more all around it works best)"
        )
    return photos


def read_photo(path: Path) -> np.ndarray:
    """An RGB uint8 (H,W,3) array with the EXIF orientation applied; a clear error for unreadable files."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise StageError(f"{path}: cannot read this image ({exc}); replace or remove the file") from exc


def check_photos(paths: list[Path]) -> tuple[int, int]:
    """Open every photo once: corrupt files, differing sizes and exact duplicates are errors.

    Returns the common (width, height) after EXIF orientation.
    """
    sizes: dict[tuple[int, int], list[str]] = {}
    digests: dict[str, Path] = {}
    for p in paths:
        img = read_photo(p)
        h, w = img.shape[:2]
        sizes.setdefault((w, h), []).append(p.name)
        digest = hashlib.sha1(img.tobytes()).hexdigest()
        if digest in digests:
            raise StageError(
                f"{p}: identical to {digests[digest].name}; remove the duplicate photo "
                "(duplicates add no views and confuse pose estimation)"
            )
        digests[digest] = p
    if len(sizes) > 1:
        parts = "; ".join(f"{w}x{h}: {', '.join(n[:3])}{' ...' if len(n) > 3 else ''}" for (w, h), n in sizes.items())
        raise StageError(
            f"{paths[0].parent}: photos have different sizes ({parts}); use photos from one camera at one "
            "resolution and orientation (resize or split them into separate scenes)"
        )
    ((w, h),) = sizes
    return w, h
