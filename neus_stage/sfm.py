"""Structure from motion with pycolmap: pose the photos, refine the intrinsics, undistort.

Layout written under ``out_dir``::

    images/<stem>.png          EXIF-upright copies of the photos (what COLMAP reads), named by stem
    database.db                COLMAP features and matches
    sparse/0/                  the largest model (cameras, images, points), distorted camera model
    undistorted/images/<stem>.png, undistorted/sparse/   PINHOLE images and model (what later stages read)
    report.json                registered / dropped photos, errors, camera, timings

Everything downstream is keyed by photo stem, never by index: a photo COLMAP could not register is
listed in the report and simply absent from the models, so no list can fall out of step.

This module is the stage (plan, extract, match, map, refine, undistort, report); the pycolmap steps themselves
are in :mod:`neus_stage.colmap`, and the comparison of a model's poses with reference cameras in
:mod:`neus_stage.reference_poses`.

Precision: DTU-style calibrated photos have a principal point several pixels away from the image
centre. COLMAP's mapper keeps the principal point fixed at the centre by default, which tilts every
camera by a fraction of a degree. After mapping we therefore run global bundle adjustments that also
refine the principal point (and all distortion terms of the OPENCV model), re-triangulating between
them; on the DTU scan 65 sample this brings the mean rotation error against the reference calibration
from ~0.7 deg down to a few hundredths of a degree (see tests/test_sfm.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import memory
from . import photos as photos_mod
from .artifacts.reports import write_report
from .colmap.features import FIRST_OCTAVES, check_features, extract_features, working_size
from .colmap.mapping import map_photos, mapping_model, refine_intrinsics
from .colmap.matching import check_matches, choose_matcher, match_features, planned_pairs
from .colmap.runtime import import_pycolmap
from .colmap.undistort import undistort
from .errors import StageError
from .threads import map_views, workers
from .timing import StageTimer

log = logging.getLogger(__name__)

# what a run leaves in out_dir besides images/, removed before it starts
_OUTPUTS = ("sparse", "undistorted", "mapper", "report.json", "database.db")


@dataclass
class _Plan:
    """What a run works on: the photos (sorted), their size and the working size, the matcher chosen."""

    photos_dir: Path
    photos: list[Path]
    image_size: tuple[int, int]
    working_size: tuple[int, int]
    matcher: str
    from_video: bool

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.photos]


def _check_settings(pycolmap, camera_model: str, min_registered: float, max_features: int) -> None:
    if camera_model not in pycolmap.CameraModelId.__members__ or camera_model == "INVALID":
        models = ", ".join(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")
        raise StageError(f"unknown camera model '{camera_model}'; choose one of {models}")
    if not 0.0 <= min_registered <= 1.0:
        raise StageError(f"min_registered must be a share between 0 and 1, got {min_registered}")
    if max_features < 500:
        raise StageError(
            f"max_features {max_features}: too few SIFT features to register photos; use 1000 or more (default 4096)"
        )


def _plan(
    photos_dir: Path, photos: list[Path], image_size: tuple[int, int], matcher: str, exhaustive_max: int, max_size: int
) -> _Plan:
    """The matcher and the working size for ``photos``, after checking that every stage can hold them."""
    from_video = photos_mod.frames_report(photos_dir) is not None  # frames of a video, in time order
    matcher_used = choose_matcher(matcher, len(photos), exhaustive_max, video=from_video)
    (width, height), size = image_size, working_size(*image_size, max_size)
    if size != (width, height):
        log.warning(
            "photos are %dx%d: downscaled to %dx%d for every stage (images.max_size = %d; 0 keeps the full resolution)",
            width,
            height,
            size[0],
            size[1],
            max_size,
        )
    # the later stages hold every view at the working size at once (the training images and masks)
    memory.require(
        memory.image_bytes(len(photos), *size),
        f"{len(photos)} photos at the working size {size[0]}x{size[1]}",
        f"lower images.max_size (now {max_size}; neus-stage sfm --max-size) or use fewer photos",
    )
    return _Plan(photos_dir, photos, image_size, size, matcher_used, from_video)


# A rough cost model of the CPU steps (core-seconds), fitted to scripts/bench_scaling.py on 2 cores (README,
# scaling section): SIFT and undistortion per photo and megapixel of the working size, matching per pair and
# megapixel (descriptors grow with the pixels until the cap), mapping and refinement together
# ~ photos^1.7 x megapixels^0.6 (more points from larger photos).
# Refitted on 12-02 after the verification cap (matching per planned pair, the upper bound the plan line uses).
_FEATURES_S_PER_MP = 0.6
_MATCHING_S_PER_PAIR_MP = 0.025
_UNDISTORT_S_PER_MP = 0.1  # OpenCV remap and PNG level 1 (pycolmap.undistort_images: 0.5)
_MAPPING_S = 0.010  # x photos^1.7 x (megapixels / 0.3)^0.6


def expected_seconds(n_photos: int, working_size: tuple[int, int], n_pairs: int, cores: int) -> dict[str, float]:
    """Expected wall seconds of the sfm stage's steps on ``cores`` CPU cores, decoding aside (a rough model:
    within a factor of 1.4 of the benchmark's runs from 25 photos at 0.3 MP to 200 at 12 MP; photos with little
    texture match faster, the mapper's cost varies with how the views overlap)."""
    mp = working_size[0] * working_size[1] / 1e6
    per_core = {
        "features": _FEATURES_S_PER_MP * n_photos * mp,
        "matching": _MATCHING_S_PER_PAIR_MP * n_pairs * mp,
        "mapping": _MAPPING_S * n_photos**1.7 * (mp / 0.3) ** 0.6,
        "undistortion": _UNDISTORT_S_PER_MP * n_photos * mp,
    }
    return {k: v / max(1, cores) for k, v in per_core.items()}


