"""Synthetic scenes: files, the NeuS camera convention, ground truth, EXIF rotation, the hard variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from neus_stage import synth
from neus_stage.artifacts.dataset import read_cameras_sphere
from neus_stage.artifacts.meshes import read_mesh
from neus_stage.errors import StageError
from neus_stage.geometry.cameras import camera_centers, neus_cameras
from neus_stage.photos import read_photo

N, W, H = 12, 160, 120


@pytest.fixture(scope="module")
def mug(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mug")
    info = synth.render_scene(out, scene="mug", n_views=N, width=W, height=H, seed=3, gt_resolution=96)
    return out, info


def _masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))]


def _project(world_mat: np.ndarray, x: np.ndarray) -> np.ndarray:
    p = np.c_[x, np.ones(len(x))] @ world_mat.T
    return p[:, :2] / p[:, 2:3]


def test_files_written(mug):
    out, info = mug
    assert sorted(p.name for p in (out / "photos").iterdir()) == [f"{i:03d}.jpg" for i in range(N)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:03d}.png" for i in range(N)]
    for name in ("cameras_sphere.npz", "gt.ply", "scene.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "scene.json").read_text())
    assert saved["scene"] == "mug" and saved["n_views"] == N and (saved["width"], saved["height"]) == (W, H)
    assert saved["object_bbox"] == info["object_bbox"]
    with Image.open(out / "photos" / "000.jpg") as im:
        assert im.size == (W, H) and im.mode == "RGB"
        assert im.getexif().get_ifd(0x8769)[0xA405] == synth.FOCAL_35MM


def test_masks_binary_and_not_degenerate(mug):
    out, _ = mug
    for m in _masks(out):
        assert m.shape == (H, W)
        assert set(np.unique(m)) == {0, 255}
        frac = (m > 0).mean()
        assert 0.05 < frac < 0.6
        # the mug is wholly inside every frame, in one piece
        assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()
        assert ndimage.label(m > 0)[1] == 1


def test_gt_mesh_closed_and_outward(mug):
    out, info = mug
    v, f = read_mesh(out / "gt.ply")
    assert len(f) > 1000
    # closed: every edge shared by exactly two faces
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()
    # outward normals: positive signed volume, close to the analytic mug's (cylinder shell + bottom + handle)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert 0.12 < volume < 0.25
    assert np.allclose(v.min(0), info["object_bbox"]["min"])
    assert np.allclose(v.max(0), info["object_bbox"]["max"])
    # the mesh is the zero level of the SDF
    sdf = synth.SCENES["mug"](np.random.default_rng(0)).sdf
    assert np.abs(sdf(v[::50].astype(np.float32))).max() < 0.01


def test_scale_mat_sphere_contains_object(mug):
    out, _ = mug
    world_mats, scale_mat = read_cameras_sphere(out / "cameras_sphere.npz", n_views=N)
    v, _ = read_mesh(out / "gt.ply")
    r, c = scale_mat[0, 0], scale_mat[:3, 3]
    assert np.allclose(scale_mat, np.diag([r, r, r, 1.0]) + np.pad(c[:, None], ((0, 1), (3, 0))))
    v_norm = (v - c) / r
    radius = np.linalg.norm(v_norm, axis=1)
    assert radius.max() < 0.98 and radius.max() > 0.8  # inside, and not a needlessly loose sphere
    assert abs(np.linalg.norm(c)) > 0.05  # the object is deliberately not at the origin
    # in the normalised frame every camera is outside the unit sphere
    _, poses = neus_cameras(world_mats, scale_mat)
    assert (np.linalg.norm(poses[:, :3, 3], axis=1) > 1.5).all()


def test_gt_vertices_project_into_masks(mug):
    out, _ = mug
    world_mats, _ = read_cameras_sphere(out / "cameras_sphere.npz", n_views=N)
    v, _ = read_mesh(out / "gt.ply")
    for wm, m in zip(world_mats, _masks(out), strict=True):
        uv = _project(wm, v)
        ui = np.round(uv).astype(int)  # integer pixel centres
        assert (ui >= 0).all() and (ui[:, 0] < W).all() and (ui[:, 1] < H).all()
        grown = ndimage.binary_dilation(m > 0, iterations=1)
        assert grown[ui[:, 1], ui[:, 0]].mean() > 0.999
        # and the projected surface covers the mask (catches a transposed or mirrored convention)
        hit = np.zeros((H, W), dtype=bool)
        hit[ui[:, 1], ui[:, 0]] = True
        hit = ndimage.binary_fill_holes(ndimage.binary_closing(hit, iterations=2))
        assert ((hit & (m > 0)).sum() / (hit | (m > 0)).sum()) > 0.85


def test_cameras_look_at_object_from_around(mug):
    out, info = mug
    world_mats, _ = read_cameras_sphere(out / "cameras_sphere.npz", n_views=N)
    centers = camera_centers(world_mats)
    target = np.asarray(info["object_sphere"]["center"])
    for wm, cc in zip(world_mats, centers, strict=True):
        # the optical axis (third row of the rotation, OpenCV z forward) points at the object
        forward = wm[2, :3] / np.linalg.norm(wm[2, :3])
        to_obj = (target - cc) / np.linalg.norm(target - cc)
        assert np.degrees(np.arccos(np.clip(forward @ to_obj, -1, 1))) < 5.0
        # x right, y down: the world up (+z) projects upwards in the image (negative v)
        uv = _project(wm, np.stack([target, target + [0.0, 0.0, 0.3]]))
        assert uv[1, 1] < uv[0, 1] - 5
    rel = centers - target
    elevation = np.degrees(np.arcsin(rel[:, 2] / np.linalg.norm(rel, axis=1)))
    assert elevation.min() >= 9.9 and elevation.max() <= 60.1
    azimuth = np.sort(np.degrees(np.arctan2(rel[:, 1], rel[:, 0])))
    gaps = np.diff(np.r_[azimuth, azimuth[0] + 360.0])
    assert gaps.max() < 2.5 * 360.0 / N  # all the way round


def test_pixel_centre_convention(tmp_path, monkeypatch):
    """A ball the cameras aim at projects (world_mat) onto its mask's centroid: integer pixel centres."""
    centre = np.array([0.2, -0.1, 0.3])

    def ball(rng: np.random.Generator) -> synth.Scene:
        return synth.Scene(
            name="ball",
            sdf=lambda p: np.linalg.norm(p - centre.astype(np.float32), axis=1) - 0.3,
            albedo=lambda p: np.tile(np.float32([0.6, 0.2, 0.1]), (len(p), 1)),
            bound_center=centre,
            bound_radius=0.35,
            aim_jitter=0.0,
        )

    monkeypatch.setitem(synth.SCENES, "ball", ball)
    synth.render_scene(tmp_path, scene="ball", n_views=3, width=W, height=H, gt_resolution=48)
    world_mats, _ = read_cameras_sphere(tmp_path / "cameras_sphere.npz")
    for wm, m in zip(world_mats, _masks(tmp_path), strict=True):
        uv = _project(wm, centre[None])[0]
        vs, us = np.nonzero(m)
        assert abs(us.mean() - uv[0]) < 0.1 and abs(vs.mean() - uv[1]) < 0.1
        assert abs(uv[0] - (W - 1) / 2) < 1e-3  # on the optical axis: the principal point


