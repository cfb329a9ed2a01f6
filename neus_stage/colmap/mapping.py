"""Mapping of the sfm stage: COLMAP's incremental or global mapper on the matched database, then global bundle
adjustments that refine the shared camera's intrinsics (principal point and distortion included)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..progress import Progress
from .runtime import colmap_logs

log = logging.getLogger("neus_stage.sfm")  # the sfm stage's log (these are its steps): lines as before

MAPPERS = ("incremental", "global")
# Camera models whose tangential terms (p1, p2) are refined only after the principal point is found with a
# radial-only model: for object-centred captures with a narrow field of view the principal point and the
# tangential distortion are nearly degenerate, and refining both at once lets the principal point drift by
# several pixels (0.4 deg mean rotation error on dtu_scan65 instead of 0.15 deg).
_TANGENTIAL_MODELS = {"OPENCV", "FULL_OPENCV"}

# Relative cost decrease at which a bundle adjustment stops (Ceres's own default; COLMAP's 0 lets each one run on to
# the gradient test or its iteration cap, long after the cost stopped moving). Measured (2 cores, mapper's model
# refined, 4 adjustments): 100 rendered photos 34.2 -> 5.7 s, rotation error 0.0945 -> 0.0947 deg, centre error
# 0.697% -> 0.700% of the radius; 25 dtu_scan65 photos at 2 MP 10.9 -> 1.5 s, 0.1748 -> 0.1754 deg, 0.4867% ->
# 0.4868%; 200 rendered photos 15.4 s (129 s in the scaling benchmark's run before), 0.088 deg.
BA_FUNCTION_TOLERANCE = 1e-6


def map_photos(pycolmap, db_path: Path, images_dir: Path, work: Path, mapper: str, threads: int, n_photos: int) -> dict:
    """The models (id -> pycolmap.Reconstruction) ``mapper`` builds from the matched database, written under
    ``work``; a StageError for an unknown or unavailable mapper, or one that fails."""
    if mapper not in MAPPERS:
        raise StageError(f"unknown mapper '{mapper}'; choose one of {', '.join(MAPPERS)}")
    if mapper == "global" and not hasattr(pycolmap, "global_mapping"):  # GLOMAP joined COLMAP in 3.14
        raise StageError(
            f"the global mapper needs pycolmap 3.14 or newer (this is {pycolmap.__version__}); use --mapper "
            "incremental or upgrade pycolmap"
        )
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        with colmap_logs():
            if mapper == "incremental":
                return _incremental_mapping(pycolmap, db_path, images_dir, work, threads, n_photos)
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = int(threads)
            options.random_seed = 0
            return pycolmap.global_mapping(db_path, images_dir, work, options=options)
    except (RuntimeError, ValueError) as exc:
        raise StageError(f"COLMAP's {mapper} mapper failed ({exc}); check that the photos overlap") from exc


def _incremental_mapping(pycolmap, db_path: Path, images_dir: Path, work: Path, threads: int, n_photos: int):
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = int(threads)
    options.random_seed = 0
    # the mapper's local and global adjustments stop like the refinement's (see BA_FUNCTION_TOLERANCE):
    # 200 rendered photos mapped in 39.4 s instead of 42.6, 100 in 12.1 instead of 15.3, the same poses
    options.ba_local_function_tolerance = BA_FUNCTION_TOLERANCE
    options.ba_global_function_tolerance = BA_FUNCTION_TOLERANCE
    with Progress("incremental mapping", n_photos, "photos registered") as bar:
        models = pycolmap.incremental_mapping(
            db_path, images_dir, work, options=options, next_image_callback=bar.update
        )
        bar.set(max((m.num_reg_images() for m in models.values()), default=0))
        return models


def mapping_model(requested: str) -> str:
    """The camera model the mapper runs with. Models with many distortion terms (OPENCV, RADIAL) are
    unstable from scratch on small object-centred sets (the demo: 2 of 36 photos registered with OPENCV,
    36 of 36 with SIMPLE_RADIAL), so mapping uses SIMPLE_RADIAL and refine_intrinsics then moves the
    camera to the requested model."""
    return "SIMPLE_RADIAL" if requested in _TANGENTIAL_MODELS | {"RADIAL"} else requested


def _bundle_adjust(pycolmap, rec, *, principal_point: bool) -> None:
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = True
    options.refine_principal_point = principal_point
    options.refine_extra_params = True
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY  # stray matches must not pull intrinsics
    options.ceres.solver_options.max_num_iterations = 100
    options.ceres.solver_options.function_tolerance = BA_FUNCTION_TOLERANCE
    with colmap_logs():
        pycolmap.bundle_adjustment(rec, options)


def _record_round(rec, camera, rounds: list[dict], stage: str) -> None:
    """Append the camera and the reprojection error after one round of refinement to ``rounds``; log them."""
    rec.update_point_3d_errors()
    rounds.append(
        {
            "stage": stage,
            "model": camera.model_name,
            "mean_reprojection_error_px": round(float(rec.compute_mean_reprojection_error()), 4),
            "params": [round(float(x), 6) for x in camera.params],
        }
    )
    log.info(
        "%s: %s %s, reprojection error %.3f px",
        stage,
        camera.model_name,
        np.round(camera.params, 3).tolist(),
        rounds[-1]["mean_reprojection_error_px"],
    )


def _start_radial(pycolmap, camera, requested: str) -> None:
    """Move the camera to the radial-only model (RADIAL: f, cx, cy, k1, k2) where the principal point is to be
    found with it first (see _TANGENTIAL_MODELS)."""
    if camera.model_name == "SIMPLE_RADIAL" and requested in _TANGENTIAL_MODELS | {"RADIAL"}:
        f, cx, cy, k1 = (float(x) for x in camera.params)  # the stable model the mapper ran with
        camera.model = pycolmap.CameraModelId.RADIAL
        camera.params = [f, cx, cy, k1, 0.0]
    elif camera.model_name in _TANGENTIAL_MODELS:
        fx, fy, cx, cy, k1, k2 = (float(x) for x in camera.params[:6])
        camera.model = pycolmap.CameraModelId.RADIAL
        camera.params = [0.5 * (fx + fy), cx, cy, k1, k2]


def _free_or_hold_principal_point(
    pycolmap, rec, camera_id: int, min_pp_gain: float
) -> tuple[object, bool, float, float]:
    """Bundle-adjust with the principal point held at the centre, then, from that solution, with it freed; keep
    the freed one where it lowers the reprojection error by ``min_pp_gain`` (a share): (the model kept, freed,
    error freed px, error held px). Starting the freed adjustment from the held optimum (a feasible point of
    the larger problem) means its error is never the higher one and it converges in a few iterations, and the
    held model is kept as it is rather than adjusted again."""
    # Free the principal point only where the data determine it. In object-centred captures a principal-
    # point shift is nearly the same as rotating every camera, unless points at other depths (a textured
    # background) break the tie. Measured: DTU scan 65 (12 px off-centre, textured table) lowers the
    # error by 0.56% when freed and rotation error drops 0.68 -> 0.15 deg; the demo (plain backdrop,
    # centred) gains 0.04% and drifts 8 px (1.3 deg instead of 0.2 deg). The 0.3% gate lies between.
    _bundle_adjust(pycolmap, rec, principal_point=False)
    error_held = float(rec.compute_mean_reprojection_error())
    freed = pycolmap.Reconstruction(rec)
    _bundle_adjust(pycolmap, freed, principal_point=True)
    error_free = float(freed.compute_mean_reprojection_error())
    free_pp = error_free < (1.0 - min_pp_gain) * error_held
    log.info(
        "principal point %s: reprojection error %.4f px free vs %.4f px held (needs %.1f%% gain)",
        "freed" if free_pp else "held at the centre",
        error_free,
        error_held,
        100 * min_pp_gain,
    )
    return (freed if free_pp else rec), free_pp, error_free, error_held


def _to_requested_model(pycolmap, camera, requested: str) -> None:
    """Move the RADIAL camera to the OPENCV model ``requested``, with identity distortion for the terms RADIAL
    lacks."""
    f, cx, cy, k1, k2 = (float(x) for x in camera.params)
    n_params = len(pycolmap.Camera.create_from_model_name(0, requested, f, camera.width, camera.height).params)
    camera.model = getattr(pycolmap.CameraModelId, requested)
    params = np.zeros(n_params)  # identity distortion for the terms RADIAL lacks
    params[:6] = [f, f, cx, cy, k1, k2]
    camera.params = params


def refine_intrinsics(
    pycolmap, rec, *, requested: str | None = None, max_reproj_error: float = 2.0, min_pp_gain: float = 0.003
) -> tuple[object, dict]:
    """Global bundle adjustment of poses, points, focal length, principal point and distortion.

    COLMAP's mapper keeps the principal point at the image centre; here it is freed. For the OPENCV
    models the principal point is first estimated with the radial-only model (RADIAL: f, cx, cy, k1, k2),
    then the requested model refines focal length and every distortion term with the principal point
    held. Between rounds, observations whose reprojection error exceeds
    ``max(max_reproj_error, 3 x mean error)`` px are removed. Returns the refined model (``rec`` itself, or
    the copy adjusted with the principal point freed) and a small log of the rounds.
    """
    (camera_id,) = list(rec.cameras)  # one camera shared by all photos (CameraMode.SINGLE)
    requested = requested or rec.camera(camera_id).model_name
    rounds: list[dict] = []
    _start_radial(pycolmap, rec.camera(camera_id), requested)
    rec, free_pp, error_free, error_held = _free_or_hold_principal_point(pycolmap, rec, camera_id, min_pp_gain)
    camera = rec.camera(camera_id)
    _record_round(rec, camera, rounds, "principal point" if free_pp else "principal point held")
    threshold = max(max_reproj_error, 3.0 * float(rec.compute_mean_reprojection_error()))
    n_removed = filter_observations(rec, threshold)
    log.info("removed %d observations with reprojection error > %.2f px", n_removed, threshold)
    _bundle_adjust(pycolmap, rec, principal_point=free_pp)
    _record_round(rec, camera, rounds, "filtered")
    if requested in _TANGENTIAL_MODELS:
        _to_requested_model(pycolmap, camera, requested)
        _bundle_adjust(pycolmap, rec, principal_point=False)
        _record_round(rec, camera, rounds, "full model, principal point held")
    return rec, {
        "observations_removed": n_removed,
        "filter_threshold_px": round(threshold, 3),
        "rounds": rounds,
        "principal_point_freed": bool(free_pp),
        "error_pp_free_px": error_free,
        "error_pp_held_px": error_held,
    }


def filter_observations(rec, max_error: float) -> int:
    """Drop track elements whose reprojection error exceeds ``max_error`` px (and points left with <2 views)."""
    removed = 0
    for pid in list(rec.point3D_ids()):
        pt = rec.point3D(pid)
        xyz = pt.xyz
        bad = []
        for el in pt.track.elements:
            image = rec.image(el.image_id)
            uv = image.project_point(xyz)
            if uv is None or np.linalg.norm(uv - image.point2D(el.point2D_idx).xy) > max_error:
                bad.append((el.image_id, el.point2D_idx))
        if not bad:
            continue
        if pt.track.length() - len(bad) < 2:
            rec.delete_point3D(pid)
        else:
            for image_id, idx in bad:
                rec.delete_observation(image_id, idx)
        removed += len(bad)
    return removed
