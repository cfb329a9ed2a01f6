"""Masks on rendered hard scenes: rembg alone against the true masks, and after the multi-view repair.

Each scene is rendered small (rembg runs about a second a view on 2 cores), masked by the real masks stage
(``compute_masks`` with the reference cameras) while the raw rembg probabilities are captured on the way.
Measured (reference cameras; IoU mean / worst view against the true masks):

| scene | views, size | raw rembg | repaired |
|---|---|---|---|
| cut (EXIF-rotated photos) | 24, 200x150 | 0.982 / 0.936 | 0.980 / 0.936 |
| floor (EXIF-rotated photos) | 24, 200x150 | 0.980 / 0.952 | 0.980 / 0.955 |
| parts | 24, 320x240 | 0.956 / 0.576 | 0.973 / 0.935 |

The slow test runs SfM on 36 views at 400x300 of ``parts`` (rembg misses a part in three views) and repairs
with the SfM cameras: measured 0.947 / 0.494 raw, 0.971 / 0.882 repaired.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage import masks as M
from neus_stage import masks_rembg
from neus_stage.errors import StageError
from neus_stage.geometry.mask_hull import iou
from neus_stage.masks_user import undistorter

pytest.importorskip("pycolmap")

# scene -> (views, width, height, seed, EXIF-rotated photos)
SCENES = {
    "cut": (24, 200, 150, 0, True),
    "floor": (24, 200, 150, 0, True),
    "parts": (24, 320, 240, 1, False),
}


def _needs_model() -> None:
    if not masks_rembg.model_path("u2netp").is_file():
        pytest.skip("u2netp model not installed (make setup)")


def _true_masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) >= 128 for p in sorted(folder.glob("*.png"))}


def _masks_with_raw(images: Path, out: Path, **kwargs) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the masks stage and also keep what rembg alone said: (report, raw masks, final masks)."""
    captured: dict[str, np.ndarray] = {}
    real = masks_rembg.rembg_probabilities

    def keep(session, paths):
        probs = real(session, paths)
        captured.update(probs)
        return probs

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(masks_rembg, "rembg_probabilities", keep)
        report = M.compute_masks(images, out, **kwargs)
    raw = {s: p >= 255 * report["threshold"] for s, p in captured.items()}
    return report, raw, _true_masks(out)


@pytest.fixture(scope="session", params=list(SCENES))
def hard_scene(request, tmp_path_factory) -> dict:
    """A rendered hard scene masked with the reference cameras: IoUs of raw rembg and of the repaired masks."""
    _needs_model()
    from neus_stage.synth import render_scene

    scene = request.param
    n, w, h, seed, rotate = SCENES[scene]
    root = tmp_path_factory.mktemp(f"hard_{scene}")
    render_scene(root, scene=scene, n_views=n, width=w, height=h, seed=seed, exif_rotate=rotate, gt_resolution=64)
    report, raw, final = _masks_with_raw(root / "photos", root / "out", cameras=root / "cameras_sphere.npz")
    true = _true_masks(root / "masks")
    return {
        "scene": scene,
        "report": report,
        "raw": {s: iou(raw[s], true[s]) for s in true},
        "repaired": {s: iou(final[s], true[s]) for s in true},
        "true": true,
    }


def test_repaired_masks_match_the_true_masks(hard_scene):
    raw, rep = hard_scene["raw"], hard_scene["repaired"]
    assert len(rep) == SCENES[hard_scene["scene"]][0]
    assert np.mean(list(rep.values())) >= 0.95  # the issue asks for 0.9
    assert min(rep.values()) >= 0.9  # every view, not only the mean
    assert np.mean(list(rep.values())) >= np.mean(list(raw.values())) - 0.01  # never much worse than rembg
    c = hard_scene["report"]["consistency"]
    assert c["n_views"] == len(rep) and c["adjusted"] and c["region"]["centre_from"] == "reference cameras' sphere"


@pytest.mark.parametrize("hard_scene", ["cut"], indirect=True)
def test_cut_scene_leaves_the_frame(hard_scene):
    """The scene is the hard one it claims to be: the object is cut by the frame in many views."""
    touching = [m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in hard_scene["true"].values()]
    assert sum(touching) >= len(touching) // 2


@pytest.mark.parametrize("hard_scene", ["parts"], indirect=True)
def test_part_missed_by_rembg_is_restored(hard_scene):
    """In the parts scene rembg misses a whole part in a view; the hull of the other views brings it back."""
    raw, rep = hard_scene["raw"], hard_scene["repaired"]
    worst = min(raw, key=raw.get)
    assert raw[worst] < 0.7  # measured 0.576
    assert rep[worst] >= 0.9  # measured 0.935
    assert worst in hard_scene["report"]["consistency"]["outliers"]


def test_sfm_and_cameras_together_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "photos" / "000.jpg")
    with pytest.raises(StageError, match="not both"):
        M.compute_masks(tmp_path / "photos", tmp_path / "out", sfm_dir=tmp_path / "sfm", cameras=tmp_path / "c.npz")


@pytest.mark.slow
def test_parts_with_sfm_cameras(tmp_path):
    """36 views at 400x300 (smaller renders often do not register): masks repaired with COLMAP's cameras."""
    _needs_model()
    from neus_stage.sfm import run_sfm
    from neus_stage.synth import render_scene

    render_scene(tmp_path / "render", scene="parts", n_views=36, width=400, height=300, seed=0, gt_resolution=128)
    report_sfm = run_sfm(tmp_path / "render" / "photos", tmp_path / "sfm")
    assert report_sfm["n_registered"] == 36
    report, raw, final = _masks_with_raw(
        tmp_path / "sfm" / "undistorted" / "images", tmp_path / "masks", sfm_dir=tmp_path / "sfm"
    )
    undistort = undistorter(tmp_path / "sfm")[1]
    true = {s: undistort(m) for s, m in _true_masks(tmp_path / "render" / "masks").items()}
    raw_iou = [iou(raw[s], true[s]) for s in true]
    rep_iou = [iou(final[s], true[s]) for s in true]
    assert min(raw_iou) < 0.6  # measured 0.494: rembg misses a part
    assert np.mean(rep_iou) >= 0.95  # measured 0.971
    assert min(rep_iou) >= 0.85  # measured 0.882
    assert len(report["consistency"]["outliers"]) >= 1
