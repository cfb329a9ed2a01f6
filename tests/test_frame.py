"""The upright world frame of a scene posed by SfM (neus_stage.geometry.upright, the dataset stage): z up from
the support plane or the cameras, the object's base at z = 0, its centre on the z axis; every artifact in
that frame (cameras, bbox.json's plane, the report's sparse points). Rendered scenes posed by real COLMAP,
with the truth from the renderer's cameras (z is up in their world)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from frame_scenes import DEMO, render_dir, sfm_scene

from neus_stage.artifacts.dataset import read_cameras_sphere
from neus_stage.frames import reference_alignment, sfm_to_world
from neus_stage.geometry.cameras import Similarity, camera_centers
from neus_stage.geometry.upright import angle_deg, rotation_z_up, upright_frame
from neus_stage.synth.render import look_at as _look_at

UP_LIMIT_DEG = 3.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _ring(rng: np.random.Generator, n: int = 24, roll_deg: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, up vectors and x axes of cameras on a ring around the origin (z up), elevations 15-50 deg, each with a
    random roll: a photographer's hand-held orbit."""
    C, U, X = [], [], []
    for i in range(n):
        a, e = 2 * np.pi * i / n, np.radians(rng.uniform(15, 50))
        c = 3.0 * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        R = _look_at(c, np.array([0.0, 0.0, 0.4]), rng.uniform(-roll_deg, roll_deg))
        C.append(c)
        U.append(-R[1])
        X.append(R[0])
    return np.array(C), np.array(U), np.array(X)


def test_rotation_z_up():
    rng = np.random.default_rng(1)
    up, fwd = rng.normal(size=3), rng.normal(size=3)
    R = rotation_z_up(up, fwd)
    assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
    assert np.allclose(R @ (up / np.linalg.norm(up)), [0, 0, 1])
    f = R @ fwd
    assert abs(f[0]) < 1e-12 and f[1] > 0  # forward's horizontal part becomes +y


@pytest.mark.parametrize("with_floor", [True, False])
def test_upright_frame_of_arrays(with_floor):
    """A ring of cameras with hand-held roll, an object (a cylinder of points, base at z = 0, centred at
    (0.2, -0.1)) and, with a floor, the floor's points, all seen in an arbitrary similarity frame."""
    rng = np.random.default_rng(0)
    C, U, X = _ring(rng)
    t = rng.uniform(0, 2 * np.pi, 3000)
    obj = np.stack([0.2 + 0.4 * np.cos(t), -0.1 + 0.4 * np.sin(t), rng.uniform(0.02, 0.9, len(t))], 1)
    floor = np.stack([rng.uniform(-2, 2, 4000), rng.uniform(-2, 2, 4000), np.zeros(4000)], 1)
    floor = floor[np.hypot(floor[:, 0] - 0.2, floor[:, 1] + 0.1) > 0.45]
    pts = np.concatenate([obj, floor]) if with_floor else obj
    pts = pts + rng.normal(0, 0.002, pts.shape)
    to_sfm = Similarity(1.7, _random_rotation(rng), rng.normal(size=3), 0.0)
    frame = upright_frame(
        to_sfm.apply(C), U @ to_sfm.R.T, to_sfm.apply(pts), to_sfm.apply(obj), scale=1.0, camera_x=X @ to_sfm.R.T
    )
    total = to_sfm.then(frame.similarity)  # truth -> upright world
    up_error = angle_deg(total.R @ [0, 0, 1], [0, 0, 1])
    if with_floor:
        assert frame.record["up"]["from"] == "support plane" and frame.record["base"]["from"] == "support plane"
        assert up_error < 0.3
        assert abs(total.apply(np.array([[0.2, -0.1, 0.0]]))[0, 2]) < 0.01 * total.scale  # the base on z = 0
    else:
        assert frame.record["up"]["from"] == "cameras"
        assert up_error < 1.5  # 24 cameras, each rolled by up to 4 deg
        assert frame.record["base"]["from"] == "object points"
    centre = total.apply(np.array([[0.2, -0.1, 0.45]]))[0]
    assert np.hypot(centre[0], centre[1]) < 0.03 * total.scale  # the object's axis on the z axis
    assert total.apply(C[:1])[0, 1] < 0  # camera 0 on the -y side


