"""Structure from motion with pycolmap: pose the photos, refine the intrinsics, undistort.

Layout written under ``out_dir``::

    images/<stem>.png          EXIF-upright copies of the photos (what COLMAP reads), named by stem
    database.db                COLMAP features and matches
    sparse/0/                  the largest model (cameras, images, points), distorted camera model
    undistorted/images/<stem>.png, undistorted/sparse/   PINHOLE images and model (what later stages read)
    report.json                registered / dropped photos, errors, camera, timings

Everything downstream is keyed by photo stem, never by index: a photo COLMAP could not register is
listed in the report and simply absent from the models, so no list can fall out of step.

Precision: DTU-style calibrated photos have a principal point several pixels away from the image
centre. COLMAP's mapper keeps the principal point fixed at the centre by default, which tilts every
camera by a fraction of a degree. After mapping we therefore run global bundle adjustments that also
refine the principal point (and all distortion terms of the OPENCV model), re-triangulating between
them; on the DTU scan 65 sample this brings the mean rotation error against the reference calibration
from ~0.7 deg down to a few hundredths of a degree (see tests/test_sfm.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import memory
from . import photos as photos_mod
from .artifacts.reports import write_report
from .errors import StageError
from .progress import Progress, track
from .timing import StageTimer

log = logging.getLogger(__name__)

MATCHERS = ("auto", "exhaustive", "retrieval", "sequential", "spatial", "vocabtree")
# retrieval matching: each photo with its RETRIEVAL_K most similar photos (and its next few by name)
RETRIEVAL_K = 20
MAPPERS = ("incremental", "global")
# keypoints per photo below which a photo is called "too plain" (SIFT finds thousands on a textured object)
MIN_KEYPOINTS = 100
# verified matches a pair needs to count as overlapping (the mapper's own minimum)
MIN_PAIR_MATCHES = 15


def _import_pycolmap():
    try:
        import pycolmap
    except ImportError as exc:  # pragma: no cover - the package depends on it
        raise StageError("pycolmap is not installed in this environment: run `make setup`") from exc
    pycolmap.logging.minloglevel = 2  # ERROR and above (some pycolmap calls reset it: see _colmap_logs)
    return pycolmap


_GLOG_LINE = re.compile(r"^\x1b?\[?[0-9;]*m?([IWEF])\d{8} [\d:.]+ +\d+ ([^\]]+)\] ?(.*)$")


@contextlib.contextmanager
def _colmap_logs():
    """Route COLMAP's C++ log lines (glog, written straight to file descriptor 2) into ``logging``.

    ``pycolmap.logging.minloglevel`` alone does not keep the rule log readable: pycolmap 4.2's
    bundle_adjustment resets it to INFO. Here INFO lines become DEBUG records (seen with ``-v``),
    warnings and errors become WARNING records.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (some embedded runners): leave it alone
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            m = _GLOG_LINE.match(line)
            if m is None:
                log.debug("colmap: %s", line)
            elif m.group(1) == "I":
                log.debug("colmap: %s", m.group(3))
            else:
                log.warning("colmap (%s): %s", m.group(2), m.group(3).replace("\x1b[m", ""))


def _device(pycolmap):
    return pycolmap.Device.cuda if getattr(pycolmap, "has_cuda", False) else pycolmap.Device.cpu


