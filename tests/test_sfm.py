"""SfM stage on real photos (dtu_scan65) and on bad inputs: every failure is a StageError with advice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage.errors import StageError
from neus_stage.reference_poses import pose_accuracy
from neus_stage.sfm import run_sfm

pycolmap = pytest.importorskip("pycolmap")

SUBSET = [f"{i:03d}" for i in range(20, 32)]  # 12 neighbouring views of the middle ring


def _all_stems(dtu: Path) -> list[str]:
    return [p.stem for p in sorted((dtu / "photos").glob("*.jpg"))]


@pytest.fixture(scope="module")
def subset_sfm(dtu_scan65: Path, tmp_path_factory) -> tuple[Path, dict]:
    """12 dtu_scan65 photos plus one unrelated photo (random texture) that must be dropped, not shift indices."""
    photos = tmp_path_factory.mktemp("photos")
    for s in SUBSET:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((600, 800, 3)) * 255).astype(np.uint8)).save(photos / "zz_unrelated.png")
    out = tmp_path_factory.mktemp("sfm")
    report = run_sfm(photos, out, min_registered=0.8)
    return out, report


def test_subset_registers_and_reports(subset_sfm):
    out, report = subset_sfm
    assert report["n_photos"] == 13
    assert report["registered"] == SUBSET
    assert report["dropped"] == ["zz_unrelated"]
    assert report["camera"]["model"] == "OPENCV" and len(report["camera"]["params"]) == 8
    assert 0 < report["mean_reprojection_error_px"] < 1.0
    assert report["mean_track_length"] > 2 and report["n_points"] > 500
    assert set(report["timings"]) >= {"features_s", "matching_s", "mapping_s", "refine_s", "undistort_s", "total_s"}
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))


def test_outputs_keyed_by_stem(subset_sfm):
    out, report = subset_sfm
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == SUBSET + ["zz_unrelated"]
    und = sorted(p.stem for p in (out / "undistorted" / "images").glob("*.png"))
    assert und == SUBSET  # the dropped photo is absent, nothing is renumbered
    rec = pycolmap.Reconstruction(out / "undistorted" / "sparse")
    assert sorted(Path(im.name).stem for im in rec.images.values()) == SUBSET
    (cam,) = rec.cameras.values()
    assert cam.model_name == "PINHOLE"
    w, h = Image.open(out / "undistorted" / "images" / "020.png").size
    assert (w, h) == (cam.width, cam.height)
    assert pycolmap.Reconstruction(out / "sparse" / "0").num_reg_images() == 12


def test_subset_pose_accuracy(subset_sfm, dtu_scan65):
    out, _ = subset_sfm
    acc = pose_accuracy(
        out / "undistorted" / "sparse", dtu_scan65 / "reference" / "cameras_sphere.npz", _all_stems(dtu_scan65)
    )
    assert acc["n"] == 12
    assert acc["rotation_error_deg_mean"] < 0.5
    assert acc["centre_error_pct_radius_mean"] < 1.0


def test_principal_point_is_refined(subset_sfm):
    _, report = subset_sfm
    fx, fy, cx, cy = report["camera"]["params"][:4]
    assert abs(fx - 1446) < 15 and abs(fy - 1442) < 15
    # reference (411.4, 309.3) in OpenCV pixels = (411.9, 309.8) in COLMAP's; the mapper alone keeps (400, 300)
    assert abs(cx - 400.0) > 3 and abs(cx - 411.9) < 6


def test_too_few_registered_names_dropped(dtu_scan65, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in SUBSET[:10]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((600, 800, 3)) * 255).astype(np.uint8)).save(photos / "noise.png")
    with pytest.raises(StageError, match=r"10 of 11 photos registered.*dropped: noise"):
        run_sfm(photos, tmp_path / "sfm", min_registered=1.0)
    report = json.loads((tmp_path / "sfm" / "report.json").read_text())
    assert report["dropped"] == ["noise"]


@pytest.mark.slow
def test_full_scan_pose_accuracy(dtu_scan65, tmp_path):
    report = run_sfm(dtu_scan65 / "photos", tmp_path / "sfm")
    assert report["n_registered"] == 49
    acc = pose_accuracy(
        tmp_path / "sfm" / "undistorted" / "sparse",
        dtu_scan65 / "reference" / "cameras_sphere.npz",
        _all_stems(dtu_scan65),
    )
    # measured: ~0.15 deg, ~0.57 % of the radius; with the reference intrinsics held fixed the same
    # photos give 0.146 deg / 0.49 %, the floor set by the reference calibration itself
    assert acc["rotation_error_deg_mean"] < 0.2
    assert acc["centre_error_pct_radius_mean"] < 0.8


# ------------------------------------------------------------------------------------------ bad inputs
def _save(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_two_photos(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        _save(d / f"{i}.png", rng.random((60, 80, 3)) * 255)
    with pytest.raises(StageError, match="only 2 photo"):
        run_sfm(d, tmp_path / "out")


def test_corrupt_jpg(dtu_scan65, tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for s in SUBSET[:3]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", d)
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(StageError, match=r"bad\.jpg: cannot read"):
        run_sfm(d, tmp_path / "out")
    assert not (tmp_path / "out" / "database.db").exists()  # refused before any long work


def test_differing_sizes(dtu_scan65, tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for s in SUBSET[:3]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", d)
    Image.open(dtu_scan65 / "photos" / "030.jpg").resize((400, 300)).save(d / "small.jpg")
    with pytest.raises(StageError, match="different sizes"):
        run_sfm(d, tmp_path / "out")


def test_plain_photos(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for i in range(5):  # smooth gradients: distinct photos without texture
        ramp = np.linspace(0, 60 + 20 * i, 320)[None, :, None]
        _save(d / f"{i}.png", np.broadcast_to(ramp, (240, 320, 3)) + 40)
    with pytest.raises(StageError, match="too plain for features"):
        run_sfm(d, tmp_path / "out")


def test_no_overlap(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):  # textured, but every photo shows different content
        _save(d / f"{i}.png", ndimage_smooth(rng.random((240, 320))) * 255)
    with pytest.raises(StageError, match="no overlap|could not build any model|photos registered"):
        run_sfm(d, tmp_path / "out")


def ndimage_smooth(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    a = ndimage.gaussian_filter(a, 2.0)
    a = (a - a.min()) / (a.max() - a.min())
    return np.repeat(a[..., None], 3, axis=2)


def test_unknown_camera_model(dtu_scan65, tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for s in SUBSET[:3]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", d)
    with pytest.raises(StageError, match="unknown camera model 'FISHEYEZ'"):
        run_sfm(d, tmp_path / "out", camera_model="FISHEYEZ")


# -------------------------------------------------------------------------------- matchers, mappers, GPU
def test_matcher_choice_by_photo_count():
    from neus_stage.colmap.matching import choose_matcher

    assert choose_matcher("auto", 40, 40) == "exhaustive"
    assert choose_matcher("auto", 41, 40) == "retrieval"  # vocabtree would need a downloaded tree
    assert choose_matcher("spatial", 10, 150) == "spatial"
    with pytest.raises(StageError, match="unknown matcher 'fast'"):
        choose_matcher("fast", 10, 150)


def test_gpu_used_where_pycolmap_has_cuda(monkeypatch):
    from neus_stage.colmap.runtime import colmap_device

    monkeypatch.setattr(pycolmap, "has_cuda", True)
    assert colmap_device(pycolmap) == pycolmap.Device.cuda
    monkeypatch.setattr(pycolmap, "has_cuda", False)
    assert colmap_device(pycolmap) == pycolmap.Device.cpu


def test_global_mapper(dtu_scan65, tmp_path):
    """GLOMAP through pycolmap: measured 12/12 registered, 0.67 deg, 0.29 % of the radius (incremental: 0.31 deg)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in SUBSET:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    report = run_sfm(photos, tmp_path / "sfm", mapper="global")
    assert report["mapper"] == "global" and report["registered"] == SUBSET
    acc = pose_accuracy(
        tmp_path / "sfm" / "undistorted" / "sparse",
        dtu_scan65 / "reference" / "cameras_sphere.npz",
        _all_stems(dtu_scan65),
    )
    assert acc["rotation_error_deg_mean"] < 1.0 and acc["centre_error_pct_radius_mean"] < 1.0


