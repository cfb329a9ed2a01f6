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

RECORD = {"normalized": {"min": [-0.5, -0.4, -0.3], "max": [0.5, 0.4, 0.3]},
          "world": {"min": [1.0, 2.0, 3.0], "max": [2.0, 3.5, 4.0]}, "carved": True}


def test_bbox_round_trip(tmp_path):
    path = tmp_path / "bbox.json"
    write_bbox(path, RECORD)
    assert read_bbox_record(path) == RECORD
    lo, hi = read_bbox(path)
    assert lo.tolist() == [-0.5, -0.4, -0.3] and hi.tolist() == [0.5, 0.4, 0.3]
    assert read_world_box(path)[1].tolist() == [2.0, 3.5, 4.0]
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it
    assert read_support(path)["method"] == "none"  # a record from before the support search


@pytest.mark.parametrize("text,message", [
    ("{not json", "not readable as JSON"),
    ("[1, 2]", "not a bbox.json"),
    (json.dumps({"world": RECORD["world"]}), "normalized.min/max as 3 numbers"),
    (json.dumps({"normalized": {"min": [0, 0, 0], "max": [1, -1, 1]}}), "the normalized box is empty or invalid"),
    (json.dumps({**RECORD, "world": {"min": [0, 0], "max": [1, 1]}}), "world.min/max as 3 numbers"),
])
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
    write_hull(tmp_path / "hull.npz", occ, -np.ones(3), np.ones(3), np.eye(4), support_points=pts,
               support_inliers=inl)
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
    for name, message in [("a", "not a hull.npz with occupancy, bounds_min, bounds_max"),
                          ("b", "3-D grid over a valid box"), ("c", "3-D grid over a valid box"),
                          ("d", "not a hull.npz")]:
        with pytest.raises(StageError, match=message) as err:
            read_hull(tmp_path / f"{name}.npz")
        assert f"{name}.npz" in str(err.value) and "visual-hull stage" in str(err.value)
    with pytest.raises(StageError, match="hull file not found"):
        read_hull(tmp_path / "missing.npz")