def working_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The size every stage works at: the photos' own, or scaled so that the long side is ``max_size``
    (0: full resolution)."""
    if max_size <= 0 or max(width, height) <= max_size:
        return width, height
    s = max_size / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def _write_upright_images(photos: list[Path], images_dir: Path, size: tuple[int, int]) -> None:
    """EXIF-normalised PNG copies named ``<stem>.png`` at the working ``size`` (COLMAP ignores EXIF
    orientation; every later stage reads these, or their undistorted versions)."""
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    for p in track(photos, "preparing photos", unit="photos"):
        img = Image.fromarray(photos_mod.read_photo(p, at_least=size))
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(images_dir / f"{p.stem}.png", compress_level=1)


# Counts the rows of a table of COLMAP's database every few seconds, printing each count. It runs as its own
# process: SQLite's locks are POSIX advisory locks, held per process, and closing any connection to a file
# releases all of that process's locks on it; pycolmap carries its own SQLite, which cannot know of a
# connection opened by Python's, so a reader in this process would drop COLMAP's locks mid-write (a 200-photo
# extraction ended with "database disk image is malformed"). Another process's readers are safe.
_COUNT_ROWS = """
import sqlite3, sys, time
db, table, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
while True:
    time.sleep(every)
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            print(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], flush=True)
        finally:
            con.close()
    except sqlite3.Error:  # locked by the writer, or not created yet: again later
        pass