# ---------------------------------------------------------------------------------- real COLMAP scenes
@pytest.fixture(scope="module")
def pot(tmp_path_factory) -> dict:
    """The pot on its textured floor, 30 photos at 320x240, posed by COLMAP; dataset and visual hull built
    the workflow's way (the hull's support search in the SfM points, --sparse)."""
    from neus_stage.dataset import build_dataset_from_sfm
    from neus_stage.hull import carve_visual_hull

    root = sfm_scene(tmp_path_factory.getbasetemp(), "pot")
    out = tmp_path_factory.mktemp("frame_pot")
    meta = build_dataset_from_sfm(root / "sfm", root / "masks", out / "dataset")
    bbox = carve_visual_hull(
        out / "dataset",
        out / "bbox.json",
        out / "hull.npz",
        resolution=64,
        sparse_dir=root / "sfm" / "undistorted" / "sparse",
    )
    return {"root": root, "render": render_dir(root), "out": out, "meta": meta, "bbox": bbox}


def _truth(scene: dict) -> tuple[Similarity, np.ndarray]:
    """The dataset's world -> the renderer's world (camera centres), and gt.ply in the dataset's world."""
    sim = reference_alignment(scene["out"] / "dataset", scene["render"] / "cameras_sphere.npz")
    gt = np.asarray(trimesh.load(scene["render"] / "gt.ply", process=False).vertices, dtype=np.float64)
    return sim, (gt - sim.t) @ sim.R / sim.scale


def test_pot_is_upright_on_its_floor(pot):
    meta, frame = pot["meta"], pot["meta"]["frame"]
    sim, gt = _truth(pot)
    up_error = angle_deg(sim.R.T @ [0, 0, 1], [0, 0, 1])
    assert up_error < UP_LIMIT_DEG, up_error
    assert frame["up"]["from"] == "support plane" and frame["base"]["from"] == "support plane"
    height = gt[:, 2].max() - gt[:, 2].min()
    assert abs(gt[:, 2].min()) < 0.02 * height  # the base at z = 0
    centre = (gt.min(0) + gt.max(0)) / 2
    assert np.hypot(centre[0], centre[1]) < 0.02 * height  # centred on the z axis
    # no scale given: SfM units, said so
    assert meta["units"] == "SfM units" and frame["scale"]["method"] == "none"
    assert "SfM units" in frame["summary"]


def test_every_artifact_is_in_the_upright_frame(pot):
    import pycolmap

    out = pot["out"]
    # cameras_sphere.npz: the SfM cameras mapped by meta.json's similarity
    to_world = sfm_to_world(out / "dataset")
    rec = pycolmap.Reconstruction(str(pot["root"] / "sfm" / "undistorted" / "sparse"))
    sfm_centres = {Path(im.name).stem: im.projection_center() for im in rec.images.values()}
    world_mats, scale_mat = read_cameras_sphere(out / "dataset" / "cameras_sphere.npz")
    names = [v["name"] for v in pot["meta"]["views"]]
    np.testing.assert_allclose(
        camera_centers(world_mats),
        to_world.apply(np.array([sfm_centres[n] for n in names])),
        atol=1e-6 * to_world.scale,
    )
    assert np.allclose(pot["meta"]["frame"]["from_sfm"]["matrix"], to_world.matrix)
    # bbox.json: the support plane the visual-hull stage found in the (mapped) SfM points is z = 0
    sup = pot["bbox"]["support"]
    assert sup["method"] == "plane" and sup["source"]["kind"] == "sfm points"
    w = sup["plane_found"]["world"]
    assert angle_deg(w["normal"], [0, 0, 1]) < 0.5 and abs(w["offset"]) < 0.01 * scale_mat[0, 0]
    box = pot["bbox"]["world"]
    assert box["min"][2] > -0.05 * scale_mat[0, 0]  # the hull is cut at the floor, z = 0
    # the object's visual-hull box is centred on the z axis
    mid = (np.asarray(box["min"]) + np.asarray(box["max"])) / 2
    assert np.hypot(mid[0], mid[1]) < 0.05 * (np.asarray(box["max"]) - np.asarray(box["min"])).max()


