"""neus_stage.artifacts: each artifact family read and written in one place, a malformed file one error
that names it and says how to rebuild it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neus_stage.artifacts.box import (
    read_bbox,
    read_bbox_record,
    read_hull,
    read_hull_file,
    read_support,
    read_world_box,
    write_bbox,
    write_hull,
)
from neus_stage.errors import StageError

RECORD = {
    "normalized": {"min": [-0.5, -0.4, -0.3], "max": [0.5, 0.4, 0.3]},
    "world": {"min": [1.0, 2.0, 3.0], "max": [2.0, 3.5, 4.0]},
    "carved": True,
}


def test_bbox_round_trip(tmp_path):
    path = tmp_path / "bbox.json"
    write_bbox(path, RECORD)
    assert read_bbox_record(path) == RECORD
    lo, hi = read_bbox(path)
    assert lo.tolist() == [-0.5, -0.4, -0.3] and hi.tolist() == [0.5, 0.4, 0.3]
    assert read_world_box(path)[1].tolist() == [2.0, 3.5, 4.0]
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it
    assert read_support(path)["method"] == "none"  # a record from before the support search


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", "not readable as JSON"),
        ("[1, 2]", "not a bbox.json"),
        (json.dumps({"world": RECORD["world"]}), "normalized.min/max as 3 numbers"),
        (json.dumps({"normalized": {"min": [0, 0, 0], "max": [1, -1, 1]}}), "the normalized box is empty or invalid"),
        (json.dumps({**RECORD, "world": {"min": [0, 0], "max": [1, 1]}}), "world.min/max as 3 numbers"),
    ],
)
def test_a_malformed_bbox_names_the_file_and_the_fix(tmp_path, text, message):
    path = tmp_path / "bbox.json"
    path.write_text(text)
    with pytest.raises(StageError, match=message) as err:
        read_bbox(path)
    assert str(path) in str(err.value) and "visual-hull stage" in str(err.value)


def test_a_missing_bbox_says_which_stage_writes_it(tmp_path):
    with pytest.raises(StageError, match="bbox file not found; run the visual-hull stage first"):
        read_bbox(tmp_path / "bbox.json")
    with pytest.raises(StageError):
        write_bbox(tmp_path / "bbox.json", {"world": RECORD["world"]})  # no normalized box: refused
    assert not (tmp_path / "bbox.json").exists()


def test_hull_round_trip_and_extras(tmp_path):
    occ = np.zeros((8, 8, 8), bool)
    occ[2:6, 2:6, 1:7] = True
    pts, inl = np.random.default_rng(0).random((5, 3)), np.array([1, 0, 1, 1, 0], bool)
    write_hull(tmp_path / "hull.npz", occ, -np.ones(3), np.ones(3), np.eye(4), support_points=pts, support_inliers=inl)
    h = read_hull_file(tmp_path / "hull.npz")
    assert (h.occupancy == occ).all() and h.occupancy.dtype == bool
    assert np.allclose(h.voxel(), 0.25) and np.allclose(h.scale_mat, np.eye(4))
    assert np.allclose(h.support_points, pts) and (h.support_inliers == inl).all()
    o, lo, hi = read_hull(tmp_path / "hull.npz")
    assert (o == occ).all() and lo.tolist() == [-1, -1, -1] and hi.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="3-D grid"):
        write_hull(tmp_path / "flat.npz", occ[0], -np.ones(3), np.ones(3), np.eye(4))


def test_a_malformed_hull_names_the_file_and_the_fix(tmp_path):
    np.savez(tmp_path / "a.npz", occupancy=np.ones((4, 4, 4), bool))
    np.savez(tmp_path / "b.npz", occupancy=np.ones((4, 4), bool), bounds_min=-np.ones(3), bounds_max=np.ones(3))
    np.savez(tmp_path / "c.npz", occupancy=np.ones((4, 4, 4), bool), bounds_min=np.ones(3), bounds_max=-np.ones(3))
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    for name, message in [
        ("a", "not a hull.npz with occupancy, bounds_min, bounds_max"),
        ("b", "3-D grid over a valid box"),
        ("c", "3-D grid over a valid box"),
        ("d", "not a hull.npz"),
    ]:
        with pytest.raises(StageError, match=message) as err:
            read_hull(tmp_path / f"{name}.npz")
        assert f"{name}.npz" in str(err.value) and "visual-hull stage" in str(err.value)
    with pytest.raises(StageError, match="hull file not found"):
        read_hull(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------- the dataset
@pytest.mark.parametrize("form", ["L", "RGB", "RGBA", "I;16", "1"])
def test_one_mask_rule_for_every_image_form(tmp_path, form):
    """Grey, RGB, RGBA (alpha ignored), 16-bit and 1-bit masks read as the same foreground."""
    from PIL import Image

    from neus_stage.artifacts.dataset import read_mask, read_masks, write_mask

    truth = np.zeros((12, 16), bool)
    truth[3:9, 4:12] = True
    if form == "I;16":
        im = Image.fromarray(truth.astype(np.uint16) * 65535)
    elif form == "1":
        im = Image.fromarray(truth)
    else:
        im = Image.fromarray(truth.astype(np.uint8) * 255).convert(form)
        if form == "RGBA":  # an opaque alpha everywhere: the colour decides
            im.putalpha(255)
    im.save(tmp_path / "a.png")
    assert (read_mask(tmp_path / "a.png") == truth).all()
    write_mask(tmp_path / "b.png", truth)
    assert np.asarray(Image.open(tmp_path / "b.png")).max() == 255
    assert (read_masks(tmp_path, ["a", "b"]) == truth).all()


def test_dataset_masks_name_the_file(tmp_path):
    from PIL import Image

    from neus_stage.artifacts.dataset import dataset_masks, read_mask, read_masks

    (tmp_path / "mask").mkdir()
    for name, shape in (("000", (8, 8)), ("001", (8, 9))):
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "mask" / f"{name}.png")
    with pytest.raises(StageError, match="different sizes"):
        read_masks(tmp_path / "mask", ["000", "001"])
    with pytest.raises(StageError, match=r"2 masks but cameras_sphere.npz holds 3 cameras"):
        dataset_masks(tmp_path, 3)
    with pytest.raises(StageError, match=r"002.png: mask missing for image '002'"):
        read_masks(tmp_path / "mask", ["002"])
    (tmp_path / "mask" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(StageError, match=r"bad.png: not a readable mask image"):
        read_mask(tmp_path / "mask" / "bad.png")


def test_cameras_and_meta_round_trip(tmp_path):
    from neus_stage.artifacts.dataset import read_cameras_sphere, read_meta, write_cameras_sphere, write_meta

    world = np.stack([np.eye(4) * (i + 1) for i in range(3)])
    world[:, 3, 3] = 1
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    write_cameras_sphere(tmp_path / "cameras_sphere.npz", world, scale)
    w, s = read_cameras_sphere(tmp_path / "cameras_sphere.npz", n_views=3)
    assert np.allclose(w, world) and np.allclose(s, scale)
    with pytest.raises(StageError, match="holds 3 cameras but the scene has 4 photos"):
        read_cameras_sphere(tmp_path / "cameras_sphere.npz", n_views=4)
    with pytest.raises(StageError, match="meta.json: missing; run the dataset stage first"):
        read_meta(tmp_path)
    write_meta(tmp_path, {"units": "m"})
    assert read_meta(tmp_path) == {"units": "m"}
    (tmp_path / "meta.json").write_text("{oops")
    with pytest.raises(StageError, match="meta.json: not valid JSON"):
        read_meta(tmp_path)


# ---------------------------------------------------------------------------- meshes and reports
@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_mesh_round_trip_by_extension(tmp_path, suffix):
    import trimesh

    from neus_stage.artifacts.meshes import read_mesh, read_mesh_decimated, write_mesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    colors = np.full((len(sphere.vertices), 3), 200, np.uint8)
    write_mesh(tmp_path / f"m{suffix}", sphere.vertices, sphere.faces, colors)
    V, F = read_mesh(tmp_path / f"m{suffix}")
    assert len(F) == len(sphere.faces) and np.allclose(np.sort(V, 0), np.sort(sphere.vertices, 0), atol=1e-5)
    V2, F2, n = read_mesh_decimated(tmp_path / f"m{suffix}", 200)
    assert n == len(sphere.faces) and len(F2) <= 200 and len(V2) < len(V)


def test_bad_mesh_files_name_the_file(tmp_path):
    from neus_stage.artifacts.meshes import check_mesh_path, read_mesh, read_points, write_mesh

    with pytest.raises(StageError, match=r"missing.ply: mesh file not found"):
        read_mesh(tmp_path / "missing.ply")
    (tmp_path / "empty.ply").write_bytes(b"")
    with pytest.raises(StageError, match=r"empty.ply: mesh file is empty"):
        read_mesh(tmp_path / "empty.ply")
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(StageError, match=r"text.ply: not a PLY file"):
        read_mesh(tmp_path / "text.ply")
    with pytest.raises(StageError, match=r"cannot write a mesh as '.stl'"):
        check_mesh_path(tmp_path / "m.stl")
    write_mesh(tmp_path / "points.ply", np.random.default_rng(0).random((10, 3)), np.zeros((0, 3), int))
    assert read_points(tmp_path / "points.ply").shape == (10, 3)
    with pytest.raises(StageError, match="no faces; a triangle mesh is needed"):
        read_mesh(tmp_path / "points.ply")


def test_stage_records(tmp_path):
    from neus_stage.artifacts.reports import read_report, read_report_if_any, write_report

    write_report(tmp_path / "report.json", {"a": 1})
    assert read_report(tmp_path / "report.json") == {"a": 1} == read_report_if_any(tmp_path / "report.json")
    assert read_report_if_any(tmp_path / "none.json") == {}
    with pytest.raises(StageError, match=r"none.json: missing; run the sfm stage first"):
        read_report(tmp_path / "none.json", "the sfm stage")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(StageError, match="not a JSON object"):
        read_report(tmp_path / "bad.json")
    assert read_report_if_any(tmp_path / "bad.json") == {}
