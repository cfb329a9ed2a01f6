"""Finding, checking and reading the user's photos: every problem is reported before any long work starts."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import StageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mts", ".3gp"}
FRAMES_KIND = "frames"
"""``kind`` of the frames stage's ``report.json``, which lives among the frames it lists (neus_stage.video)."""


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video file (by its extension; the frames stage decodes it)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and Path(path).is_file()


def frames_report(folder: Path) -> dict | None:
    """The frames stage's report of a folder of frames extracted from a video, or None for a photo folder."""
    import json

    path = Path(folder) / "report.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == FRAMES_KIND else None


try:  # HEIC/HEIF photos (phones) through pillow-heif's Pillow plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a declared dependency; without it .heic files fail to open clearly
    pass
MIN_PHOTOS = 3
# EXIF tags that tell cameras and zoom settings apart: (IFD, tag, name); 0 = the main IFD, 0x8769 = Exif IFD
_CAMERA_TAGS = (
    (0, 0x010F, "Make"),
    (0, 0x0110, "Model"),
    (0x8769, 0x920A, "FocalLength"),
    (0x8769, 0xA405, "FocalLengthIn35mmFilm"),
)


def list_photos(folder: Path, min_photos: int = MIN_PHOTOS) -> list[Path]:
    """The image files of ``folder`` in sorted name order (the view order of every later stage).

    Hidden files are ignored; any other file that is not an image is an error, so that nothing is
    silently skipped. Two files with the same stem (``a.jpg`` and ``a.png``) are an error because
    every artifact is named after the stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: photo folder not found; check the 'photos' column of the scene table")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if frames_report(folder) is not None:  # frames from a video: their report lies beside them
        files = [p for p in files if p.name != "report.json"]
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    videos = [p for p in others if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos and len(videos) < len(files):
        raise StageError(
            f"{folder}: holds a video ({videos[0].name}) beside {len(files) - len(videos)} other file(s); a scene is "
            f"either photos or one video: move {videos[0].name} out of the photo folder and, to use it, give it a "
            f"scene row of its own whose 'photos' column names the video file itself (e.g. {videos[0]})"
        )
    if videos:
        raise StageError(
            f"{folder}: holds {'a video' if len(videos) == 1 else f'{len(videos)} videos'} ({videos[0].name}) and no "
            f"photos; name the video file itself in the scene table's 'photos' column (e.g. {videos[0]}), one "
            "scene per video"
        )
    if others:
        names = ", ".join(p.name for p in others[:5])
        raise StageError(
            f"{folder}: holds files that are not photos ({names}); move them out of the photo folder "
            f"(accepted: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    _warn_subfolders(folder, [p for p in entries if p.is_dir()])
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


_warned_subfolders: set[Path] = set()


def _warn_subfolders(folder: Path, subfolders: list[Path]) -> None:
    """Photos in subfolders are not part of the scene (only the folder's own files are): say so, once per
    folder, with the count, so that a photo set split over folders is never silently cut short."""
    counts = {}
    for sub in subfolders:
        n = sum(1 for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if n:
            counts[sub.name] = n
    if counts and folder.resolve() not in _warned_subfolders:
        _warned_subfolders.add(folder.resolve())
        where = ", ".join(f"{name}/ ({n})" for name, n in counts.items())
        log.warning(
            "%s: %d photo(s) in subfolders are not used: %s; only the folder's own photos make the scene (move "
            "them up into %s to use them)",
            folder,
            sum(counts.values()),
            where,
            folder.name,
        )


def to_rgb8(im: Image.Image) -> np.ndarray:
    """RGB uint8 of any Pillow image. 16-bit and float grey images (mode I;16, I, F) are scaled to 8 bits
    (Pillow's own convert("RGB") clips them, so a 16-bit PNG turns white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def _turned(im: Image.Image) -> bool:
    """Whether the image is stored turned by 90 degrees (EXIF orientation 5-8: width and height swap)."""
    return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def _may_hold_exif(path: Path, im: Image.Image) -> bool:
    """False where the file surely has no EXIF block. Pillow looks for a PNG's eXIf chunk after the image data
    by decoding the whole image (60 ms at 2 MP); a PNG whose header chunks have none and whose bytes never
    spell the chunk's name has none (a chance match in the compressed data only costs that decode)."""
    if im.format != "PNG" or "exif" in im.info:
        return True
    return b"eXIf" in Path(path).read_bytes()


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of a photo as displayed (EXIF orientation applied), from its header: nothing is decoded
    (a 12 MP photo: well under a millisecond, against tenths of a second to decode it)."""
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if _may_hold_exif(path, im) and _turned(im) else (w, h)


def read_photo(path: Path, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 (H,W,3) array with the EXIF orientation applied; a clear error for unreadable files.

    ``at_least`` (width, height, as displayed): a JPEG may be decoded at a reduced scale (libjpeg's DCT
    scaling: 1/2, 1/4, 1/8) no smaller than that, several times faster than the full decode when the photo
    is downscaled to a working size anyway (a 12 MP photo for a 1600 px working size decodes at 1/2)."""
    try:
        with Image.open(path) as im:
            if at_least is not None and im.format == "JPEG":
                w, h = at_least
                if _turned(im):
                    w, h = h, w
                im.draft("RGB", (w, h))
            im = ImageOps.exif_transpose(im)
            return to_rgb8(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        hint = ""
        if Path(path).suffix.lower() in (".heic", ".heif"):
            hint = " (HEIC needs the pillow-heif package: run `make setup`, or convert the photos to JPEG)"
        raise StageError(f"{path}: cannot read this image ({exc}){hint}; replace or remove the file") from exc


def camera_signature(path: Path) -> str | None:
    """The camera and zoom a photo's EXIF names ("Make Model, 35 mm, 52 mm-equiv."), or None without EXIF."""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            values = {}
            for ifd, tag, name in _CAMERA_TAGS:
                v = (exif if ifd == 0 else exif.get_ifd(ifd)).get(tag)
                if isinstance(v, bytes):
                    v = v.decode("ascii", "replace")
                if isinstance(v, str):
                    v = " ".join(v.replace("\0", " ").split())
                if v not in (None, "", 0):
                    values[name] = v
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None  # read_photo reports unreadable files
    if not values:
        return None
    parts = [" ".join(str(values[k]) for k in ("Make", "Model") if k in values) or "unknown camera"]
    if "FocalLength" in values:
        parts.append(f"{float(values['FocalLength']):.4g} mm")
    if "FocalLengthIn35mmFilm" in values:
        parts.append(f"{float(values['FocalLengthIn35mmFilm']):.4g} mm-equiv.")
    return ", ".join(parts)


def check_photos(paths: list[Path]) -> tuple[int, int]:
    """Open every photo once: corrupt files, differing sizes, exact duplicates and mixed cameras are errors.

    Every photo shares one camera calibration in the sfm stage, so photos whose EXIF names different
    cameras or focal lengths (a zoom) are refused; photos without EXIF cannot be told apart and pass.
    Returns the common (width, height) after EXIF orientation.
    """
    sizes: dict[tuple[int, int], list[str]] = {}
    digests: dict[str, Path] = {}
    cameras: dict[str, list[str]] = {}
    for p in paths:
        img = read_photo(p)
        signature = camera_signature(p)
        if signature is not None:
            cameras.setdefault(signature, []).append(p.name)
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
    if len(cameras) > 1:
        parts = "; ".join(f"{c}: {', '.join(n[:3])}{' ...' if len(n) > 3 else ''}" for c, n in cameras.items())
        raise StageError(
            f"{paths[0].parent}: photos from {len(cameras)} different cameras or zoom settings (EXIF: {parts}); "
            "every photo shares one camera calibration: use the photos of one camera at one focal length "
            "(move the others to a scene of their own)"
        )
    ((w, h),) = sizes
    return w, h
