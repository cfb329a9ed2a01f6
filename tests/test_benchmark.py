"""The DTU benchmark: aggregation of eval.json files, and the `benchmark` target on a tiny fake DTU layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neus_stage.benchmark import PUBLISHED_BY_SCAN, aggregate, dtu_scene_table, link_masks_to_photos
from neus_stage.errors import StageError

ROOT = Path(__file__).resolve().parents[1]


def _eval_json(path: Path, scan: int, acc: float, comp: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"scan": scan, "units": "mm", "accuracy": acc, "completeness": comp, "overall": (acc + comp) / 2})
    )
    return path


def test_aggregate_hand_made(tmp_path):
    evals = [
        _eval_json(tmp_path / "results" / "dtu_scan37" / "eval.json", 37, 1.0, 2.0),
        _eval_json(tmp_path / "results" / "dtu_scan24" / "eval.json", 24, 0.5, 0.7),
    ]
    bench = tmp_path / "benchmarks"
    (bench / "train").mkdir(parents=True)
    (bench / "mesh").mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench / "train" / "dtu_scan24.tsv").write_text(header + "600.0\t0:10:00\t3000.5\t1\t1\t1\t1\t1\t1\t1\n")
    (bench / "mesh" / "dtu_scan24.tsv").write_text(header + "60.0\t0:01:00\t5000.0\t1\t1\t1\t1\t1\t1\t1\n")
    (tmp_path / "results" / "dtu_scan24" / "neus").mkdir()
    (tmp_path / "results" / "dtu_scan24" / "neus" / "metrics.json").write_text('{"peak_gpu_mem_mb": 2048}')

    df = aggregate(evals, tmp_path / "out", bench)
    assert df["scan"].tolist() == [24, 37]  # sorted by scan
    assert df["overall_mm"].tolist() == pytest.approx([0.6, 1.5])
    r24 = df.iloc[0]
    assert r24["train_min"] == pytest.approx(10.0)
    assert r24["train_peak_rss_mb"] == pytest.approx(3000.5)
    assert r24["peak_rss_mb"] == pytest.approx(5000.0)  # the largest stage
    assert r24["pipeline_min"] == pytest.approx(11.0)
    assert r24["train_peak_gpu_mb"] == pytest.approx(2048)
    assert np.isnan(df.iloc[1]["train_min"])  # no benchmark file: left empty, not zero
    assert r24["NeuS (w/o mask) overall_mm"] == 1.00 and r24["Neuralangelo overall_mm"] == 0.37
    assert df.iloc[1]["2DGS overall_mm"] == 0.91

    csv = pd.read_csv(tmp_path / "out" / "benchmark.csv")
    assert list(csv["scan"]) == [24, 37]
    md = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| 24 | 0.50 | 0.70 | 0.60 | 1.00 | 0.37 | 0.48 |" in md
    assert "| **mean** | 0.75 | 1.35 | **1.05** | 1.19 | 0.54 | 0.70 |" in md  # published means over the same scans
    png = (tmp_path / "out" / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_aggregate_rejects_non_dtu(tmp_path):
    ev = tmp_path / "results" / "mug" / "eval.json"
    ev.parent.mkdir(parents=True)
    ev.write_text(json.dumps({"chamfer": 0.1}))
    with pytest.raises(StageError, match="not a DTU evaluation"):
        aggregate([ev], tmp_path / "out", None)


def test_dtu_scene_table_checks_layout(tmp_path):
    with pytest.raises(StageError, match=r"(?s)DTU data missing .*dtu_scan24/image"):
        dtu_scene_table(tmp_path, [24])
    table = dtu_scene_table(tmp_path, [24, 37], poses="sfm", strict=False)  # dry runs: rows without data
    assert list(table.index) == ["dtu_scan24", "dtu_scan37"]
    assert table.loc["dtu_scan37", "dtu_scan"] == "37" and table.loc["dtu_scan37", "poses"] == "sfm"
    assert table.loc["dtu_scan24", "cameras"] == str(tmp_path / "dtu_scan24" / "cameras_sphere.npz")
    with pytest.raises(StageError, match="twice"):
        dtu_scene_table(tmp_path, [24, 24], strict=False)


def test_link_masks_pairs_by_order(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "mask").mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (16, 16)).save(tmp_path / "image" / f"{i:06d}.png")
        Image.new("L", (16, 16), 255 * (i % 2)).save(tmp_path / "mask" / f"{i:03d}.png")
    assert link_masks_to_photos(tmp_path / "image", tmp_path / "mask", tmp_path / "out") == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert (tmp_path / "out" / "000001.png").resolve() == (tmp_path / "mask" / "001.png").resolve()
    (tmp_path / "mask" / "003.png").write_bytes(b"")
    with pytest.raises(StageError, match="4 masks for 3 photos"):
        link_masks_to_photos(tmp_path / "image", tmp_path / "mask", tmp_path / "out2")


# ----------------------------------------------------------------------------- fake DTU, end to end
MM = 100.0  # the synthetic mug is 1.0 unit tall: read as decimetres, 100 mm


def _fake_dtu_scan(root: Path, scan: int, seed: int) -> None:
    """A rendered mug in the layout of NeuS's DTU release and the official evaluation data, in mm."""
    from PIL import Image
    from scipy.io import savemat

    from neus_stage.artifacts.meshes import read_mesh
    from neus_stage.synth import render_scene

    src = root / f"_render{scan}"
    render_scene(src, scene="mug", n_views=12, width=160, height=120, seed=seed, gt_resolution=96)
    d = root / f"dtu_scan{scan}"
    (d / "image").mkdir(parents=True)
    (d / "mask").mkdir()
    for i, photo in enumerate(sorted((src / "photos").iterdir())):  # release naming: 000000.png / 000.png
        Image.open(photo).convert("RGB").save(d / "image" / f"{i:06d}.png")
        Image.open(src / "masks" / f"{photo.stem}.png").convert("RGB").save(d / "mask" / f"{i:03d}.png")
    # world -> mm: x' = MM x. world_mat' = world_mat diag(1/MM, 1/MM, 1/MM, 1), scale_mat' = diag(MM,..,1) scale_mat
    cams = np.load(src / "cameras_sphere.npz")
    to_mm = np.diag([MM, MM, MM, 1.0])
    out = {}
    for i in range(12):
        out[f"world_mat_{i}"] = cams[f"world_mat_{i}"] @ np.linalg.inv(to_mm)
        out[f"scale_mat_{i}"] = to_mm @ cams[f"scale_mat_{i}"]
    np.savez(d / "cameras_sphere.npz", **out)

    verts, _ = read_mesh(src / "gt.ply")
    pts = verts * MM
    lo, hi = pts.min(0) - 10.0, pts.max(0) + 10.0
    res = 2.0
    shape = tuple(int(np.ceil(x)) + 1 for x in (hi - lo) / res)
    (root / "ObsMask").mkdir(exist_ok=True)
    savemat(
        root / "ObsMask" / f"ObsMask{scan}_10.mat",
        {"ObsMask": np.ones(shape, np.uint8), "BB": np.stack([lo, hi]), "Res": np.array([[res]])},
    )
    savemat(root / "ObsMask" / f"Plane{scan}.mat", {"P": np.array([[0.0], [0.0], [1.0], [-(lo[2] - 1.0)]])})
    (root / "Points" / "stl").mkdir(parents=True, exist_ok=True)
    with open(root / "Points" / "stl" / f"stl{scan:03}_total.ply", "w") as fh:
        fh.write(
            f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\n"
            "property float z\nend_header\n"
        )
        np.savetxt(fh, pts, fmt="%.4f")


