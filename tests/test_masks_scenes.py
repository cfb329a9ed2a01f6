"""The masks stage on scenes it was not developed on: real COLMAP, real rembg, real GrabCut.

- ``teapot``: a plain-glazed body with one decorated band, on a large textured floor, from two camera rings.
  Most SfM points lie on the floor and the object's few lie in its band: boxing the object by those points
  cut its hull (the multi-view check then rejected good rembg masks, median IoU 0.60 on the issue's scene).
  The object region now comes from the silhouettes.
- ``house``: a model town on its base plate, photographed from close over a plain table (as DTU scan 24):
  rembg finds single facades, the geometry-seeded masks the whole object.
- a scene whose masks cannot be made consistent: ``masks.mode: auto`` goes on without masks, and the dataset,
  visual-hull, train and mesh stages handle it.

Measured (true masks as the reference; mean / worst view):

| scene | views, size | rembg alone | chosen | final |
|---|---|---|---|---|
| teapot | 32, 480x360 | see test | rembg | see test |
| house | 30, 400x300 | see test | geometry | see test |
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage import masks as M
from neus_stage import masks_rembg
from neus_stage.artifacts.dataset import read_mask
from neus_stage.geometry.mask_hull import iou
from neus_stage.masks_user import undistorter

pytest.importorskip("pycolmap")
pytest.importorskip("cv2")


def _needs_model() -> None:
    if not masks_rembg.model_path("u2netp").is_file():
        pytest.skip("u2netp model not installed (make setup)")


def _scene(tmp_path_factory, scene: str, views: int, width: int, height: int, seed: int = 0) -> dict:
    """Render, pose with COLMAP and mask (auto mode) one scene; IoUs against the true masks (undistorted)."""
    _needs_model()
    from neus_stage.sfm import run_sfm
    from neus_stage.synth import render_scene

    root = tmp_path_factory.mktemp(scene)
    render_scene(root / "render", scene=scene, n_views=views, width=width, height=height, seed=seed, gt_resolution=96)
    sfm = run_sfm(root / "render" / "photos", root / "sfm")
    report = M.compute_masks(
        root / "sfm" / "undistorted" / "images",
        root / "masks",
        sfm_dir=root / "sfm",
        candidates_dir=root / "candidates",
    )
    undistort = undistorter(root / "sfm")[1]
    true = {
        p.stem: undistort(np.asarray(Image.open(p)) >= 128)
        for p in sorted((root / "render" / "masks").glob("*"))
        if p.stem in sfm["registered"]
    }
    final = {s: np.asarray(Image.open(root / "masks" / f"{s}.png")) >= 128 for s in true}
    return {
        "root": root,
        "sfm": sfm,
        "report": report,
        "true": true,
        "raw": {s: iou(read_mask(root / "candidates" / "rembg" / f"{s}.png"), true[s]) for s in true},
        "final": {s: iou(final[s], true[s]) for s in true},
    }


@pytest.fixture(scope="module")
def teapot(tmp_path_factory) -> dict:
    return _scene(tmp_path_factory, "teapot", 32, 480, 360)


@pytest.fixture(scope="module")
def house(tmp_path_factory) -> dict:
    return _scene(tmp_path_factory, "house", 30, 400, 300)


def test_teapot_on_a_floor_keeps_good_rembg_masks(teapot):
    rep, raw, final = teapot["report"], teapot["raw"], teapot["final"]
    assert teapot["sfm"]["n_registered"] == 32
    assert rep["mode"] == "rembg", rep["why"]
    assert rep["candidates"]["rembg"]["passed"] and rep["candidates"]["rembg"]["median_iou"] >= 0.9
    assert np.mean(list(final.values())) >= 0.95
    assert np.mean(list(final.values())) >= np.mean(list(raw.values())) - 0.01  # the repair never hurts
    assert "geometry" not in rep["candidates"]  # good rembg masks need no geometry-seeded ones


def test_teapot_region_holds_the_whole_object(teapot):
    """The carving box found from the silhouettes contains the true object (mapped into the SfM frame by the
    camera centres), where the box of the object's SfM points held only its decorated band."""
    import pycolmap
    import trimesh

    from neus_stage.artifacts.dataset import read_cameras_sphere
    from neus_stage.geometry.cameras import camera_centers, fit_similarity

    root = teapot["root"]
    world_mats, _ = read_cameras_sphere(root / "render" / "cameras_sphere.npz")
    true_centres = camera_centers(world_mats)
    rec = pycolmap.Reconstruction(root / "sfm" / "undistorted" / "sparse")
    stems = sorted(p.stem for p in (root / "render" / "photos").iterdir())
    images = list(rec.images.values())
    sim = fit_similarity(
        np.array([true_centres[stems.index(Path(im.name).stem)] for im in images]),
        np.array([im.projection_center() for im in images]),
    )
    verts = sim.apply(np.asarray(trimesh.load(root / "render" / "gt.ply").vertices))
    c = teapot["report"]["consistency"]
    lo, hi = np.array(c["region_lo"]), np.array(c["region_hi"])
    assert ((verts >= lo) & (verts <= hi)).all(1).mean() > 0.999
    assert np.all(hi - lo < 2.5 * (verts.max(0) - verts.min(0)).max())  # and it is not the whole scene


