"""Mask stage on real photos: rembg offline, user masks, multi-view consistency, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage import masks as M
from neus_stage import masks_rembg
from neus_stage.errors import StageError
from neus_stage.geometry.mask_hull import iou
from neus_stage.masks_check import check_consistency, repair
from neus_stage.masks_user import load_user_masks, undistorter

pytest.importorskip("pycolmap")

SUBSET = [f"{i:03d}" for i in range(20, 32)]
REMBG_VIEWS = ["000", "012", "024", "036"]


def _ref_mask(dtu: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(dtu / "reference" / "mask" / f"{stem}.png").convert("L")) >= 128


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) >= 128


@pytest.fixture(scope="module")
def subset_sfm(dtu_scan65: Path, tmp_path_factory) -> Path:
    from neus_stage.sfm import run_sfm

    photos = tmp_path_factory.mktemp("photos")
    for s in SUBSET:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", photos)
    out = tmp_path_factory.mktemp("sfm")
    run_sfm(photos, out)
    return out


@pytest.fixture(scope="module")
def reference_user_masks(dtu_scan65: Path, tmp_path_factory) -> Path:
    """The reference masks of the subset, as a user would give them (for the original, distorted photos)."""
    d = tmp_path_factory.mktemp("user_masks")
    for s in SUBSET:
        shutil.copy(dtu_scan65 / "reference" / "mask" / f"{s}.png", d)
    return d


def _needs_model():
    if not masks_rembg.model_path("u2netp").is_file():
        pytest.skip("u2netp model not installed (make setup)")


# ------------------------------------------------------------------------------------------- rembg
def test_rembg_matches_reference(dtu_scan65, tmp_path):
    _needs_model()
    images = tmp_path / "images"
    images.mkdir()
    for s in REMBG_VIEWS:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", images)
    report = M.compute_masks(images, tmp_path / "masks")
    ious = []
    for s in REMBG_VIEWS:
        m = _read(tmp_path / "masks" / f"{s}.png")
        raw = np.asarray(Image.open(tmp_path / "masks" / f"{s}.png"))
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255} and raw.shape == (600, 800)
        ious.append(iou(m, _ref_mask(dtu_scan65, s)))
    assert min(ious) > 0.95 and np.mean(ious) > 0.97  # ANCHORS: 0.986 over the 49 views
    assert report["model"] == "u2netp" and report["consistency"] is None
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == [f"{s}.png" for s in REMBG_VIEWS]
    assert (tmp_path / "masks" / "overlay.jpg").is_file()
    assert json.loads((tmp_path / "masks" / "report.json").read_text())["n_images"] == 4


def test_missing_model_is_refused_without_download(dtu_scan65, tmp_path, monkeypatch):
    monkeypatch.setenv(masks_rembg.MODELS_ENV, str(tmp_path / "no_models"))
    with pytest.raises(StageError, match="model u2netp not installed.*make setup"):
        M.compute_masks(dtu_scan65 / "photos", tmp_path / "masks")


def test_rembg_lookup_is_offline(tmp_path, monkeypatch):
    """A model folder that holds a file under another name: rembg would download; we refuse instead."""
    _needs_model()
    monkeypatch.setenv(masks_rembg.MODELS_ENV, str(tmp_path))
    (tmp_path / "u2net").mkdir()
    (tmp_path / "u2net" / "u2net.onnx").write_bytes(b"")  # present for our check, but rembg reads u2net.onnx
    with masks_rembg.offline_rembg("u2net"):
        import pooch

        with pytest.raises(StageError, match="not installed"):
            pooch.retrieve("https://example.invalid/x.onnx", None)
    import pooch

    assert pooch.retrieve.__name__ == "retrieve"  # restored


# -------------------------------------------------------------------------------------- user masks
def test_user_masks_undistorted_and_consistent(subset_sfm, reference_user_masks, tmp_path):
    report = M.compute_masks(
        subset_sfm / "undistorted" / "images", tmp_path / "masks", user_masks=reference_user_masks, sfm_dir=subset_sfm
    )
    assert report["source"] == "user" and report["user_masks_undistorted"] == len(SUBSET)
    und_size = Image.open(subset_sfm / "undistorted" / "images" / "020.png").size
    for s in SUBSET:
        assert Image.open(tmp_path / "masks" / f"{s}.png").size == und_size
    c = report["consistency"]
    # 12 views of one arc bound the object loosely in depth: the reference masks reach a median IoU of 0.87 with
    # their hull (0.90 with all 49 views of DTU scan 24), and no view is an outlier
    assert c["n_views"] == len(SUBSET) and c["outliers"] == [] and c["median_iou"] > 0.85


def test_user_masks_mismatched_names(dtu_scan65, reference_user_masks, tmp_path):
    masks = tmp_path / "user"
    shutil.copytree(reference_user_masks, masks)
    (masks / "020.png").rename(masks / "IMG_020.png")
    images = tmp_path / "images"
    images.mkdir()
    for s in SUBSET:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", images)
    with pytest.raises(StageError, match=r"no mask for 1 image\(s\): 020.*IMG_020"):
        M.compute_masks(images, tmp_path / "out", user_masks=masks)


@pytest.mark.parametrize("value,word", [(0, "empty"), (255, "all white")])
def test_degenerate_masks_refused(dtu_scan65, tmp_path, value, word):
    images, masks = tmp_path / "images", tmp_path / "user"
    images.mkdir()
    masks.mkdir()
    for s in SUBSET[:4]:
        shutil.copy(dtu_scan65 / "photos" / f"{s}.jpg", images)
        Image.fromarray(np.full((600, 800), value, np.uint8)).save(masks / f"{s}.png")
    with pytest.raises(StageError, match=word):
        M.compute_masks(images, tmp_path / "out", user_masks=masks)


def test_inconsistent_masks_refused(subset_sfm, reference_user_masks, tmp_path):
    """Masks that outline a different region in every view (flipped) have no common hull."""
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for i, s in enumerate(SUBSET):
        m = np.asarray(Image.open(reference_user_masks / f"{s}.png"))
        m = m[::-1] if i % 2 else m[:, ::-1]
        Image.fromarray(np.ascontiguousarray(m)).save(flipped / f"{s}.png")
    with pytest.raises(StageError, match="disagree across views"):
        M.compute_masks(subset_sfm / "undistorted" / "images", tmp_path / "out", user_masks=flipped, sfm_dir=subset_sfm)


# ------------------------------------------------------------------------------------- consistency
def test_hull_repairs_a_broken_view(subset_sfm, reference_user_masks):
    """One view's mask misses half the object and another has a background blob: the hull repairs both."""
    images = subset_sfm / "undistorted" / "images"
    sizes = {p.stem: Image.open(p).size for p in images.glob("*.png")}
    good, _ = load_user_masks(reference_user_masks, {s: images / f"{s}.png" for s in SUBSET}, sizes, subset_sfm)
    broken = dict(good)
    cut = good["024"].copy()
    rows = np.nonzero(cut.any(1))[0]
    cut[: (rows[0] + rows[-1]) // 2] = False  # top half of the object lost
    broken["024"] = cut
    blob = good["027"].copy()
    blob[20:120, 20:160] = True  # a background region taken for the object
    broken["027"] = blob
    views = M.views_from_sfm(subset_sfm, SUBSET, sizes)
    final, c = repair(views, broken, check_consistency(views, broken, []))
    assert "024" in c["outliers"]
    assert iou(final["024"], good["024"]) > 0.85 > iou(cut, good["024"])
    assert final["027"][20:120, 20:160].mean() < 0.05  # the blob is gone (pixels within 2 voxels of the hull may stay)
    assert iou(final["027"], good["027"]) > 0.97
    for s in SUBSET:
        if s not in ("024", "027"):
            assert iou(final[s], good[s]) > 0.97


@pytest.mark.slow
def test_full_scan_rembg_with_consistency(dtu_scan65, tmp_path):
    _needs_model()
    from neus_stage.sfm import run_sfm

    run_sfm(dtu_scan65 / "photos", tmp_path / "sfm")
    cam_undistort = undistorter(tmp_path / "sfm")[1]
    report = M.compute_masks(tmp_path / "sfm" / "undistorted" / "images", tmp_path / "masks", sfm_dir=tmp_path / "sfm")
    ious = [
        iou(_read(tmp_path / "masks" / f"{s}.png"), cam_undistort(_ref_mask(dtu_scan65, s)))
        for s in report["final_foreground_share"]
    ]
    assert np.mean(ious) > 0.98  # measured 0.986
    assert report["consistency"]["outliers"] == []