def test_exif_rotated_photos_read_upright(tmp_path):
    kw = dict(scene="mug", n_views=6, width=W, height=H, seed=5, gt_resolution=48)
    plain = synth.render_scene(tmp_path / "plain", **kw)
    turned = synth.render_scene(tmp_path / "exif", exif_rotate=True, **kw)
    assert plain["exif_rotated"] == {}
    assert set(turned["exif_rotated"].values()) >= {6, 8}  # both quarter turns are exercised
    for name in plain["photos"]:
        stem = Path(name).stem
        with Image.open(tmp_path / "exif" / "photos" / name) as raw:
            stored = raw.size
        if stem in turned["exif_rotated"] and turned["exif_rotated"][stem] in (6, 8):
            assert stored == (H, W)  # stored sideways ...
        a = read_photo(tmp_path / "exif" / "photos" / name).astype(float)
        b = read_photo(tmp_path / "plain" / "photos" / name).astype(float)
        assert a.shape == b.shape == (H, W, 3)  # ... and read upright
        assert np.abs(a - b).mean() < 2.0
    assert np.array_equal(_masks(tmp_path / "plain")[1], _masks(tmp_path / "exif")[1])


@pytest.mark.parametrize("scene", ["cut", "parts", "floor"])
def test_hard_variants(tmp_path, scene):
    info = synth.render_scene(tmp_path, scene=scene, n_views=6, width=W, height=H, seed=1, gt_resolution=64)
    masks = [m > 0 for m in _masks(tmp_path)]
    assert all(m.any() and not m.all() for m in masks)
    if scene == "cut":  # the object leaves the frame in most views
        touching = [m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks]
        assert sum(touching) >= 4
    elif scene == "parts":
        assert max(ndimage.label(m)[1] for m in masks) == 3
        v, f = read_mesh(tmp_path / "gt.ply")
        edges = (f.ravel(), np.roll(f, 1, axis=1).ravel())
        adj = sparse.coo_matrix((np.ones(3 * len(f)), edges), (len(v), len(v)))
        assert csgraph.connected_components(adj, directed=False)[0] == 3
    else:  # floor: the table is in the photos, not in the masks nor the gt mesh
        v, _ = read_mesh(tmp_path / "gt.ply")
        assert v[:, 2].min() >= info["floor_z"] - 1e-3
        photo = read_photo(tmp_path / "photos" / "000.jpg").astype(float)
        below = ~masks[0]
        below[: H // 2] = False
        assert photo[below].std(0).mean() > 10  # textured floor, not a plain backdrop
        assert (photo[below][:, 0] - photo[below][:, 2]).mean() > 20  # wooden (warm), not grey


def test_unknown_scene(tmp_path):
    with pytest.raises(StageError, match="unknown synthetic scene"):
        synth.render_scene(tmp_path, scene="kettle")
