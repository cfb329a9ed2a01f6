"""The plane sweep (sweep.py): dense points from the training photos' own stereo, for the point terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neus_stage.artifacts.box import read_hull_file
from neus_stage.geometry.grid_lookup import grow, in_grid
from neus_stage.train.data import NeusScene
from neus_stage.train.sweep import best_half, grey_images, patch_costs, source_views, sweep_points


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    """The mug rendered at 160x120 from 20 views (stereo needs more pixels than the suite's 96x72 mug) with
    reference cameras: its scene, its box (normalised frame) and its true surface (normalised frame) as an
    open3d ray-casting scene."""
    import open3d as o3d

    from neus_stage.dataset import build_dataset_from_reference
    from neus_stage.hull import carve_visual_hull
    from neus_stage.synth import render_scene

    root = tmp_path_factory.mktemp("sweep_mug")
    render_scene(root / "render", scene="mug", n_views=20, width=160, height=120, seed=0, gt_resolution=64)
    r = root / "render"
    build_dataset_from_reference(r / "photos", r / "cameras_sphere.npz", r / "masks", root / "dataset")
    carve_visual_hull(root / "dataset", root / "bbox.json", root / "hull.npz", resolution=64)
    scene = NeusScene(root / "dataset")
    hull = read_hull_file(root / "hull.npz")
    gt = o3d.io.read_triangle_mesh(str(r / "gt.ply"))
    gt.transform(np.linalg.inv(hull.scale_mat))
    cast = o3d.t.geometry.RaycastingScene()
    cast.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(gt))
    return scene, hull.bounds_min, hull.bounds_max, cast, hull.occupancy


def _true_depths(scene, gt, view, y, x):
    """Ray length to the first hit of the true surface through pixels (y, x) of ``view`` (inf: no hit)."""
    o, d = scene.rays(torch.full_like(y, view), y, x)
    o, d = o.numpy().astype(np.float64), d.numpy().astype(np.float64)
    t = gt.cast_rays(np.concatenate([o, d], 1).astype(np.float32))["t_hit"].numpy().astype(np.float64)
    return t, o, d


def test_source_views_are_the_nearest_other_training_views(mug):
    scene = mug[0]
    src = source_views(scene, torch.zeros(3), 2)
    assert src.shape == (scene.n, 2)
    assert not (src == torch.arange(scene.n)[:, None]).any()  # never the view itself
    c = torch.nn.functional.normalize(scene.poses[:, :3, 3], dim=-1)
    for v in range(scene.n):
        cos = (c @ c[v]).clone()
        cos[v] = -2
        assert set(src[v].tolist()) == set(cos.topk(2).indices.tolist())


def test_the_patch_cost_is_lowest_at_the_true_depth(mug):
    scene, lo, hi, gt, _ = mug
    sources = source_views(scene, torch.zeros(3), 4)
    view = 0
    ys, xs = torch.nonzero(scene.masks[view][8:-8, 8:-8], as_tuple=True)
    pick = torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))[:200]
    y, x = ys[pick] + 8, xs[pick] + 8
    t, o, d = _true_depths(scene, gt, view, y, x)
    hit = np.isfinite(t)
    y, x, t, o, d = y[hit], x[hit], t[hit], o[hit], d[hit]
    n = (-scene.poses[view, :3, 2]).expand(len(y), 3)
    costs = []
    for shift in (-0.1, 0.0, 0.1):  # normalised units: the mug fits the unit sphere
        X = torch.from_numpy(o + d * (t + shift)[:, None]).float()
        cost, inside, spread = patch_costs(scene, grey_images(scene), sources, torch.full_like(y, view), y, x, X, n, 2)
        assert cost.shape == inside.shape == (len(y), 4) and spread.shape == (len(y),)
        costs.append(float(best_half(cost).median()))
    assert costs[1] < 0.75 * min(costs[0], costs[2]), costs


def test_sweep_points_lie_on_the_true_surface_and_name_their_views(mug):
    scene, lo, hi, gt, hull = mug
    for grid in (None, grow(hull, 1)):
        pts, views = sweep_points(scene, lo, hi, grid, pixels=200, n_sources=4, radius=2, n_depths=48)
        assert len(pts) > 1000 and views.shape == (len(pts), scene.n)
        dist = gt.compute_distance(pts.astype(np.float32)).numpy()
        # most lie near the surface (normalised frame, the mug within the unit sphere; the depth step is
        # about 0.05 through the box), a rare one is a wrong match
        assert np.median(dist) < 0.012 and np.quantile(dist, 0.9) < 0.035, np.quantile(dist, [0.5, 0.9])
        if grid is not None:
            assert in_grid(pts, grid, lo, hi).all()  # the depths span the hull only
    assert views.sum(1).min() >= 2  # the reference view and at least one source that agrees
    # every training view gives points
    assert views.any(0).sum() == len(scene.train_ids)