def test_global_mapper_missing_is_refused(tmp_path, monkeypatch):
    from neus_stage.colmap.mapping import map_photos

    monkeypatch.delattr(pycolmap, "global_mapping")
    with pytest.raises(StageError, match="global mapper needs pycolmap 3.14 or newer"):
        map_photos(pycolmap, tmp_path / "database.db", tmp_path, tmp_path / "mapper", "global", 1, 1)


@pytest.mark.parametrize("matcher,message", [("spatial", "GPS"), ("vocabtree", "vocabulary tree")])
def test_matchers_without_their_inputs_are_refused(dtu_scan65, tmp_path, matcher, message):
    """Spatial matching needs GPS positions (DTU photos have none), vocabtree a tree file (never downloaded)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in SUBSET[:3]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    with pytest.raises(StageError, match=message):
        run_sfm(photos, tmp_path / "sfm", matcher=matcher)


def test_large_photos_are_downscaled_to_the_working_size(tmp_path):
    """images.max_size: photos above it are downscaled once, in the sfm stage, and every later stage reads
    those images (the undistorted ones at the same size); the report says so."""
    demo = Path(__file__).resolve().parents[1] / "resources" / "demo" / "photos"
    report = run_sfm(demo, tmp_path / "sfm", max_size=320)
    assert report["image_size"] == [400, 300] and report["working_size"] == [320, 240]
    assert report["n_registered"] >= 30
    sizes = {Image.open(p).size for p in (tmp_path / "sfm" / "undistorted" / "images").glob("*.png")}
    assert len(sizes) == 1 and max(next(iter(sizes))) <= 320
    assert report["undistorted_camera"]["width"] <= 320


def test_retrieval_matching_pairs_similar_photos(dtu_scan65, tmp_path):
    """Retrieval matching (a bag of words learnt from the photos' own SIFT features) compares fewer pairs than
    exhaustive matching and still registers every photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    stems = [f"{i:03d}" for i in range(0, 49, 2)]
    for s in stems:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    report = run_sfm(photos, tmp_path / "sfm", matcher="retrieval")
    assert report["matcher"] == "retrieval" and report["n_registered"] == len(stems)
    pairs = (tmp_path / "sfm" / "retrieval_pairs.txt").read_text().splitlines()
    assert len(pairs) < len(stems) * (len(stems) - 1) // 2


@pytest.mark.slow
def test_retrieval_poses_as_well_as_exhaustive(dtu_scan65, tmp_path):
    """All 49 photos of DTU scan 65: retrieval matches 616 pairs instead of 1176 and its poses are as accurate
    (measured: 0.147 deg mean rotation error against the reference, exhaustive 0.162 deg)."""
    stems = [f"{i:03d}" for i in range(49)]
    ref = dtu_scan65 / "reference" / "cameras_sphere.npz"
    errors = {}
    for matcher in ("retrieval", "exhaustive"):
        run_sfm(dtu_scan65 / "photos", tmp_path / matcher, matcher=matcher)
        errors[matcher] = pose_accuracy(tmp_path / matcher / "undistorted" / "sparse", ref, stems)
    retrieval, exhaustive = errors["retrieval"], errors["exhaustive"]
    assert retrieval["rotation_error_deg_mean"] <= exhaustive["rotation_error_deg_mean"] + 0.05
    assert retrieval["centre_error_pct_radius_mean"] <= exhaustive["centre_error_pct_radius_mean"] + 0.1


def test_first_octave_is_reported_and_checked(subset_sfm, tmp_path):
    """sfm.first_octave: the report says where SIFT started; a bad value stops the stage before any work,
    naming the setting."""
    _, report = subset_sfm
    assert report["sift"] == {"size": [800, 600], "first_octave": -1, "max_features": 4096}
    with pytest.raises(StageError, match="first_octave 1: use -1"):
        run_sfm(tmp_path, tmp_path / "out", first_octave=1)


def test_same_photos_give_the_same_database(dtu_scan65, tmp_path):
    """A rerun on the same photos builds the same COLMAP database: the photos get their ids in name order
    (not in the order their features finished on several threads), so every pair is matched in the same
    direction, and every pair's RANSAC is seeded, so it keeps the same inliers. (The incremental mapper on
    several threads can still end a few hundredths of a pixel apart between runs.)"""
    import contextlib

    photos = tmp_path / "photos"
    photos.mkdir()
    for s in SUBSET[:8]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    runs = []
    for k in range(2):
        out = tmp_path / f"sfm{k}"
        report = run_sfm(photos, out)
        with contextlib.closing(pycolmap.Database.open(out / "database.db")) as db:
            names = {im.image_id: im.name for im in db.read_all_images()}
            ids, geoms = db.read_two_view_geometries()
            inliers = {
                tuple(names[i] for i in pycolmap.pair_id_to_image_pair(int(p))): len(g.inlier_matches)
                for p, g in zip(ids, geoms)
            }
        runs.append((sorted(names.items()), inliers, report["registered"]))
    assert [n for _, n in runs[0][0]] == sorted(f"{s}.png" for s in SUBSET[:8])  # ids in name order
    assert runs[0] == runs[1]


def test_the_plan_says_about_how_long_the_stage_takes(subset_sfm):
    """The plan line's estimate (a rough model fitted to the scaling benchmark on 2 cores): it is in the report,
    grows with the photos, their size and the pairs, shrinks with the cores, and for 200 photos at the working
    size 1600x1200 on 2 cores, with the plan's upper bound of pairs, says 4-9 minutes (the benchmark's run of
    12-02 took 6.5, 6.2 without decoding)."""
    from neus_stage.sfm import expected_seconds

    _, report = subset_sfm
    assert set(report["expected_s"]) == {"features", "matching", "mapping", "undistortion"}
    small, big = expected_seconds(50, (640, 480), 1000, 2), expected_seconds(200, (640, 480), 4000, 2)
    assert all(big[k] > small[k] for k in small)
    assert sum(expected_seconds(50, (1600, 1200), 1000, 2).values()) > sum(small.values())
    assert sum(expected_seconds(50, (640, 480), 1000, 8).values()) < sum(small.values())
    assert 240 < sum(expected_seconds(200, (1600, 1200), 4600, 2).values()) < 540


def test_undistortion_is_colmaps(subset_sfm, tmp_path):
    """The stage's undistorted images and model (neus_stage.colmap.undistort) are what pycolmap's own
    undistorter makes of the same model and photos: same camera and keypoints; pixels equal within one grey level
    but at sharp edges, where OpenCV's bilinear weights (steps of 1/32 px) differ from COLMAP's by a few levels."""
    out, report = subset_sfm
    ref = tmp_path / "colmap"
    pycolmap.undistort_images(
        ref, out / "sparse" / "0", out / "images", image_names=[f"{s}.png" for s in report["registered"]]
    )
    ours = pycolmap.Reconstruction(out / "undistorted" / "sparse")
    theirs = pycolmap.Reconstruction(ref / "sparse")
    (cam,), (ref_cam,) = ours.cameras.values(), theirs.cameras.values()
    assert (cam.model_name, cam.width, cam.height) == (ref_cam.model_name, ref_cam.width, ref_cam.height)
    np.testing.assert_allclose(cam.params, ref_cam.params, atol=1e-9)
    distorted = next(iter(pycolmap.Reconstruction(out / "sparse" / "0").cameras.values()))
    assert abs(distorted.params[4]) > 1e-3  # a real lens distortion to undo (k1 of dtu's camera)
    for image_id, image in ours.images.items():
        a = np.array([p.xy for p in image.points2D])
        b = np.array([p.xy for p in theirs.images[image_id].points2D])
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert ours.num_points3D() == theirs.num_points3D()
    for s in report["registered"]:
        a = np.asarray(Image.open(out / "undistorted" / "images" / f"{s}.png"), dtype=int)
        b = np.asarray(Image.open(ref / "images" / f"{s}.png"), dtype=int)
        assert a.shape == b.shape
        diff = np.abs(a - b)
        assert diff.max() <= 8 and (diff > 1).mean() < 1e-3 and diff.mean() < 0.1, (s, diff.max(), diff.mean())
