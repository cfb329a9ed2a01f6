"""Feature matching of the sfm stage: the matcher and the image pairs it compares, matching in COLMAP's
database, and the check that the photos overlap."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from ..errors import StageError
from .runtime import DatabaseProgress, colmap_device, colmap_logs

log = logging.getLogger("neus_stage.sfm")  # the sfm stage's log (these are its steps): lines as before

MATCHERS = ("auto", "exhaustive", "retrieval", "sequential", "spatial", "vocabtree")
# retrieval matching: each photo with its RETRIEVAL_K most similar photos (and its next few by name)
RETRIEVAL_K = 20
# verified matches a pair needs to count as overlapping (the mapper's own minimum)
MIN_PAIR_MATCHES = 15
# RANSAC trials of a pair's geometric verification (COLMAP's default: 10000). A pair that does not overlap (a
# quarter of the retrieval pairs of a capture: similar-looking photos from opposite sides) finds no model and
# runs every trial, for each of the models it tries; 2000 trials still find a model with 96% probability at a
# 40% inlier ratio (the 7-point fundamental matrix). Measured on 2 cores: 50 rendered photos at 2 MP, matching
# 60 -> 30 s, verified pairs 409 -> 391, all 50 registered, rotation error 0.067 -> 0.071 deg (reruns of one
# setting differ by 0.005), centre error 0.51% -> 0.53% of the radius; dtu_scan24 (49 photos) 465 -> 463 pairs,
# 0.0870 -> 0.0866 deg, 0.356% -> 0.357%; dtu_scan65 508 pairs either way, the same poses.
VERIFY_MAX_TRIALS = 2000


def planned_pairs(matcher: str, n: int, overlap: int = 10) -> int:
    """Image pairs a matcher compares: every pair (exhaustive), each photo with its next ``overlap``
    (sequential, COLMAP's default overlap), or about RETRIEVAL_K per photo (retrieval: an upper bound)."""
    if matcher == "exhaustive":
        return n * (n - 1) // 2
    if matcher == "retrieval":
        return min(n * (n - 1) // 2, n * (RETRIEVAL_K + 3))
    return sum(min(overlap, n - 1 - i) for i in range(n))


def choose_matcher(matcher: str, n: int, exhaustive_max: int, video: bool = False) -> str:
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
    from ..geometry.retrieval import retrieval_pairs

    with contextlib.closing(pycolmap.Database.open(db_path)) as db:
        images = sorted(db.read_all_images(), key=lambda im: im.name)
        descriptors = [np.asarray(db.read_descriptors(im.image_id).data) for im in images]
    pairs = retrieval_pairs(descriptors, k=RETRIEVAL_K)
    out.write_text("".join(f"{images[i].name} {images[j].name}\n" for i, j in pairs))
    log.info(
        "retrieval: %d image pairs (each photo with its %d most similar and its next 3), against %d for "
        "exhaustive matching",
        len(pairs),
        RETRIEVAL_K,
        len(images) * (len(images) - 1) // 2,
    )
    return len(pairs)


def _check_vocabulary_tree(pycolmap):
    """The pairing options of vocabulary-tree matching; a StageError where no tree file is installed."""
    pairing = pycolmap.VocabTreePairingOptions()
    if not Path(str(pairing.vocab_tree_path)).is_file():
        raise StageError(
            "matcher 'vocabtree' needs a vocabulary tree file, which is not installed (no downloads at run "
            "time); use --matcher sequential or exhaustive"
        )
    return pairing


def _check_gps_positions(pycolmap, db_path: Path) -> None:
    """Spatial matching pairs photos by their EXIF GPS positions (COLMAP's pose priors): a StageError where
    no photo has one, a warning where some lack one."""
    with contextlib.closing(pycolmap.Database.open(db_path)) as db:
        n_priors, n_images = db.num_pose_priors(), db.num_images()
    if n_priors == 0:
        raise StageError(
            "matcher 'spatial' pairs photos by their GPS positions, but none of the photos has a GPS position "
            "in its EXIF; use --matcher exhaustive (up to a few hundred photos) or sequential (a video-like "
            "sequence)"
        )
    if n_priors < n_images:
        log.warning("only %d of %d photos have a GPS position: the others get no spatial matches", n_priors, n_images)


def _pairing(pycolmap, db_path: Path, matcher: str, n_photos: int) -> tuple[object | None, int]:
    """The pairing options of ``matcher`` (None: the matcher's defaults) and the pairs it will compare, after
    checking that its inputs exist (a vocabulary tree, GPS positions)."""
    if matcher == "vocabtree":
        return _check_vocabulary_tree(pycolmap), planned_pairs(matcher, n_photos)
    if matcher == "spatial":
        _check_gps_positions(pycolmap, db_path)
    if matcher == "retrieval":
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = str(Path(db_path).parent / "retrieval_pairs.txt")
        return pairing, _retrieval_pairs_file(pycolmap, db_path, Path(pairing.match_list_path))
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.loop_detection = False  # needs a vocabulary tree file, which would be a download
        return pairing, planned_pairs(matcher, n_photos)
    return None, planned_pairs(matcher, n_photos)


def match_features(pycolmap, db_path: Path, matcher: str, threads: int, n_photos: int) -> None:
    """Match the database's features with ``matcher`` (one of MATCHERS but auto) and verify the pairs."""
    device = colmap_device(pycolmap)
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = int(threads)
    options.use_gpu = device == pycolmap.Device.cuda
    # each pair's RANSAC seeded (COLMAP's default draws a random seed): a rerun verifies the same matches,
    # so the same photos give the same database, model and dataset
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = 0
    verification.ransac.max_num_trials = VERIFY_MAX_TRIALS
    kw = {"matching_options": options, "verification_options": verification, "device": device}
    pairing, total = _pairing(pycolmap, db_path, matcher, n_photos)
    progress = DatabaseProgress(db_path, "matches", f"{matcher} matching", total, "pairs")
    with colmap_logs(), progress:
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(db_path, **kw)
        elif matcher == "retrieval":
            pycolmap.match_image_pairs(db_path, pairing_options=pairing, **kw)
        elif matcher == "sequential":
            pycolmap.match_sequential(db_path, pairing_options=pairing, **kw)
        elif matcher == "spatial":
            pycolmap.match_spatial(db_path, **kw)
        else:
            pycolmap.match_vocabtree(db_path, pairing_options=pairing, **kw)


def check_matches(pycolmap, db_path: Path, photos_dir: Path) -> dict[str, int]:
    """Verified-match partners per photo stem; a StageError when no two photos overlap."""
    with contextlib.closing(pycolmap.Database.open(db_path)) as db:
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
    if n_pairs == 0:
        raise StageError(
            f"{photos_dir}: no overlap: no two photos share enough matched features ({MIN_PAIR_MATCHES}+). Take "
            "the photos from positions close enough that neighbours overlap by more than half, all around the object"
        )
    alone = sorted(s for s, k in partners.items() if k == 0)
    if alone:
        log.warning("no overlapping photo found for %s: they cannot register", ", ".join(alone))
    return partners