def test_frame_filling_house_gets_geometry_seeded_masks(house):
    rep, raw, final = house["report"], house["raw"], house["final"]
    assert rep["mode"] == "geometry", rep["why"]
    assert rep["points"]["object_points"] > rep["points"]["background_points"]
    assert np.mean(list(raw.values())) < 0.9  # rembg alone fails here (salient facades only)
    assert np.mean(list(final.values())) >= 0.95
    assert min(final.values()) >= 0.85


def test_inconsistent_masks_go_on_without_masks(mug_render, tmp_path, run_cli, monkeypatch):
    """rembg's masks are blobs in random places (and reference cameras give no SfM points to seed others):
    auto mode writes no masks and says why; the dataset, hull, training and mesh stages go on without them."""
    _needs_model()
    rng = np.random.default_rng(0)

    def blobs(session, paths):
        out = {}
        for s, p in paths.items():
            w, h = Image.open(p).size
            m = np.zeros((h, w), np.uint8)
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            m[y : y + h // 3, x : x + w // 3] = 255
            out[s] = m
        return out

    monkeypatch.setattr(masks_rembg, "rembg_probabilities", blobs)
    report = M.compute_masks(mug_render / "photos", tmp_path / "masks", cameras=mug_render / "cameras_sphere.npz")
    assert report["mode"] == "none" and "without masks" in report["why"]
    assert not list((tmp_path / "masks").glob("*.png"))
    assert json.loads((tmp_path / "masks" / "report.json").read_text())["mode"] == "none"
    with pytest.raises(Exception, match="masks mode 'rembg'"):
        M.compute_masks(
            mug_render / "photos", tmp_path / "masks2", mode="rembg", cameras=mug_render / "cameras_sphere.npz"
        )

    ds = tmp_path / "dataset"
    assert (
        run_cli(
            [
                "dataset",
                "--photos",
                str(mug_render / "photos"),
                "--reference-cameras",
                str(mug_render / "cameras_sphere.npz"),
                "--masks",
                str(tmp_path / "masks"),
                "--out",
                str(ds),
            ]
        )
        == 0
    )
    assert json.loads((ds / "meta.json").read_text())["masks"] == "none" and not list((ds / "mask").glob("*"))
    assert (
        run_cli(
            [
                "visual-hull",
                "--dataset",
                str(ds),
                "--bbox",
                str(tmp_path / "bbox.json"),
                "--hull",
                str(tmp_path / "hull.npz"),
                "--resolution",
                "32",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "bbox.json").read_text())["carved"] is False
    assert (
        run_cli(
            [
                "train",
                "--dataset",
                str(ds),
                "--hull",
                str(tmp_path / "hull.npz"),
                "--bbox",
                str(tmp_path / "bbox.json"),
                "--out",
                str(tmp_path / "neus"),
                "--preset",
                "cpu",
                "--set",
                "steps=30",
                "--set",
                "n_rays=64",
                "--set",
                "validate_every=0",
            ]
        )
        == 0
    )
    import yaml

    cfg = yaml.safe_load((tmp_path / "neus" / "config.yaml").read_text())
    assert cfg["use_mask"] is False and cfg["hull_prior"] == "none"
    assert (
        run_cli(
            [
                "mesh",
                "--checkpoint",
                str(tmp_path / "neus" / "checkpoint.pt"),
                "--dataset",
                str(ds),
                "--bbox",
                str(tmp_path / "bbox.json"),
                "--out",
                str(tmp_path / "mesh.ply"),
                "--clean",
                str(tmp_path / "mesh_clean.ply"),
                "--resolution",
                "32",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "mesh.json").read_text())["mask_culled"] is False


@pytest.mark.slow
def test_dtu_scan24_geometry_masks_match_the_reference(shared_data, tmp_path):
    """The real frame-filling scene: 49 photos of a model town on its base. rembg alone: 0.54 mean IoU against
    the reference masks; the masks stage chooses geometry-seeded masks: 0.982 (worst view 0.936) measured."""
    _needs_model()
    from neus_stage.sfm import run_sfm

    scan = shared_data / "dtu_scan24"
    if not scan.is_dir():
        pytest.skip("../shared/data/dtu_scan24 is not present")
    run_sfm(scan / "photos", tmp_path / "sfm")
    report = M.compute_masks(tmp_path / "sfm" / "undistorted" / "images", tmp_path / "masks", sfm_dir=tmp_path / "sfm")
    assert report["mode"] == "geometry"
    undistort = undistorter(tmp_path / "sfm")[1]
    ious = [
        iou(
            np.asarray(Image.open(p)) >= 128,
            undistort(np.asarray(Image.open(scan / "reference" / "mask" / p.name).convert("L")) >= 128),
        )
        for p in sorted((tmp_path / "masks").glob("*.png"))
    ]
    assert len(ious) == 49 and np.mean(ious) >= 0.95 and min(ious) >= 0.85
