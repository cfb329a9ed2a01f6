"""Metric scale (neus_stage.scale, the dataset stage): an ArUco marker rendered on the floor of a scene
(neus_stage.synth ``marker``: the box on a floor with a printed DICT_4X4_50 marker of side 0.4, world units
read as metres), detected in the photos and triangulated with real COLMAP cameras; a known length and a
factor; a marker that cannot be used leaves the scene in SfM units and says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from frame_scenes import render_dir, sfm_scene
from PIL import Image, ImageDraw

from neus_stage.dataset import build_dataset_from_sfm
from neus_stage.errors import StageError
from neus_stage.geometry.markers import triangulate
from neus_stage.scale import ScaleSettings, detect_markers
from neus_stage.synth import MARKER_DICTIONARY, MARKER_ID, MARKER_SIDE

BOX_HEIGHT = 0.55  # the marker scene's box: 1.0 x 0.7 x 0.55 on the floor (synth._box)
MARKER = ScaleSettings(marker_length=MARKER_SIDE, marker_dictionary=MARKER_DICTIONARY, marker_ids=(MARKER_ID,))


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> dict:
    root = sfm_scene(tmp_path_factory.getbasetemp(), "marker")
    out = tmp_path_factory.mktemp("scale_marker")
    meta = build_dataset_from_sfm(root / "sfm", root / "masks", out / "dataset", scale=MARKER)
    return {"root": root, "render": render_dir(root), "out": out, "meta": meta}


def _world_points(dataset: Path, root: Path) -> np.ndarray:
    import pycolmap

    from neus_stage.frames import sfm_to_world

    rec = pycolmap.Reconstruction(str(root / "sfm" / "undistorted" / "sparse"))
    return sfm_to_world(dataset).apply(np.array([p.xyz for p in rec.points3D.values()]))


def test_triangulate_recovers_a_point():
    rng = np.random.default_rng(0)
    X = np.array([0.3, -0.2, 1.5])
    Ps = []
    for _ in range(5):
        R, _ = np.linalg.qr(rng.normal(size=(3, 3)) * 0.1 + np.eye(3))
        t = rng.normal(size=3) * 0.2
        Ps.append(np.array([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]]) @ np.c_[R, t])
    uv = np.array([(P @ np.append(X, 1))[:2] / (P @ np.append(X, 1))[2] for P in Ps])
    np.testing.assert_allclose(triangulate(np.stack(Ps), uv), X, atol=1e-9)


def test_marker_gives_metres(marker):
    meta, sc = marker["meta"], marker["meta"]["frame"]["scale"]
    assert meta["units"] == "metres" and sc["method"] == "marker", sc["message"]
    m = sc["marker"]["markers"][0]
    assert m["id"] == MARKER_ID and m["photos"] >= 3 and m["reprojection_px"] < 1.0
    # independent of the marker: the box's flat top, 0.55 m above the floor (z = 0), from its SfM points
    pts = _world_points(marker["out"] / "dataset", marker["root"])
    top = pts[(pts[:, 2] > 0.4) & (pts[:, 2] < 0.7) & (np.hypot(pts[:, 0], pts[:, 1]) < 0.6)]
    assert len(top) > 50
    height = float(np.median(top[:, 2]))
    assert height == pytest.approx(BOX_HEIGHT, rel=0.01), height
    # the marker lies on the floor (z = 0, the support plane) and is a square of the right size
    from neus_stage.frames import sfm_to_world

    corners = sfm_to_world(marker["out"] / "dataset").apply(np.asarray(m["border_middle_corners_sfm"]))
    assert np.abs(corners[:, 2]).max() < 0.005  # metres
    edges = np.linalg.norm(corners - np.roll(corners, -1, axis=0), axis=1)
    np.testing.assert_allclose(edges, MARKER_SIDE * 5 / 6, rtol=0.01)  # the border's middle: 5/6 of the side


def test_marker_scale_against_the_true_cameras(marker):
    """The camera-centre similarity to the renderer's cameras (metres) is close to 1: what is left is the
    focal-length/distance ambiguity of object-centred SfM, which moves the cameras, not the object."""
    from neus_stage.frames import reference_alignment

    sim = reference_alignment(marker["out"] / "dataset", marker["render"] / "cameras_sphere.npz")
    assert sim.scale == pytest.approx(1.0, rel=0.03), sim.scale


def test_known_length_and_factor(marker):
    from neus_stage.artifacts.sfm import read_sfm_cameras
    from neus_stage.dataset import sfm_points
    from neus_stage.scale import resolve_scale

    root = marker["root"]
    cams, rec = read_sfm_cameras(root / "sfm")
    _, by_id = sfm_points(rec)
    ids = sorted(by_id)[:2]
    d = float(np.linalg.norm(by_id[ids[0]] - by_id[ids[1]]))
    images = sorted((root / "sfm" / "undistorted" / "images").iterdir())

    def scale(settings: ScaleSettings):
        return resolve_scale(settings, images, cams.names, cams.world_mats, by_id)

    res = scale(ScaleSettings(known_length=(ids[0], ids[1], 0.25), factor=0.5))
    assert res.method == "known_length" and res.factor == pytest.approx(0.25 / d) and res.units == "metres"
    res = scale(ScaleSettings(factor=0.02))
    assert res.method == "factor" and res.factor == 0.02
    res = scale(ScaleSettings())
    assert res.method == "none" and res.factor == 1.0 and res.units == "SfM units" and "SfM units" in res.message
    # a detected marker wins over the others
    assert scale(ScaleSettings(marker_length=MARKER_SIDE, factor=0.02)).method == "marker"
    with pytest.raises(StageError, match="scale.known_length: SfM point id"):
        scale(ScaleSettings(known_length=(ids[0], 10**9, 0.25)))
    with pytest.raises(StageError, match="scale.marker_dictionary: unknown ArUco dictionary 'DICT_4X4_5'"):
        scale(ScaleSettings(marker_length=0.1, marker_dictionary="DICT_4X4_5"))


def test_marker_in_two_photos_only_goes_on_in_sfm_units(marker, tmp_path, caplog):
    """The marker painted out of all but two undistorted photos: no scale, the run goes on in SfM units and
    says which photos saw it."""
    sfm = tmp_path / "sfm"
    shutil.copytree(marker["root"] / "sfm", sfm)
    images = sorted((sfm / "undistorted" / "images").iterdir())
    found = detect_markers(images, MARKER_DICTIONARY)
    seen = [k for k, d in enumerate(found) if MARKER_ID in d]
    assert len(seen) >= 3
    for k in seen[2:]:
        im = Image.open(images[k]).convert("RGB")
        c = found[k][MARKER_ID]
        centre = c.mean(0)
        grown = centre + 1.6 * (c - centre)  # the marker and its white sheet
        ImageDraw.Draw(im).polygon([tuple(p) for p in grown], fill=(150, 120, 90))
        im.save(images[k])
    with caplog.at_level("WARNING", logger="neus_stage.scale"):
        meta = build_dataset_from_sfm(sfm, marker["root"] / "masks", tmp_path / "dataset", scale=MARKER)
    assert meta["units"] == "SfM units" and meta["frame"]["scale"]["method"] == "none"
    msg = meta["frame"]["scale"]["message"]
    assert "detected in 2 photo(s)" in msg and "fewer than 3" in msg, msg
    assert any("fewer than 3" in r.getMessage() for r in caplog.records)


def test_no_marker_in_view_goes_on_in_sfm_units(marker, tmp_path):
    """A marker too small (or absent) to detect: asked for, not found, SfM units, said so."""
    sfm = tmp_path / "sfm"
    shutil.copytree(marker["root"] / "sfm", sfm)
    for p in (sfm / "undistorted" / "images").iterdir():  # as if a tenth of the size: the marker ~5 px wide
        im = Image.open(p)
        im.resize((im.width // 10, im.height // 10), Image.BILINEAR).resize(im.size, Image.NEAREST).save(p)
    meta = build_dataset_from_sfm(sfm, marker["root"] / "masks", tmp_path / "dataset", scale=MARKER)
    assert meta["units"] == "SfM units"
    assert "was not detected in any of the 30 photos" in meta["frame"]["scale"]["message"]


def test_cli_and_workflow_arguments(marker, tmp_path, run_cli):
    root = marker["root"]
    rc = run_cli(
        [
            "dataset",
            "--sfm",
            str(root / "sfm"),
            "--masks",
            str(root / "masks"),
            "--out",
            str(tmp_path / "dataset"),
            "--marker-length",
            str(MARKER_SIDE),
            "--marker-ids",
            str(MARKER_ID),
        ]
    )
    assert rc == 0
    import json

    meta = json.loads((tmp_path / "dataset" / "meta.json").read_text())
    assert meta["units"] == "metres"
    assert meta["frame"]["from_sfm"]["scale"] == pytest.approx(marker["meta"]["frame"]["from_sfm"]["scale"])


def test_workflow_passes_the_scale_keys_to_the_dataset_stage():
    """A dry run of the demo with scale keys (config and scene_overrides): the dataset command carries them,
    training holds out every 8th view by default, and the report writes quality.json."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cfg = [
        "scale={marker_length: 0.05, marker_ids: [3]}",
        "scene_overrides={demo: {scale: {known_length: {points: [12, 345], metres: 0.25}}}}",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(root / "Snakefile"),
            "-n",
            "-p",
            "--forceall",
            "--workflow-profile",
            "none",
            "--config",
            *cfg,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    dataset = next(line for line in out.splitlines() if " dataset --sfm " in line)
    assert "--marker-length 0.05" in dataset and "--marker-ids 3" in dataset and "--known-length 12 345 0.25" in dataset
    train = next(line for line in out.splitlines() if " train --dataset " in line)
    assert '"holdout_every": 8' in train
    assert "--quality results/demo/quality.json" in out
