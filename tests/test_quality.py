"""Quality without ground truth (neus_stage.quality): the object's SfM points (real COLMAP on the rendered pot)
against a mesh, the held-out views of neus/metrics.json, the one-line verdict in quality.json, the report and
the CLI; no number from a training view is called validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from frame_scenes import render_dir, sfm_scene

from neus_stage.quality import assess, verdict

HELD = ["000", "008", "016", "024"]


def _metrics(iou: list[float], psnr: list[float]) -> dict:
    per = [{"psnr": p, "mask_iou": i} for p, i in zip(psnr, iou)]
    return {
        "val_psnr": psnr[0],
        "val_mask_iou": iou[0],
        "val_view": HELD[0],
        "heldout_views": HELD,
        "heldout_psnr": float(np.mean(psnr)),
        "heldout_mask_iou": float(np.mean(iou)),
        "heldout_per_view": per,
        "steps": 100,
        "seconds": 10.0,
    }


def _true_surface_in_world(scene: Path, render: Path) -> trimesh.Trimesh:
    """gt.ply in the dataset's world: the camera-centre similarity, refined by ICP (with scale) onto the
    object's SfM points (object-centred SfM leaves a small focal-length/distance ambiguity in the cameras)."""
    import open3d as o3d

    from neus_stage.frames import reference_alignment
    from neus_stage.quality import object_points

    sim = reference_alignment(scene / "dataset", render / "cameras_sphere.npz")  # world -> renderer
    gt = trimesh.load(render / "gt.ply", process=False)
    V = (np.asarray(gt.vertices) - sim.t) @ sim.R / sim.scale
    mesh = trimesh.Trimesh(V, np.asarray(gt.faces), process=False)
    pts, _, _ = object_points(scene)
    src, dst = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    src.points = o3d.utility.Vector3dVector(pts)  # every SfM point of the object has a partner on the surface
    dst.points = o3d.utility.Vector3dVector(np.asarray(mesh.sample(200_000, seed=0)))
    size = float(np.linalg.norm(V.max(0) - V.min(0)))
    est = o3d.pipelines.registration.TransformationEstimationPointToPoint(with_scaling=True)
    T = np.linalg.inv(o3d.pipelines.registration.registration_icp(src, dst, 0.03 * size, np.eye(4), est).transformation)
    return trimesh.Trimesh(V @ T[:3, :3].T + T[:3, 3], np.asarray(gt.faces), process=False)


@pytest.fixture(scope="module")
def pot_scene(tmp_path_factory) -> dict:
    """results/pot as the workflow lays it out, up to a mesh: the true surface (gt.ply mapped into the
    dataset's world) as mesh_clean.ply."""
    from neus_stage.dataset import build_dataset_from_sfm
    from neus_stage.hull import carve_visual_hull

    root = sfm_scene(tmp_path_factory.getbasetemp(), "pot")
    scene = tmp_path_factory.mktemp("quality") / "pot"
    build_dataset_from_sfm(root / "sfm", root / "masks", scene / "dataset")
    carve_visual_hull(
        scene / "dataset",
        scene / "bbox.json",
        scene / "hull.npz",
        resolution=64,
        sparse_dir=root / "sfm" / "undistorted" / "sparse",
    )
    shutil.copytree(root / "sfm", scene / "sfm")
    mesh = _true_surface_in_world(scene, render_dir(root))
    mesh.export(scene / "mesh_clean.ply")
    (scene / "neus").mkdir()
    (scene / "neus" / "train_log.csv").write_text("step,psnr\n0,14.0\n50,17.5\n99,18.0\n")
    return {"scene": scene, "mesh": mesh}


def _write_metrics(scene: Path, metrics: dict) -> None:
    (scene / "neus" / "metrics.json").write_text(json.dumps(metrics))


def test_the_true_surface_is_good(pot_scene):
    scene = pot_scene["scene"]
    _write_metrics(scene, _metrics([0.99, 0.985, 0.99, 0.98], [28.0, 27.5, 28.3, 27.9]))
    q = assess(scene, scene / "quality.json")
    g = q["geometry"]
    assert g["available"] and g["kind"] == "SfM points inside the visual hull" and g["points"] > 200
    assert g["median_share"] < 0.005 and g["p90_share"] < 0.02, g
    assert q["verdict"] == "good", q["line"]
    assert "held-out views: PSNR 27.9 dB" in q["line"]
    assert q["training_batch_psnr"] == pytest.approx(18.0)
    assert json.loads((scene / "quality.json").read_text())["line"] == q["line"]