def _log_plan(plan: _Plan, camera_model: str, mapper: str, has_cuda: bool, threads: int) -> dict[str, float]:
    """Log what the run will do and about how long it takes on the CPU; the expected seconds per step."""
    (width, height), size = plan.image_size, plan.working_size
    pairs = planned_pairs(plan.matcher, len(plan.photos))
    cores = workers() if threads <= 0 else threads
    expected = expected_seconds(len(plan.photos), size, pairs, cores)
    total = sum(expected.values())
    log.info(
        "plan: %d photos %dx%d (working size %dx%d) from %s; camera model %s, %s matching (%d pairs), %s mapper, %s%s",
        len(plan.photos),
        width,
        height,
        size[0],
        size[1],
        plan.photos_dir,
        camera_model,
        plan.matcher,
        pairs,
        mapper,
        "CUDA" if has_cuda else "CPU",
        ""
        if has_cuda
        else f"; expected about {_minutes(total)} on {cores} cores ("
        + ", ".join(f"{k} {_minutes(v)}" for k, v in expected.items())
        + "; a rough model)",
    )
    return expected


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _clear_outputs(out_dir: Path) -> None:
    """Create ``out_dir`` and remove what an earlier run left in it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in _OUTPUTS:
        target = out_dir / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _write_upright_images(photos: list[Path], images_dir: Path, size: tuple[int, int]) -> None:
    """EXIF-normalised PNG copies named ``<stem>.png`` at the working ``size`` (COLMAP ignores EXIF
    orientation; every later stage reads these, or their undistorted versions)."""
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)

    def write(p: Path) -> None:  # decoding, resizing and encoding release the GIL: one photo per core
        img = Image.fromarray(photos_mod.read_photo(p, at_least=size))
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(images_dir / f"{p.stem}.png", compress_level=1)

    map_views(write, photos, "preparing photos", unit="photos")


def _largest_model(
    pycolmap, db_path: Path, images_dir: Path, out_dir: Path, mapper: str, threads: int, plan: _Plan
) -> tuple[object, int]:
    """The mapper's largest model (most registered photos, then most points) and the number of models."""
    models = map_photos(pycolmap, db_path, images_dir, out_dir / "mapper", mapper, threads, len(plan.photos))
    shutil.rmtree(out_dir / "mapper", ignore_errors=True)
    if not models:
        raise StageError(
            f"{plan.photos_dir}: COLMAP could not build any model from these photos (no pair of photos gave a "
            "reliable initial pose). Take more photos with more overlap and a textured, static object; avoid pure "
            "rotation about the camera"
        )
    rec = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    log.info(
        "%d model(s); keeping the largest: %d of %d photos, %d points",
        len(models),
        rec.num_reg_images(),
        len(plan.photos),
        rec.num_points3D(),
    )
    return rec, len(models)


