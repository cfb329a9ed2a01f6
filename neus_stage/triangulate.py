"""3D points of a scene whose cameras are known (reference poses): SIFT features, matching, and COLMAP's
triangulation with every camera held fixed.

A scene posed by reference cameras (DTU's calibration, a rendered scene's true cameras) has no SfM
points, but the support plane under the object is found from points. pycolmap triangulates a model
whose cameras are given: the features and matches go into a COLMAP database, a Reconstruction is built
from the known intrinsics and poses (one pinhole camera per view), and ``triangulate_points`` adds the
points without moving any camera.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import StageError
from .geometry.cameras import decompose_projection

log = logging.getLogger(__name__)

EXHAUSTIVE_MAX = 150
"""Up to this many views every pair is matched; above, neighbours in the (sorted) view order."""


def _fresh_work_dir(work_dir: Path | None) -> tuple[Path, Path | None]:
    """The (emptied) folder for the COLMAP database, and the temporary folder to remove afterwards (or None)."""
    tmp = None
    if work_dir is None:
        tmp = work_dir = Path(tempfile.mkdtemp(prefix="triangulate-"))
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    return work_dir, tmp


def _match_features(
    pycolmap, db_path: Path, images_dir: Path, image_names: list[str], max_image_size: int, threads: int
) -> None:
    """SIFT features of every image and their matches (every pair, or sequential neighbours) into ``db_path``."""
    from .colmap.runtime import colmap_device, colmap_logs

    device = colmap_device(pycolmap)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = int(max_image_size)
    extraction.num_threads = int(threads)
    extraction.use_gpu = device == pycolmap.Device.cuda
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 1  # threaded matching verifies pairs in a different order run to run
    matching.use_gpu = device == pycolmap.Device.cuda
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = 0  # seeded: the same matches whichever thread verifies a pair
    with colmap_logs():
        pycolmap.extract_features(
            db_path,
            images_dir,
            image_names=list(image_names),
            camera_mode=pycolmap.CameraMode.PER_IMAGE,
            reader_options=reader,
            extraction_options=extraction,
            device=device,
        )
        if len(image_names) <= EXHAUSTIVE_MAX:
            pycolmap.match_exhaustive(
                db_path, matching_options=matching, verification_options=verification, device=device
            )
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.loop_detection = False  # needs a vocabulary tree file (a download)
            pycolmap.match_sequential(
                db_path,
                matching_options=matching,
                pairing_options=pairing,
                verification_options=verification,
                device=device,
            )


def _known_reconstruction(pycolmap, db_path: Path, image_names: list[str], world_mats: np.ndarray):
    """A Reconstruction of the database's images with their known cameras (pinhole, NeuS's K and pose)."""
    db = pycolmap.Database.open(db_path)
    try:
        db_images = {im.name: im for im in db.read_all_images()}
        db_cameras = {c.camera_id: c for c in db.read_all_cameras()}
    finally:
        db.close()
    index = {n: i for i, n in enumerate(image_names)}
    rec = pycolmap.Reconstruction()
    for name, im in sorted(db_images.items(), key=lambda kv: kv[1].image_id):
        if name not in index:
            continue
        K, pose = decompose_projection(world_mats[index[name]][:3, :4])
        cam = db_cameras[im.camera_id]
        # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); NeuS at (0, 0)
        camera = pycolmap.Camera(
            model="PINHOLE",
            width=cam.width,
            height=cam.height,
            params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5],
            camera_id=im.camera_id,
        )
        rec.add_camera_with_trivial_rig(camera)
        R = pose[:3, :3].T
        cam_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ pose[:3, 3])
        image = pycolmap.Image(name=name, camera_id=im.camera_id, image_id=im.image_id)
        rec.add_image_with_trivial_frame(image, cam_from_world)
    return rec


def _triangulate(
    pycolmap, rec, db_path: Path, images_dir: Path, work_dir: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points COLMAP triangulates with the cameras fixed: positions (P, 3), track lengths, errors (px)."""
    from .colmap.runtime import colmap_logs

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 1  # threaded bundle adjustment sums in a different order run to run
    options.random_seed = 0  # with the seeded verification above: the same points on every run
    with colmap_logs():
        rec = pycolmap.triangulate_points(
            rec, db_path, images_dir, work_dir / "sparse", options=options, refine_intrinsics=False
        )
    xyz, track, err = [], [], []
    for p in rec.points3D.values():
        xyz.append(p.xyz)
        track.append(p.track.length())
        err.append(p.error)
    return np.asarray(xyz, dtype=np.float64).reshape(-1, 3), np.asarray(track), np.asarray(err)


def _kept_points(
    xyz: np.ndarray, track: np.ndarray, err: np.ndarray, n_views: int, min_track: int, max_reproj_error: float
) -> tuple[np.ndarray, dict]:
    """The points with a long enough track and a small enough error, and the statistics."""
    keep = (track >= min_track) & (err <= max_reproj_error) if len(xyz) else np.zeros(0, dtype=bool)
    stats = {
        "views": n_views,
        "triangulated": int(len(xyz)),
        "kept": int(keep.sum()),
        "min_track": int(min_track),
        "max_reproj_error_px": float(max_reproj_error),
        "mean_reproj_error_px": float(err[keep].mean()) if keep.any() else None,
        "mean_track_length": float(track[keep].mean()) if keep.any() else None,
    }
    log.info(
        "triangulated %d points with the known cameras (%d kept: track >= %d, error <= %.1f px)",
        len(xyz),
        int(keep.sum()),
        min_track,
        max_reproj_error,
    )
    return xyz[keep], stats


def triangulate_known_cameras(
    images_dir: Path,
    image_names: list[str],
    world_mats: np.ndarray,
    *,
    work_dir: Path | None = None,
    max_image_size: int = 1600,
    threads: int = -1,
    min_track: int = 3,
    max_reproj_error: float = 2.0,
) -> tuple[np.ndarray, dict]:
    """Points (P,3) in the frame of ``world_mats`` (N,4,4, K[R|t], NeuS pixel convention: integer pixel
    centres) for the images ``image_names`` (one per world_mat, in order) under ``images_dir``, with
    statistics. Points seen in fewer than ``min_track`` views or reprojecting worse than
    ``max_reproj_error`` px on average are left out. ``work_dir`` (default: a temporary folder, removed
    afterwards) holds the COLMAP database. ``threads`` extract the features; matching and triangulation run on
    one thread with seeded RANSAC, so the same images give the same points on every run."""
    from .colmap.runtime import import_pycolmap

    pycolmap = import_pycolmap()
    images_dir = Path(images_dir)
    world_mats = np.asarray(world_mats, dtype=np.float64)
    if len(image_names) != len(world_mats):
        raise StageError(f"{images_dir}: {len(image_names)} images but {len(world_mats)} cameras")
    if len(image_names) < 2:
        raise StageError(f"{images_dir}: triangulation needs at least 2 views, got {len(image_names)}")
    work_dir, tmp = _fresh_work_dir(work_dir)
    try:
        db_path = work_dir / "database.db"
        _match_features(pycolmap, db_path, images_dir, image_names, max_image_size, threads)
        rec = _known_reconstruction(pycolmap, db_path, image_names, world_mats)
        xyz, track, err = _triangulate(pycolmap, rec, db_path, images_dir, work_dir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return _kept_points(xyz, track, err, len(image_names), min_track, max_reproj_error)