@pytest.mark.workflow
def test_benchmark_target_on_fake_dtu(tmp_path):
    import yaml

    dtu = tmp_path / "dtu"
    for scan, seed in ((24, 0), (37, 1)):
        _fake_dtu_scan(dtu, scan, seed)
    config = {
        "scenes": "",
        "dtu_root": str(dtu),
        "benchmark": {"scans": [24, 37], "poses": "reference"},
        "visual_hull": {"resolution": 32},
        "train": {
            "preset": "cpu",
            "overrides": {
                "steps": 30,
                "checkpoint_every": 10,
                "validate_every": 0,
                "log_every": 10,
                "n_rays": 128,
                "n_samples": 32,
            },
        },
        "mesh": {"resolution": 48, "dilation": 2},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    cmd = [
        "timeout",
        "280",
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--cores",
        "2",
        "--workflow-profile",
        "none",
        "--show-failed-logs",
        "benchmark",
    ]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]

    out = tmp_path / "results" / "benchmark"
    df = pd.read_csv(out / "benchmark.csv")
    assert df["scan"].tolist() == [24, 37]
    assert (df["overall_mm"] > 0).all() and (df["overall_mm"] < 20).all()  # mm, below DTU's 20 mm cut-off
    assert np.allclose(df["overall_mm"], (df["accuracy_mm"] + df["completeness_mm"]) / 2, atol=1e-3)
    assert (df["train_min"] > 0).all() and (df["train_peak_rss_mb"] > 0).all()
    assert df["NeuS (w/o mask) overall_mm"].tolist() == [PUBLISHED_BY_SCAN["NeuS (w/o mask)"][s] for s in (24, 37)]
    md = (out / "benchmark.md").read_text()
    assert "| 24 |" in md and "| 37 |" in md and "**mean**" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    for scan in (24, 37):
        ev = json.loads((tmp_path / "results" / f"dtu_scan{scan}" / "eval.json").read_text())
        assert ev["scan"] == scan and ev["units"] == "mm"
    print("\n" + md)