def _camera_json(camera) -> dict:
    return {
        "model": camera.model_name,
        "width": int(camera.width),
        "height": int(camera.height),
        "params": [float(x) for x in camera.params],
        "params_info": camera.params_info,
    }


def _report(
    plan: _Plan,
    rec,
    n_models: int,
    mapper: str,
    has_cuda: bool,
    refinement: dict,
    keypoints: dict[str, int],
    partners: dict[str, int],
    timings: dict[str, float],
) -> dict:
    """The report of a run whose model is ``rec`` (``timings``: the timer's own dict, filled on to the end)."""
    registered = sorted(Path(im.name).stem for im in rec.images.values() if im.has_pose)
    return {
        "photos_dir": str(plan.photos_dir),
        "photos": [p.name for p in plan.photos],  # sorted: a view's index here is its index in reference cameras
        "n_photos": len(plan.photos),
        "image_size": list(plan.image_size),
        "working_size": list(plan.working_size),
        "n_registered": len(registered),
        "registered": registered,
        "dropped": sorted(set(plan.stems) - set(registered)),
        "n_models": n_models,
        "matcher": plan.matcher,
        "from_video": plan.from_video,
        "mapper": mapper,
        "device": "cuda" if has_cuda else "cpu",
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "n_points": int(rec.num_points3D()),
        "camera": _camera_json(next(iter(rec.cameras.values()))),
        "refinement": refinement,
        "keypoints_per_photo": keypoints,
        "overlapping_photos_per_photo": partners,
        "timings": timings,
    }


def _check_registered(report: dict, min_registered: float, report_path: Path) -> None:
    """A StageError (the report written) when fewer than ``min_registered`` of the photos registered; a warning
    naming the photos left out otherwise."""
    registered, dropped, n_photos = report["registered"], report["dropped"], report["n_photos"]
    share = len(registered) / n_photos
    if share < min_registered:
        write_report(report_path, report)
        raise StageError(
            f"{report['photos_dir']}: only {len(registered)} of {n_photos} photos registered ({share:.0%} < "
            f"{min_registered:.0%}); dropped: {', '.join(dropped[:20])}{' ...' if len(dropped) > 20 else ''}. "
            "Remove blurry or unrelated photos, add photos between the dropped ones and their neighbours, or lower "
            "min_registered to go on without them (see sfm/report.json)"
        )
    if dropped:
        log.warning(
            "%d photo(s) not registered and left out of every later stage: %s", len(dropped), ", ".join(dropped)
        )


def _write_and_undistort(pycolmap, rec, out_dir: Path, images_dir: Path, registered: list[str]) -> dict:
    """Write the model to ``sparse/0`` and the undistorted images and model to ``undistorted/``; the undistorted
    camera."""
    sparse = out_dir / "sparse" / "0"
    sparse.mkdir(parents=True)
    rec.write(sparse)
    und = undistort(pycolmap, rec, images_dir, out_dir / "undistorted", [f"{s}.png" for s in registered])
    return _camera_json(next(iter(und.cameras.values())))


def _log_done(report: dict) -> None:
    """The run's summary line: time, registered photos, reprojection error, camera."""
    log.info(
        "sfm done in %.1f s: %d/%d registered, %.3f px reprojection error, camera %s %s",
        report["timings"]["total_s"],
        report["n_registered"],
        report["n_photos"],
        report["mean_reprojection_error_px"],
        report["camera"]["model"],
        np.round(report["camera"]["params"], 2).tolist(),
    )