def test_a_mesh_off_the_object_fails(pot_scene, tmp_path):
    scene = tmp_path / "pot"
    shutil.copytree(pot_scene["scene"], scene)
    m = pot_scene["mesh"].copy()
    size = float(np.linalg.norm(m.bounds[1] - m.bounds[0]))
    m.apply_scale(1.3)  # 30% too large: the surface stands off the SfM points
    m.apply_translation(-m.centroid + pot_scene["mesh"].centroid)
    m.export(scene / "mesh_clean.ply")
    _write_metrics(scene, _metrics([0.99, 0.985, 0.99, 0.98], [28.0, 27.5, 28.3, 27.9]))
    q = assess(scene)
    assert q["verdict"] == "failed", q["line"]
    assert "SfM points lie" in q["reason"] and q["geometry"]["median"] > 0.03 * size / 3


def test_a_bad_heldout_view_is_named(pot_scene):
    scene = pot_scene["scene"]
    _write_metrics(scene, _metrics([0.99, 0.82, 0.99, 0.98], [28.0, 27.5, 22.1, 27.9]))
    q = assess(scene)
    assert q["verdict"] == "check these views", q["line"]
    assert "view 008: mask IoU 0.820" in q["reason"] and "view 016: PSNR 22.1 dB" in q["reason"]
    _write_metrics(scene, _metrics([0.6, 0.7, 0.75, 0.72], [20.0, 20.5, 19.0, 21.0]))
    assert assess(scene)["verdict"] == "failed"


def test_without_heldout_views_nothing_is_called_validation(pot_scene, tmp_path):
    from neus_stage.report import build_report

    scene = tmp_path / "pot"
    shutil.copytree(pot_scene["scene"], scene)
    (scene / "quality.json").unlink(missing_ok=True)
    _write_metrics(scene, {"val_psnr": 26.9, "val_mask_iou": 0.993, "val_view": "000", "steps": 100, "seconds": 9.0})
    q = assess(scene)
    assert q["heldout"]["available"] is False and "no views were held out" in q["reason"]
    assert q["verdict"] == "good"  # the geometry check alone, saying what is missing
    build_report(scene, scene / "report.html")
    page = (scene / "report.html").read_text()
    training = page.split('<section id="training"', 1)[1].split("</section>", 1)[0]
    assert "validation PSNR" not in training and "not a validation" in training
    quality = page.split('<section id="quality"', 1)[1].split("</section>", 1)[0]
    assert 'data-status="ok"' in quality and "good:" in quality and "distance to the mesh, median" in quality


def test_quality_command_and_report_write_quality_json(pot_scene, tmp_path, run_cli, capsys):
    from neus_stage.report import build_report

    scene = pot_scene["scene"]
    _write_metrics(scene, _metrics([0.99, 0.985, 0.99, 0.98], [28.0, 27.5, 28.3, 27.9]))
    assert run_cli(["quality", "--scene-dir", str(scene), "--out", str(tmp_path / "q.json")]) == 0
    assert "quality: good:" in capsys.readouterr().out
    status = build_report(scene, tmp_path / "report.html", quality_out=scene / "quality.json")
    assert status["quality"] == "ok" and status["frame"] == "ok"
    page = (tmp_path / "report.html").read_text()
    assert "Held-out views" in page and "008" in page.split('<section id="quality"', 1)[1]


def test_verdict_rules():
    good_g = {"available": True, "points": 500, "median_share": 0.004, "p90_share": 0.015}
    held = {"available": True, "views": 4, "psnr": 28.0, "mask_iou": 0.99, "flagged": []}
    assert verdict(good_g, held)[0] == "good"
    assert verdict({**good_g, "median_share": 0.02, "photos_to_check": ["003"]}, held) == (
        "check these views",
        verdict({**good_g, "median_share": 0.02, "photos_to_check": ["003"]}, held)[1],
    )
    assert "photos 003" in verdict({**good_g, "median_share": 0.02, "photos_to_check": ["003"]}, held)[1]
    assert verdict({**good_g, "p90_share": 0.2}, held)[0] == "failed"
    label, reason = verdict({"available": False, "reason": "no masks"}, {"available": False, "reason": "none held"})
    assert label == "check these views" and "nothing to judge" in reason
