"""The support plane (neus_stage.geometry.support) on rendered scenes: points are what the scene's cameras
see (rays cast against the true mesh and the true floor), cameras are the renderer's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neus_stage.cameras import decompose_projection, load_cameras_sphere
from neus_stage.geometry.support import find_support, fit_support_plane, up_prior

VIEWS, W, H = 12, 96, 72


def _render(tmp_path_factory, scene: str) -> Path:
    from neus_stage.synth import render_scene

    out = tmp_path_factory.mktemp(f"{scene}_render")
    render_scene(out, scene=scene, n_views=VIEWS, width=W, height=H, seed=0, gt_resolution=64)
    return out


@pytest.fixture(scope="module")
def pot_render(tmp_path_factory) -> Path:
    return _render(tmp_path_factory, "pot")


@pytest.fixture(scope="module")
def mug_render_small(tmp_path_factory) -> Path:
    return _render(tmp_path_factory, "mug")


def cameras(render: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(world_mats, centres, up vectors, scale_mat) of a rendered scene's true cameras."""
    world_mats, scale_mat = load_cameras_sphere(render / "cameras_sphere.npz")
    poses = np.stack([decompose_projection(wm[:3, :4])[1] for wm in world_mats])
    return world_mats, poses[:, :3, 3], -poses[:, :3, 1], scale_mat


def seen_points(render: Path, extra_quads: list[np.ndarray] = (), keep_views: np.ndarray | None = None,
                step: int = 2, noise: float = 0.002, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """First hits of every ``step``-th pixel's ray against the true mesh, the true floor (a square of
    half-side 6 at scene.json's floor_z) and ``extra_quads`` (4 corners each): what an SfM could
    triangulate, with a little noise. Returns (points, label: 0 object, 1 floor, 2.. extra quads)."""
    import open3d as o3d
    import trimesh

    info = json.loads((render / "scene.json").read_text())
    gt = trimesh.load(render / "gt.ply", process=False)
    scene = o3d.t.geometry.RaycastingScene()
    ids = [scene.add_triangles(np.asarray(gt.vertices, np.float32), np.asarray(gt.faces, np.uint32))]
    quads = list(extra_quads)
    if info["floor_z"] is not None:
        z = info["floor_z"]
        quads.insert(0, np.array([[-6, -6, z], [6, -6, z], [6, 6, z], [-6, 6, z]], dtype=float))
    for q in quads:
        ids.append(scene.add_triangles(np.asarray(q, np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.uint32)))
    world_mats, centers, _, _ = cameras(render)
    vv, uu = np.mgrid[0:H:step, 0:W:step]
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], 1)
    rays = []
    for i, wm in enumerate(world_mats):
        if keep_views is not None and not keep_views[i]:
            continue
        d = pix @ np.linalg.inv(wm[:3, :3]).T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        rays.append(np.concatenate([np.broadcast_to(centers[i], d.shape), d], 1))
    ans = scene.cast_rays(o3d.core.Tensor(np.concatenate(rays).astype(np.float32)))
    t = ans["t_hit"].numpy()
    geom = ans["geometry_ids"].numpy()
    r = np.concatenate(rays)
    hit = np.isfinite(t)
    pts = r[hit, :3] + t[hit, None] * r[hit, 3:]
    label = np.searchsorted(ids, geom[hit])
    if info["floor_z"] is None:
        label = np.where(label > 0, label + 1, 0)
    rng = np.random.default_rng(seed)
    return pts + rng.normal(0.0, noise, pts.shape), label


def test_pot_on_its_floor(pot_render):
    _, centers, up, _ = cameras(pot_render)
    pts, label = seen_points(pot_render)
    plane = fit_support_plane(pts, centers, up)
    assert plane is not None
    assert np.degrees(np.arccos(plane.normal @ [0, 0, 1])) < 0.5  # z is up in the rendered world
    assert abs(plane.offset) < 0.005  # the floor is z = 0
    assert plane.inliers.shape == (len(pts),)
    assert plane.inliers[label == 1].mean() > 0.95 and plane.inliers[label == 0].mean() < 0.05
    assert (plane.height(centers) > 0).all()
    assert plane.rms < 3 * 0.002 and plane.tolerance < 0.05
    j = plane.to_json()
    assert json.loads(json.dumps(j))["inliers"] == int(plane.inliers.sum())
    assert fit_support_plane(pts, centers, up, seed=3).offset == pytest.approx(plane.offset, abs=1e-3)


def test_up_prior_from_cameras(pot_render):
    _, centers, up, _ = cameras(pot_render)
    v, how = up_prior(centers, up, np.zeros((1, 3)))
    assert np.degrees(np.arccos(v @ [0, 0, 1])) < 2 and "x axes" in how
    v, how = up_prior(centers, None, np.zeros((1, 3)))  # the ring's normal, oriented to the cameras
    assert np.degrees(np.arccos(v @ [0, 0, 1])) < 5 and "ring" in how
    # cameras on one side only (a quarter of the ring, as DTU's): the x axes still find the vertical
    az = np.degrees(np.arctan2(centers[:, 1], centers[:, 0]))
    few = np.abs(((az - az[0]) + 180) % 360 - 180) < 70
    v, _ = up_prior(centers[few], up[few], np.zeros((1, 3)))
    assert np.degrees(np.arccos(v @ [0, 0, 1])) < 3


def test_plane_in_the_normalised_frame(pot_render):
    _, centers, up, scale_mat = cameras(pot_render)
    pts, _ = seen_points(pot_render)
    plane = fit_support_plane(pts, centers, up)
    to_norm = np.linalg.inv(scale_mat)
    pn = plane.transformed(to_norm)
    x = pts[:50]
    xn = x @ to_norm[:3, :3].T + to_norm[:3, 3]
    assert np.allclose(pn.height(xn), plane.height(x) / scale_mat[0, 0], atol=1e-9)
    assert pn.tolerance == pytest.approx(plane.tolerance / scale_mat[0, 0])


def test_no_floor_no_plane(mug_render_small):
    """The demo mug in front of a studio backdrop: only object points, whose flat bits are no support."""
    _, centers, up, _ = cameras(mug_render_small)
    pts, _ = seen_points(mug_render_small)
    search = find_support(pts, centers, up)
    assert search.plane is None and search.reason == "no plane", search.candidates


def test_corner_gives_two_planes(pot_render):
    """The pot in a corner: the floor and a wall behind it; only the cameras in front of the wall."""
    _, centers, up, _ = cameras(pot_render)
    wall = np.array([[-1.3, -6, 0], [-1.3, 6, 0], [-1.3, 6, 6], [-1.3, -6, 6]], dtype=float)
    front = centers[:, 0] > -0.5
    pts, label = seen_points(pot_render, [wall], keep_views=front)
    assert (label == 2).mean() > 0.1  # the wall is well in view
    search = find_support(pts, centers[front], up[front])
    assert search.plane is None and search.reason == "two planes", search.candidates
    assert "two planes" in search.message


def test_too_few_points(pot_render):
    _, centers, up, _ = cameras(pot_render)
    search = find_support(np.zeros((5, 3)), centers, up)
    assert search.plane is None and search.reason == "too few points"
    assert fit_support_plane(np.full((100, 3), np.nan), centers, up) is None
