"""The point terms of training: the SDF's zero level pinned at the scene's own 3-D points, free space on their
lines of sight, and the points held out for the quality check."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from neus_stage.artifacts.box import read_hull_file, write_hull
from neus_stage.quality import untrained_points
from neus_stage.train.checkpoint import load_sdf_function
from neus_stage.train.config import resolve_config
from neus_stage.train.scene_points import CLEARANCE, point_sdf, scene_points
from neus_stage.train.trainer import train

CPU = torch.device("cpu")
CENTRES = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # two cameras, normalised frame, outside the box
RUN = dict(steps=40, n_rays=64, validate_every=0, checkpoint_every=20, log_every=5)


# ======================================================================================= surface points
def _hull_with_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ball hull (normalised radius 0.4 in a [-0.5, 0.5]^3 box, 32^3) in a world frame scaled by 2 and moved
    by (1, 2, 3), with world points on the ball, far outside it and one on the 'support plane'."""
    res = 32
    c = (np.arange(res) + 0.5) / res - 0.5
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    occ = np.linalg.norm(grid, axis=-1) < 0.4
    scale_mat = np.diag([2.0, 2.0, 2.0, 1.0])
    scale_mat[:3, 3] = [1.0, 2.0, 3.0]
    normalised = np.array([[0.38, 0, 0], [0, -0.3, 0.2], [0, 0, 0.39], [0.49, 0.49, 0.49], [0, 0.39, 0]])
    world = normalised * 2.0 + scale_mat[:3, 3]
    inliers = np.array([False, False, False, False, True])
    views = np.array([[True, False], [True, True], [False, True], [True, True], [True, False]])  # SfM tracks
    write_hull(
        path,
        occ,
        -0.5 * np.ones(3),
        0.5 * np.ones(3),
        scale_mat,
        support_points=world,
        support_inliers=inliers,
        support_views=views,
    )
    return occ, normalised


def test_surface_points_are_the_scene_points_in_the_hull_off_the_support(tmp_path):
    occ, normalised = _hull_with_points(tmp_path / "hull.npz")
    cfg = resolve_config("cpu", {"point_weight": 1.0})
    lo, hi = -0.5 * np.ones(3, np.float32), 0.5 * np.ones(3, np.float32)
    pts = scene_points(cfg, tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0, 1], CPU)
    # the corner point lies outside the hull, the last one on the support plane
    np.testing.assert_allclose(pts.xyz.numpy(), normalised[:3], atol=1e-6)
    assert (
        scene_points(
            resolve_config("cpu", {"point_weight": 0.0}), tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0, 1], CPU
        )
        is None
    )
    write_hull(tmp_path / "bare.npz", occ, lo, hi, read_hull_file(tmp_path / "hull.npz").scale_mat)
    assert scene_points(cfg, tmp_path / "bare.npz", occ, lo, hi, CENTRES, [0, 1], CPU) is None  # no points: off


@pytest.fixture(scope="module")
def point_runs(mug_dataset, tmp_path_factory):
    """Two short runs on the rendered mug from its hull, with and without the point terms, the hull holding
    400 points on the true surface (as SfM triangulates them; no tracks): the train_log.csv rows of the
    surface term and the mean abs(sdf) of each trained model at the points."""
    import trimesh

    hull = read_hull_file(mug_dataset["hull"])
    gt = trimesh.load(mug_dataset["render"] / "gt.ply", process=False, force="mesh")
    world = np.asarray(gt.sample(400, seed=0), dtype=np.float64)
    path = tmp_path_factory.mktemp("points_hull") / "hull.npz"
    write_hull(path, hull.occupancy, hull.bounds_min, hull.bounds_max, hull.scale_mat, support_points=world)
    lo, hi = hull.bounds_min.astype(np.float32), hull.bounds_max.astype(np.float32)
    on = resolve_config("cpu", {"point_weight": 1.0})
    pts = scene_points(on, path, hull.occupancy, lo, hi, np.zeros((12, 3)), [], CPU).xyz
    assert len(pts) > 300  # the surface lies in the hull
    runs = {}
    for name, weight in (("off", 0.0), ("on", 1.0)):
        out = tmp_path_factory.mktemp(f"points_{name}")
        cfg = resolve_config("cpu", {**RUN, "point_weight": weight, "hull_prior": "outside"})
        train(cfg, mug_dataset["dataset"], out, hull_path=path, bbox_path=mug_dataset["bbox"])
        with (out / "train_log.csv").open() as fh:
            rows = [float(r["points"]) for r in csv.DictReader(fh)]
        with torch.no_grad():
            runs[name] = (rows, float(load_sdf_function(out / "checkpoint.pt", device="cpu")(pts).abs().mean()))
    return runs


def test_the_surface_point_term_pins_the_sdf_at_the_points(point_runs):
    (rows_on, sdf_on), (rows_off, sdf_off) = point_runs["on"], point_runs["off"]
    assert all(v == 0.0 for v in rows_off)  # logged as zero when off
    assert all(np.isfinite(rows_on)) and max(rows_on) > 0  # logged when on (the start is ~0: the hull's inside)
    assert sdf_on < 0.7 * sdf_off, (sdf_on, sdf_off)  # and ends nearer zero than without the term