def run_sfm(
    photos_dir: Path,
    out_dir: Path,
    *,
    matcher: str = "auto",
    exhaustive_max: int = 40,
    mapper: str = "incremental",
    camera_model: str = "OPENCV",
    min_registered: float = 0.8,
    max_image_size: int = 3200,
    max_size: int = 1600,
    max_features: int = 4096,
    first_octave: int = -1,
    threads: int = -1,
) -> dict:
    """Pose the photos of ``photos_dir`` and write models, undistorted images and ``report.json`` to ``out_dir``.

    ``max_size`` is the pipeline's working image size (long side in pixels, 0: full resolution): larger photos
    are downscaled once, here, and every later stage works on those images. ``max_features``: SIFT features
    kept per photo (matching costs grow with their square; COLMAP's own default is 8192). ``first_octave``: where
    SIFT's scale space starts (-1: the image doubled, 0: its own scale, faster and less accurate; see
    :data:`neus_stage.colmap.features.FIRST_OCTAVES`).

    Returns the report dictionary. Raises StageError for anything the user can fix (bad photos,
    photos without texture or overlap, too few registered photos).
    """
    photos_dir, out_dir = Path(photos_dir), Path(out_dir)
    timer = StageTimer(digits=2)
    if first_octave not in FIRST_OCTAVES:
        raise StageError(f"first_octave {first_octave}: use -1 (the image doubled, the default) or 0 (its own scale)")
    photos = photos_mod.list_photos(photos_dir)
    image_size = photos_mod.check_photos(photos)
    pycolmap = import_pycolmap()
    _check_settings(pycolmap, camera_model, min_registered, max_features)
    plan = _plan(photos_dir, photos, image_size, matcher, exhaustive_max, max_size)
    expected = _log_plan(plan, camera_model, mapper, pycolmap.has_cuda, threads)

    _clear_outputs(out_dir)
    images_dir, db_path = out_dir / "images", out_dir / "database.db"
    t = time.perf_counter()
    _write_upright_images(photos, images_dir, plan.working_size)
    t = timer.lap("prepare_s", t)

    sift_size = working_size(*plan.working_size, max_image_size)
    log.info("[1/4] extracting SIFT features (%dx%d, first octave %d)", *sift_size, first_octave)
    names, model = [f"{s}.png" for s in plan.stems], mapping_model(camera_model)
    extract_features(pycolmap, db_path, images_dir, names, model, max_image_size, threads, max_features, first_octave)
    keypoints = check_features(pycolmap, db_path, photos_dir)
    t = timer.lap("features_s", t)

    log.info("[2/4] matching features (%s)", plan.matcher)
    match_features(pycolmap, db_path, plan.matcher, threads, len(photos))
    partners = check_matches(pycolmap, db_path, photos_dir)
    t = timer.lap("matching_s", t)

    log.info("[3/4] mapping (%s)", mapper)
    rec, n_models = _largest_model(pycolmap, db_path, images_dir, out_dir, mapper, threads, plan)
    t = timer.lap("mapping_s", t)
    rec, refinement = refine_intrinsics(pycolmap, rec, requested=camera_model)
    t = timer.lap("refine_s", t)

    report = _report(plan, rec, n_models, mapper, pycolmap.has_cuda, refinement, keypoints, partners, timer.timings)
    report["sift"] = {"size": list(sift_size), "first_octave": first_octave, "max_features": max_features}
    report["expected_s"] = {k: round(v, 1) for k, v in expected.items()}
    _check_registered(report, min_registered, out_dir / "report.json")
    log.info("[4/4] writing the model and undistorting the images")
    report["undistorted_camera"] = _write_and_undistort(pycolmap, rec, out_dir, images_dir, report["registered"])
    timer.lap("undistort_s", t)
    timer.total("total_s")
    write_report(out_dir / "report.json", report)
    _log_done(report)
    return report
