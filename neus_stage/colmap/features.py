"""SIFT features of the sfm stage: the working image size, extraction into COLMAP's database, and the check
that the photos have enough keypoints."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..errors import StageError
from .runtime import DatabaseProgress, colmap_device, colmap_logs

log = logging.getLogger("neus_stage.sfm")  # the sfm stage's log (these are its steps): lines as before

# keypoints per photo below which a photo is called "too plain" (SIFT finds thousands on a textured object)
MIN_KEYPOINTS = 100
FIRST_OCTAVES = (-1, 0)
"""Where SIFT's scale space starts: -1 (COLMAP's default) the image doubled, for features finer than its
pixels; 0 the image's own scale. Measured on 50 photos rendered at 1661x1246 (README, scaling section): 0 is
1.7x faster (SIFT 3x, matching 2.5x) but its poses are 1.5x less accurate (rotation error 0.133 against 0.088
degrees), so -1 is the default and 0 a setting for users who trade accuracy for time."""


def working_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The size every stage works at: the photos' own, or scaled so that the long side is ``max_size``
    (0: full resolution)."""
    if max_size <= 0 or max(width, height) <= max_size:
        return width, height
    s = max_size / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def extract_features(
    pycolmap,
    db_path: Path,
    images_dir: Path,
    names: list[str],
    camera_model: str,
    max_image_size: int,
    threads: int,
    max_features: int,
    octave: int = -1,
) -> None:
    """SIFT features of the images ``names`` of ``images_dir`` into the database, one camera shared by all,
    with the scale space starting at ``octave`` (see FIRST_OCTAVES)."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = int(max_image_size)
    extraction.sift.max_num_features = int(max_features)
    extraction.sift.first_octave = int(octave)
    extraction.num_threads = int(threads)
    device = colmap_device(pycolmap)
    extraction.use_gpu = device == pycolmap.Device.cuda
    with colmap_logs():
        # the images first, in name order: extraction writes each photo when its features are done, so with
        # several threads the database ids (and the matching's pair order, hence its matches) would follow
        # which photo finished first; registered beforehand, a rerun builds the same database
        pycolmap.Database.open(db_path).close()  # created empty
        pycolmap.import_images(
            db_path, images_dir, camera_mode=pycolmap.CameraMode.SINGLE, image_names=names, options=reader
        )
    with colmap_logs(), DatabaseProgress(db_path, "keypoints", "SIFT features", len(names), "photos"):
        pycolmap.extract_features(
            db_path,
            images_dir,
            image_names=names,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=device,
        )


def check_features(pycolmap, db_path: Path, photos_dir: Path) -> dict[str, int]:
    """Keypoints per photo stem; a StageError when most photos are too plain for features."""
    with contextlib.closing(pycolmap.Database.open(db_path)) as db:
        counts = {Path(im.name).stem: db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()}
    plain = sorted(s for s, n in counts.items() if n < MIN_KEYPOINTS)
    if len(plain) > len(counts) / 2:
        raise StageError(
            f"{photos_dir}: photos too plain for features: {len(plain)} of {len(counts)} photos have fewer than "
            f"{MIN_KEYPOINTS} keypoints ({', '.join(plain[:8])}{' ...' if len(plain) > 8 else ''}); photograph a "
            "textured object, or add texture around it (newspaper, patterned cloth), in sharp, well-lit photos"
        )
    if plain:
        log.warning("few keypoints (<%d) in %s: these photos may not register", MIN_KEYPOINTS, ", ".join(plain))
    return counts