def test_lines_of_sight_run_from_the_points_to_the_cameras_that_observe_them(tmp_path):
    occ, normalised = _hull_with_points(tmp_path / "hull.npz")
    lo, hi = -0.5 * np.ones(3, np.float32), 0.5 * np.ones(3, np.float32)
    pts = scene_points(
        resolve_config("cpu", {"point_weight": 1.0}), tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0, 1], CPU
    )
    margin = 0.01 * np.sqrt(3.0)
    # point 0 seen by camera 0 (+x), point 1 by both, point 2 by camera 1 (+z)
    assert len(pts.sight_len) == 4
    o, d, n = pts.sight_o.numpy(), pts.sight_d.numpy(), pts.sight_len.numpy()
    np.testing.assert_allclose(o[0], normalised[0] + [margin, 0, 0], atol=1e-6)
    np.testing.assert_allclose(d[0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(n[0], 0.5 - 0.38 - margin, atol=1e-6)  # to the box's side
    np.testing.assert_allclose(d[3], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(n[3], 0.5 - 0.39 - margin, atol=1e-6)
    # only the training views' lines: without camera 1, points 1 and 2 keep one line and none
    assert (
        len(
            scene_points(
                resolve_config("cpu", {"point_weight": 1.0}), tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0], CPU
            ).sight_len
        )
        == 2
    )

    # the free-space term penalises only what lies inside the surface on a line of sight
    class Ball(torch.nn.Module):
        def sdf(self, x):
            return x.norm(dim=-1) - 0.45

    surface, sight = point_sdf(Ball(), pts, 100, torch.Generator().manual_seed(0))
    assert len(surface) == 3 and len(sight) == 4
    assert (sight.detach() > -0.45).all()

    # ... and what lies closer to a surface than the clearance, half the margin: a zero level just behind
    # the spots is not free space either
    assert pts.clearance == pytest.approx(CLEARANCE * margin)

    class Level(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def sdf(self, x):
            return torch.full(x.shape[:1], self.value)

    gen = torch.Generator().manual_seed(0)
    assert (point_sdf(Level(0.5 * pts.clearance), pts, 100, gen)[1] < 0).all()
    assert (point_sdf(Level(2.0 * pts.clearance), pts, 100, gen)[1] > 0).all()


def test_held_out_points_are_left_to_the_quality_check(tmp_path):
    occ, normalised = _hull_with_points(tmp_path / "hull.npz")
    lo, hi = -0.5 * np.ones(3, np.float32), 0.5 * np.ones(3, np.float32)
    cfg = resolve_config("cpu", {"point_weight": 1.0, "holdout_every": 2})
    pts = scene_points(cfg, tmp_path / "hull.npz", occ, lo, hi, CENTRES, [1], CPU)
    np.testing.assert_allclose(pts.xyz.numpy(), normalised[1:2], atol=1e-6)  # points 0 and 2 are held out
    # the quality check measures exactly those the training left out
    (tmp_path / "neus").mkdir()
    write = (tmp_path / "neus" / "config.yaml").write_text
    write("point_weight: 1.0\nholdout_every: 2\n")
    keep, how = untrained_points(tmp_path, 5)
    assert keep.tolist() == [True, False, True, False, True] and "held out" in how
    write("point_weight: 1.0\nholdout_every: 0\n")
    keep, how = untrained_points(tmp_path, 5)
    assert not keep.any() and "fitted every" in how
    write("point_weight: 0.0\nholdout_every: 8\n")
    assert untrained_points(tmp_path, 5)[0].all()


def test_the_sweep_points_join_the_surface_points_with_their_lines_of_sight(tmp_path):
    occ, normalised = _hull_with_points(tmp_path / "hull.npz")
    lo, hi = -0.5 * np.ones(3, np.float32), 0.5 * np.ones(3, np.float32)
    cfg = resolve_config("cpu", {"point_weight": 1.0, "holdout_every": 0})
    plain = scene_points(cfg, tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0, 1], CPU)
    dense = (np.array([[0.0, 0.0, -0.39], [0.49, -0.49, 0.49]]), np.array([[True, True], [True, False]]))
    pts = scene_points(cfg, tmp_path / "hull.npz", occ, lo, hi, CENTRES, [0, 1], CPU, dense)
    # the first lies in the hull and is trained on with both its views, the second lies outside: dropped
    np.testing.assert_allclose(pts.xyz.numpy(), np.concatenate([plain.xyz.numpy(), dense[0][:1]]), atol=1e-6)
    assert len(pts.sight_len) == len(plain.sight_len) + 2
    np.testing.assert_allclose(pts.sight_d.numpy()[-1], [0, 0, 1], atol=1e-6)  # towards camera 1 (+z)


def test_the_sweep_points_train_where_the_hull_holds_no_points_or_no_tracks(tmp_path):
    occ, normalised = _hull_with_points(tmp_path / "hull.npz")
    lo, hi = -0.5 * np.ones(3, np.float32), 0.5 * np.ones(3, np.float32)
    scale_mat = read_hull_file(tmp_path / "hull.npz").scale_mat
    cfg = resolve_config("cpu", {"point_weight": 1.0, "holdout_every": 0})
    dense = (np.array([[0.0, 0.0, 0.39]]), np.array([[False, True]]))
    write_hull(tmp_path / "bare.npz", occ, lo, hi, scale_mat)  # no points
    pts = scene_points(cfg, tmp_path / "bare.npz", occ, lo, hi, CENTRES, [0, 1], CPU, dense)
    np.testing.assert_allclose(pts.xyz.numpy(), dense[0], atol=1e-6)
    assert len(pts.sight_len) == 1
    # triangulated points without tracks (reference cameras): their surface term, the sweep's lines of sight
    world = normalised[:3] * 2.0 + scale_mat[:3, 3]
    write_hull(tmp_path / "untracked.npz", occ, lo, hi, scale_mat, support_points=world)
    pts = scene_points(cfg, tmp_path / "untracked.npz", occ, lo, hi, CENTRES, [0, 1], CPU, dense)
    assert len(pts.xyz) == 4 and len(pts.sight_len) == 1