def test_report_says_how_up_was_found(pot, tmp_path):
    import shutil

    from neus_stage.report import build_report

    scene = tmp_path / "pot"
    shutil.copytree(pot["out"] / "dataset", scene / "dataset")
    shutil.copy(pot["out"] / "bbox.json", scene / "bbox.json")
    shutil.copy(pot["out"] / "hull.npz", scene / "hull.npz")
    shutil.copytree(pot["root"] / "sfm" / "sparse", scene / "sfm" / "sparse")
    build_report(scene, scene / "report.html")
    page = (scene / "report.html").read_text()
    frame = page.split('<section id="frame"', 1)[1].split("</section>", 1)[0]
    assert 'data-status="ok"' in frame and "support plane" in frame and "SfM units" in frame


@pytest.mark.slow
@pytest.mark.parametrize("scan", ["dtu_scan65", "dtu_scan24"])
def test_dtu_scan_is_upright(shared_data, scan, tmp_path):
    """DTU's up: the table plane found in points triangulated with the reference cameras held fixed (a
    table is level); the SfM dataset's z must agree with it within 3 degrees."""
    from neus_stage.dataset import build_dataset_from_sfm
    from neus_stage.geometry.support import find_support
    from neus_stage.masks import compute_masks
    from neus_stage.sfm import run_sfm
    from neus_stage.triangulate import triangulate_known_cameras

    data = shared_data / scan
    wm, _ = read_cameras_sphere(data / "reference" / "cameras_sphere.npz")
    photos = sorted((data / "photos").glob("*.jpg"))
    from neus_stage.geometry.cameras import decompose_projection

    poses = np.stack([decompose_projection(w[:3, :4])[1] for w in wm])
    pts, _ = triangulate_known_cameras(data / "photos", [p.name for p in photos], wm, threads=2)
    table = find_support(pts, poses[:, :3, 3], -poses[:, :3, 1]).plane
    assert table is not None
    run_sfm(data / "photos", tmp_path / "sfm", threads=2)
    compute_masks(
        tmp_path / "sfm" / "undistorted" / "images",
        tmp_path / "masks",
        user_masks=data / "reference" / "mask",
        sfm_dir=tmp_path / "sfm",
        mode="user",
    )
    build_dataset_from_sfm(tmp_path / "sfm", tmp_path / "masks", tmp_path / "dataset")
    sim = reference_alignment(tmp_path / "dataset", data / "reference" / "cameras_sphere.npz")
    up_error = angle_deg(sim.R.T @ table.normal, [0, 0, 1])
    assert up_error < UP_LIMIT_DEG, up_error
    assert json.loads((tmp_path / "dataset" / "meta.json").read_text())["frame"]["name"] == "upright"


@pytest.mark.slow
def test_demo_mug_without_floor_is_upright_from_its_cameras(tmp_path_factory):
    """The demo: no floor, so up comes from the cameras (36 photos, each rolled by up to 4 deg)."""
    from neus_stage.dataset import build_dataset_from_sfm

    root = sfm_scene(tmp_path_factory.getbasetemp(), "demo")
    out = tmp_path_factory.mktemp("frame_demo")
    meta = build_dataset_from_sfm(root / "sfm", root / "masks", out / "dataset")
    sim, gt = _truth({"out": out, "render": DEMO})
    assert meta["frame"]["up"]["from"] == "cameras"
    assert angle_deg(sim.R.T @ [0, 0, 1], [0, 0, 1]) < UP_LIMIT_DEG
    height = gt[:, 2].max() - gt[:, 2].min()
    assert abs(gt[:, 2].min()) < 0.06 * height  # the lowest SfM points on the cup, a little above its base
    centre = (gt.min(0) + gt.max(0)) / 2
    assert np.hypot(centre[0], centre[1]) < 0.03 * height