"""


class _DatabaseProgress:
    """Progress of a COLMAP call that writes to its database (feature extraction, matching): a child process
    counts the rows of ``table`` every ``every`` seconds while the call runs (see ``_COUNT_ROWS``)."""

    def __init__(self, db_path: Path, table: str, desc: str, total: int, unit: str, every: float = 2.0):
        self.db_path, self.table, self.every = Path(db_path), table, every
        self.bar = Progress(desc, total, unit)
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                n = int(line)
                self.bar.set(min(n, self.bar.total or n))

    def _final_count(self) -> int | None:
        """The count once COLMAP has closed the database (no writer left: safe in this process)."""
        if not self.db_path.is_file():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=0.5)) as con:
                return int(con.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])
        except sqlite3.Error:
            return None

    def __enter__(self) -> _DatabaseProgress:
        self._proc = subprocess.Popen([sys.executable, "-c", _COUNT_ROWS, str(self.db_path), self.table,
                                       str(self.every)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, text=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()
        self._thread.join()
        n = self._final_count()
        if n is not None:
            self.bar.set(min(n, self.bar.total or n))
        self.bar.close()


def planned_pairs(matcher: str, n: int, overlap: int = 10) -> int:
    """Image pairs a matcher compares: every pair (exhaustive), each photo with its next ``overlap``
    (sequential, COLMAP's default overlap), or about RETRIEVAL_K per photo (retrieval: an upper bound)."""
    if matcher == "exhaustive":
        return n * (n - 1) // 2
    if matcher == "retrieval":
        return min(n * (n - 1) // 2, n * (RETRIEVAL_K + 3))
    return sum(min(overlap, n - 1 - i) for i in range(n))


def _extract(pycolmap, db_path: Path, images_dir: Path, names: list[str], camera_model: str,
             max_image_size: int, threads: int, max_features: int) -> None:
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = int(max_image_size)
    extraction.sift.max_num_features = int(max_features)
    extraction.num_threads = int(threads)
    device = _device(pycolmap)
    extraction.use_gpu = device == pycolmap.Device.cuda
    with _colmap_logs(), _DatabaseProgress(db_path, "keypoints", "SIFT features", len(names), "photos"):
        pycolmap.extract_features(db_path, images_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction, device=device)


def _check_features(pycolmap, db_path: Path, photos_dir: Path) -> dict[str, int]:
    db = pycolmap.Database.open(db_path)
    try:
        counts = {Path(im.name).stem: db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()}
    finally:
        db.close()
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


def _choose_matcher(matcher: str, n: int, exhaustive_max: int, video: bool = False) -> str:
    """``auto``: sequential for the frames of a video (neighbours in time overlap), else exhaustive up to
    ``exhaustive_max`` photos and retrieval above."""
    if matcher not in MATCHERS:
        raise StageError(f"unknown matcher '{matcher}'; choose one of {', '.join(MATCHERS)}")
    if matcher == "auto" and video:
        return "sequential"
    if matcher == "auto":
        return "exhaustive" if n <= exhaustive_max else "retrieval"
    return matcher


def _retrieval_pairs_file(pycolmap, db_path: Path, out: Path) -> int:
    """Write COLMAP's image-pair list for retrieval matching (:mod:`neus_stage.geometry.retrieval`); the pair
    count."""
    from .geometry.retrieval import retrieval_pairs

    db = pycolmap.Database.open(db_path)
    try:
        images = sorted(db.read_all_images(), key=lambda im: im.name)
        descriptors = [np.asarray(db.read_descriptors(im.image_id).data) for im in images]
    finally:
        db.close()
    pairs = retrieval_pairs(descriptors, k=RETRIEVAL_K)
    out.write_text("".join(f"{images[i].name} {images[j].name}\n" for i, j in pairs))
    log.info("retrieval: %d image pairs (each photo with its %d most similar and its next 3), against %d for "
             "exhaustive matching", len(pairs), RETRIEVAL_K, len(images) * (len(images) - 1) // 2)
    return len(pairs)


def _match(pycolmap, db_path: Path, matcher: str, threads: int, n_photos: int) -> None:
    device = _device(pycolmap)
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = int(threads)
    options.use_gpu = device == pycolmap.Device.cuda
    if matcher == "vocabtree":
        pairing = pycolmap.VocabTreePairingOptions()
        if not Path(str(pairing.vocab_tree_path)).is_file():
            raise StageError(
                "matcher 'vocabtree' needs a vocabulary tree file, which is not installed (no downloads at run "
                "time); use --matcher sequential or exhaustive"
            )
    if matcher == "spatial":  # pairs photos by their EXIF GPS positions (COLMAP's pose priors)
        db = pycolmap.Database.open(db_path)
        try:
            n_priors, n_images = db.num_pose_priors(), db.num_images()
        finally:
            db.close()
        if n_priors == 0:
            raise StageError(
                "matcher 'spatial' pairs photos by their GPS positions, but none of the photos has a GPS position "
                "in its EXIF; use --matcher exhaustive (up to a few hundred photos) or sequential (a video-like "
                "sequence)"
            )
        if n_priors < n_images:
            log.warning("only %d of %d photos have a GPS position: the others get no spatial matches", n_priors,
                        n_images)
    total = planned_pairs(matcher, n_photos)
    if matcher == "retrieval":
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = str(Path(db_path).parent / "retrieval_pairs.txt")
        total = _retrieval_pairs_file(pycolmap, db_path, Path(pairing.match_list_path))
    progress = _DatabaseProgress(db_path, "matches", f"{matcher} matching", total, "pairs")
    with _colmap_logs(), progress:
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(db_path, matching_options=options, device=device)
        elif matcher == "retrieval":
            pycolmap.match_image_pairs(db_path, matching_options=options, pairing_options=pairing, device=device)
        elif matcher == "sequential":
            pairing = pycolmap.SequentialPairingOptions()
            pairing.loop_detection = False  # needs a vocabulary tree file, which would be a download
            pycolmap.match_sequential(db_path, matching_options=options, pairing_options=pairing, device=device)
        elif matcher == "spatial":
            pycolmap.match_spatial(db_path, matching_options=options, device=device)
        else:
            pycolmap.match_vocabtree(db_path, matching_options=options, pairing_options=pairing, device=device)


def _check_matches(pycolmap, db_path: Path, photos_dir: Path) -> dict[str, int]:
    """Verified-match partners per photo stem; a StageError when no two photos overlap."""
    db = pycolmap.Database.open(db_path)
    try:
        names = {im.image_id: Path(im.name).stem for im in db.read_all_images()}
        partners = dict.fromkeys(names.values(), 0)
        pair_ids, geometries = db.read_two_view_geometries()
        n_pairs = 0
        for pair_id, geom in zip(pair_ids, geometries, strict=True):
            if len(geom.inlier_matches) < MIN_PAIR_MATCHES:
                continue
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            partners[names[a]] += 1
            partners[names[b]] += 1
            n_pairs += 1
    finally:
        db.close()
    if n_pairs == 0:
        raise StageError(
            f"{photos_dir}: no overlap: no two photos share enough matched features ({MIN_PAIR_MATCHES}+). Take "
            "the photos from positions close enough that neighbours overlap by more than half, all around the object"
        )
    alone = sorted(s for s, k in partners.items() if k == 0)
    if alone:
        log.warning("no overlapping photo found for %s: they cannot register", ", ".join(alone))
    return partners


def _map(pycolmap, db_path: Path, images_dir: Path, work: Path, mapper: str, threads: int, n_photos: int) -> dict:
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
        with _colmap_logs():
            if mapper == "incremental":
                options = pycolmap.IncrementalPipelineOptions()
                options.num_threads = int(threads)
                options.random_seed = 0
                with Progress("incremental mapping", n_photos, "photos registered") as bar:
                    models = pycolmap.incremental_mapping(db_path, images_dir, work, options=options,
                                                          next_image_callback=bar.update)
                    bar.set(max((m.num_reg_images() for m in models.values()), default=0))
                    return models
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = int(threads)
            options.random_seed = 0
            return pycolmap.global_mapping(db_path, images_dir, work, options=options)
    except (RuntimeError, ValueError) as exc:
        raise StageError(f"COLMAP's {mapper} mapper failed ({exc}); check that the photos overlap") from exc


# Camera models whose tangential terms (p1, p2) are refined only after the principal point is found with a
# radial-only model: for object-centred captures with a narrow field of view the principal point and the
# tangential distortion are nearly degenerate, and refining both at once lets the principal point drift by
# several pixels (0.4 deg mean rotation error on dtu_scan65 instead of 0.15 deg).
_TANGENTIAL_MODELS = {"OPENCV", "FULL_OPENCV"}


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
    with _colmap_logs():
        pycolmap.bundle_adjustment(rec, options)


def refine_intrinsics(pycolmap, rec, *, requested: str | None = None, max_reproj_error: float = 2.0,
                      min_pp_gain: float = 0.003) -> dict:
    """Global bundle adjustment of poses, points, focal length, principal point and distortion.

    COLMAP's mapper keeps the principal point at the image centre; here it is freed. For the OPENCV
    models the principal point is first estimated with the radial-only model (RADIAL: f, cx, cy, k1, k2),
    then the requested model refines focal length and every distortion term with the principal point
    held. Between rounds, observations whose reprojection error exceeds
    ``max(max_reproj_error, 3 x mean error)`` px are removed. Returns a small log of the rounds.
    """
    (camera_id,) = list(rec.cameras)  # one camera shared by all photos (CameraMode.SINGLE)
    camera = rec.camera(camera_id)
    requested = requested or camera.model_name
    rounds = []

    def record(stage: str) -> None:
        rec.update_point_3d_errors()
        rounds.append({"stage": stage, "model": camera.model_name,
                       "mean_reprojection_error_px": round(float(rec.compute_mean_reprojection_error()), 4),
                       "params": [round(float(x), 6) for x in camera.params]})
        log.info("%s: %s %s, reprojection error %.3f px", stage, camera.model_name,
                 np.round(camera.params, 3).tolist(), rounds[-1]["mean_reprojection_error_px"])

    if camera.model_name == "SIMPLE_RADIAL" and requested in _TANGENTIAL_MODELS | {"RADIAL"}:
        f, cx, cy, k1 = (float(x) for x in camera.params)  # the stable model the mapper ran with
        camera.model = pycolmap.CameraModelId.RADIAL
        camera.params = [f, cx, cy, k1, 0.0]
    elif camera.model_name in _TANGENTIAL_MODELS:
        fx, fy, cx, cy, k1, k2 = (float(x) for x in camera.params[:6])
        camera.model = pycolmap.CameraModelId.RADIAL
        camera.params = [0.5 * (fx + fy), cx, cy, k1, k2]
    # Free the principal point only where the data determine it. In object-centred captures a principal-
    # point shift is nearly the same as rotating every camera, unless points at other depths (a textured
    # background) break the tie. Measured: DTU scan 65 (12 px off-centre, textured table) lowers the
    # error by 0.56% when freed and rotation error drops 0.68 -> 0.15 deg; the demo (plain backdrop,
    # centred) gains 0.04% and drifts 8 px (1.3 deg instead of 0.2 deg). The 0.3% gate lies between.
    held = pycolmap.Reconstruction(rec)
    _bundle_adjust(pycolmap, held, principal_point=False)
    error_held = float(held.compute_mean_reprojection_error())
    _bundle_adjust(pycolmap, rec, principal_point=True)
    error_free = float(rec.compute_mean_reprojection_error())
    free_pp = error_free < (1.0 - min_pp_gain) * error_held
    log.info("principal point %s: reprojection error %.4f px free vs %.4f px held (needs %.1f%% gain)",
             "freed" if free_pp else "held at the centre", error_free, error_held, 100 * min_pp_gain)
    if not free_pp:
        camera.params = held.camera(camera_id).params
        _bundle_adjust(pycolmap, rec, principal_point=False)
    record("principal point" if free_pp else "principal point held")
    threshold = max(max_reproj_error, 3.0 * float(rec.compute_mean_reprojection_error()))
    n_removed = _filter_observations(rec, threshold)
    log.info("removed %d observations with reprojection error > %.2f px", n_removed, threshold)
    _bundle_adjust(pycolmap, rec, principal_point=free_pp)
    record("filtered")
    if requested in _TANGENTIAL_MODELS:
        f, cx, cy, k1, k2 = (float(x) for x in camera.params)
        n_params = len(pycolmap.Camera.create_from_model_name(0, requested, f, camera.width, camera.height).params)
        camera.model = getattr(pycolmap.CameraModelId, requested)
        params = np.zeros(n_params)  # identity distortion for the terms RADIAL lacks
        params[:6] = [f, f, cx, cy, k1, k2]
        camera.params = params
        _bundle_adjust(pycolmap, rec, principal_point=False)
        record("full model, principal point held")
    return {"observations_removed": n_removed, "filter_threshold_px": round(threshold, 3), "rounds": rounds,
            "principal_point_freed": bool(free_pp), "error_pp_free_px": error_free, "error_pp_held_px": error_held}


def _filter_observations(rec, max_error: float) -> int:
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


def _camera_json(camera) -> dict:
    return {
        "model": camera.model_name,
        "width": int(camera.width),
        "height": int(camera.height),
        "params": [float(x) for x in camera.params],
        "params_info": camera.params_info,
    }


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
    threads: int = -1,
) -> dict:
    """Pose the photos of ``photos_dir`` and write models, undistorted images and ``report.json`` to ``out_dir``.

    ``max_size`` is the pipeline's working image size (long side in pixels, 0: full resolution): larger photos
    are downscaled once, here, and every later stage works on those images. ``max_features``: SIFT features
    kept per photo (matching costs grow with their square; COLMAP's own default is 8192).

    Returns the report dictionary. Raises StageError for anything the user can fix (bad photos,
    photos without texture or overlap, too few registered photos).
    """
    photos_dir, out_dir = Path(photos_dir), Path(out_dir)
    timer = StageTimer(digits=2)
    timings, lap = timer.timings, timer.lap

    photos = photos_mod.list_photos(photos_dir)
    width, height = photos_mod.check_photos(photos)
    pycolmap = _import_pycolmap()
    if camera_model not in pycolmap.CameraModelId.__members__ or camera_model == "INVALID":
        models = ", ".join(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")
        raise StageError(f"unknown camera model '{camera_model}'; choose one of {models}")
    if not 0.0 <= min_registered <= 1.0:
        raise StageError(f"min_registered must be a share between 0 and 1, got {min_registered}")
    if max_features < 500:
        raise StageError(f"max_features {max_features}: too few SIFT features to register photos; use 1000 or more "
                         "(default 4096)")
    stems = [p.stem for p in photos]
    from_video = photos_mod.frames_report(photos_dir) is not None  # frames of a video, in time order
    matcher_used = _choose_matcher(matcher, len(photos), exhaustive_max, video=from_video)
    size = working_size(width, height, max_size)
    if size != (width, height):
        log.warning("photos are %dx%d: downscaled to %dx%d for every stage (images.max_size = %d; 0 keeps the full "
                    "resolution)", width, height, size[0], size[1], max_size)
    # the later stages hold every view at the working size at once (the training images and masks)
    memory.require(memory.image_bytes(len(photos), *size),
                   f"{len(photos)} photos at the working size {size[0]}x{size[1]}",
                   f"lower images.max_size (now {max_size}; neus-stage sfm --max-size) or use fewer photos")
    log.info("plan: %d photos %dx%d (working size %dx%d) from %s; camera model %s, %s matching (%d pairs), %s "
             "mapper, %s", len(photos), width, height, size[0], size[1], photos_dir, camera_model, matcher_used,
             planned_pairs(matcher_used, len(photos)), mapper, "CUDA" if pycolmap.has_cuda else "CPU")

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("sparse", "undistorted", "mapper", "report.json", "database.db"):
        target = out_dir / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    images_dir = out_dir / "images"
    db_path = out_dir / "database.db"
    t = time.perf_counter()
    _write_upright_images(photos, images_dir, size)
    names = [f"{s}.png" for s in stems]
    t = lap("prepare_s", t)

    log.info("[1/4] extracting SIFT features")
    _extract(pycolmap, db_path, images_dir, names, mapping_model(camera_model), max_image_size, threads,
             max_features)
    keypoints = _check_features(pycolmap, db_path, photos_dir)
    t = lap("features_s", t)

    log.info("[2/4] matching features (%s)", matcher_used)
    _match(pycolmap, db_path, matcher_used, threads, len(photos))
    partners = _check_matches(pycolmap, db_path, photos_dir)
    t = lap("matching_s", t)

    log.info("[3/4] mapping (%s)", mapper)
    models = _map(pycolmap, db_path, images_dir, out_dir / "mapper", mapper, threads, len(photos))
    shutil.rmtree(out_dir / "mapper", ignore_errors=True)
    if not models:
        raise StageError(
            f"{photos_dir}: COLMAP could not build any model from these photos (no pair of photos gave a reliable "
            "initial pose). Take more photos with more overlap and a textured, static object; avoid pure rotation "
            "about the camera"
        )
    rec = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    log.info("%d model(s); keeping the largest: %d of %d photos, %d points", len(models), rec.num_reg_images(),
             len(photos), rec.num_points3D())
    t = lap("mapping_s", t)

    refinement = refine_intrinsics(pycolmap, rec, requested=camera_model)
    t = lap("refine_s", t)

    registered = sorted(Path(im.name).stem for im in rec.images.values() if im.has_pose)
    dropped = sorted(set(stems) - set(registered))
    share = len(registered) / len(stems)
    camera = next(iter(rec.cameras.values()))
    report = {
        "photos_dir": str(photos_dir),
        "photos": [p.name for p in photos],  # sorted: a view's index here is its index in reference cameras
        "n_photos": len(stems),
        "image_size": [width, height],
        "working_size": list(size),
        "n_registered": len(registered),
        "registered": registered,
        "dropped": dropped,
        "n_models": len(models),
        "matcher": matcher_used,
        "from_video": from_video,
        "mapper": mapper,
        "device": "cuda" if pycolmap.has_cuda else "cpu",
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "n_points": int(rec.num_points3D()),
        "camera": _camera_json(camera),
        "refinement": refinement,
        "keypoints_per_photo": keypoints,
        "overlapping_photos_per_photo": partners,
        "timings": timings,
    }
    if share < min_registered:
        write_report(out_dir / "report.json", report)
        raise StageError(
            f"{photos_dir}: only {len(registered)} of {len(stems)} photos registered ({share:.0%} < "
            f"{min_registered:.0%}); dropped: {', '.join(dropped[:20])}{' ...' if len(dropped) > 20 else ''}. "
            "Remove blurry or unrelated photos, add photos between the dropped ones and their neighbours, or lower "
            "min_registered to go on without them (see sfm/report.json)"
        )
    if dropped:
        log.warning("%d photo(s) not registered and left out of every later stage: %s", len(dropped),
                    ", ".join(dropped))

    log.info("[4/4] writing the model and undistorting the images")
    sparse = out_dir / "sparse" / "0"
    sparse.mkdir(parents=True)
    rec.write(sparse)
    undistorted = out_dir / "undistorted"
    with _colmap_logs():
        pycolmap.undistort_images(undistorted, sparse, images_dir, image_names=[f"{s}.png" for s in registered],
                                  output_type="COLMAP", num_threads=int(threads))
    und = pycolmap.Reconstruction(undistorted / "sparse")
    und_camera = next(iter(und.cameras.values()))
    report["undistorted_camera"] = _camera_json(und_camera)
    lap("undistort_s", t)
    timer.total("total_s")
    write_report(out_dir / "report.json", report)
    log.info("sfm done in %.1f s: %d/%d registered, %.3f px reprojection error, camera %s %s",
             timings["total_s"], len(registered), len(stems), report["mean_reprojection_error_px"],
             camera.model_name, np.round(camera.params, 2).tolist())
    return report


def pose_accuracy(sparse_dir: Path, reference_npz: Path, stems: list[str], object_radius: float | None = None) -> dict:
    """Compare a model's poses with reference cameras (NeuS ``cameras_sphere.npz``, view i = ``stems[i]``).

    A similarity is fitted from the model's camera centres to the reference centres (matched by stem);
    returns mean / max rotation error (deg) and centre error (reference units, and % of ``object_radius``,
    by default the scale_mat radius), plus the registered intrinsics next to the reference ones.
    """
    import pycolmap

    from .artifacts.dataset import read_cameras_sphere
    from .geometry.cameras import camera_centers, decompose_projection, fit_similarity, rotation_angle_deg

    world_mats, scale_mat = read_cameras_sphere(reference_npz, n_views=len(stems))
    radius = float(object_radius if object_radius is not None else scale_mat[0, 0])
    rec = pycolmap.Reconstruction(Path(sparse_dir))
    index = {s: i for i, s in enumerate(stems)}
    src_c, dst_c, src_R, dst_R = [], [], [], []
    ref_centres = camera_centers(world_mats)
    for im in rec.images.values():
        if not im.has_pose:
            continue
        i = index[Path(im.name).stem]
        pose = im.cam_from_world()
        src_R.append(pose.rotation.matrix())
        src_c.append(im.projection_center())
        dst_c.append(ref_centres[i])
        dst_R.append(decompose_projection(world_mats[i][:3, :4])[1][:3, :3].T)
    sim = fit_similarity(np.array(src_c), np.array(dst_c))
    rot = rotation_angle_deg(np.array(src_R) @ sim.R.T, np.array(dst_R))
    cerr = np.linalg.norm(sim.apply(np.array(src_c)) - np.array(dst_c), axis=1)
    K_ref = decompose_projection(world_mats[0][:3, :4])[0]
    return {
        "n": len(src_c),
        "rotation_error_deg_mean": float(rot.mean()),
        "rotation_error_deg_max": float(rot.max()),
        "centre_error_mean": float(cerr.mean()),
        "centre_error_pct_radius_mean": float(100 * cerr.mean() / radius),
        "centre_error_pct_radius_max": float(100 * cerr.max() / radius),
        "similarity_scale": sim.scale,
        "reference_fx_fy_cx_cy": [K_ref[0, 0], K_ref[1, 1], K_ref[0, 2], K_ref[1, 2]],
    }
