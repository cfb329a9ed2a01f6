"""The per-scene HTML report: a real small scene (rendered mug, short training, mesh, evaluation), the page's
sections and embedded images, a screenshot in headless Chromium, and a report built from missing artifacts."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage.cli import main
from neus_stage.report import SECTIONS, build_report, read_error_cloud, rule_times

BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _images(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(b64)))
        for b64 in re.findall(r'src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"', page)
    ]


def _section(page: str, key: str) -> str:
    m = re.search(rf'<section id="{key}" data-status="(\w+)">(.*?)</section>', page, re.S)
    assert m, f"section {key} missing"
    return m.group(2)


@pytest.fixture(scope="module")
def scene(mug_dataset, tmp_path_factory) -> dict[str, Path]:
    """results/mug as the workflow lays it out (poses = reference, so no sfm/): dataset, hull, a 40-step
    training with a validation render, a 48^3 mesh, a Chamfer evaluation with its error cloud, benchmarks."""
    from neus_stage.evaluate import evaluate_generic
    from neus_stage.mesh import mesh_from_checkpoint
    from neus_stage.train.config import resolve_config
    from neus_stage.train.trainer import train

    work = tmp_path_factory.mktemp("report")
    res = work / "results" / "mug"
    shutil.copytree(mug_dataset["dataset"], res / "dataset")
    shutil.copy(mug_dataset["bbox"], res / "bbox.json")
    shutil.copy(mug_dataset["hull"], res / "hull.npz")
    cfg = resolve_config("cpu", dict(steps=40, n_rays=64, validate_every=20, checkpoint_every=40, log_every=5))
    train(cfg, res / "dataset", res / "neus", hull_path=res / "hull.npz", bbox_path=res / "bbox.json")
    mesh_from_checkpoint(
        res / "neus" / "checkpoint.pt",
        res / "dataset",
        res / "bbox.json",
        res / "mesh.ply",
        clean_path=res / "mesh_clean.ply",
        hull_path=res / "hull.npz",
        resolution=48,
        dilation=2,
    )
    evaluate_generic(
        res / "mesh_clean.ply",
        mug_dataset["render"] / "gt.ply",
        res / "eval.json",
        n_samples=20_000,
        error_cloud=res / "eval_errors.ply",
    )
    bench = work / "benchmarks"
    for i, rule in enumerate(["evaluate", "neus_dataset", "train", "mesh", "visual_hull"]):
        (bench / rule).mkdir(parents=True)
        row = f"{1.5 + i}\t0:00:01\t{100 + i}\t0\t0\t0\t0\t0\t0\t1.0\n"
        (bench / rule / "mug.tsv").write_text(BENCHMARK_HEADER + row)
    return {"res": res, "benchmarks": bench, "work": work}


@pytest.fixture(scope="module")
def report(scene) -> tuple[Path, dict[str, str]]:
    out = scene["res"] / "report.html"
    status = build_report(scene["res"], out, benchmarks_dir=scene["benchmarks"], max_faces=5000)
    return out, status


def test_report_shows_every_stage_of_a_real_scene(scene, report):
    out, status = report
    page = out.read_text()
    # poses = reference: everything but SfM is there
    assert status == {key: ("missing" if key == "sfm" else "ok") for key, _, _ in SECTIONS}, status
    assert "sfm/report.json not found" in _section(page, "sfm")
    assert "no sfm/sparse/0" in _section(page, "cameras")  # no sparse points, said so
    for key, title, _ in SECTIONS:
        assert f'href="#{key}"' in page and title in page
    renders = _section(page, "renders")
    assert renders.index("step_000020.png") < renders.index("final.png")
    ev = _section(page, "evaluation")
    assert "Chamfer" in ev and "F-score" in ev
    times = _section(page, "timings")
    assert times.index("neus_dataset") < times.index("train") < times.index("evaluate")  # pipeline order
    assert "eval_errors.ply not found" not in _section(page, "mesh")
    assert 'src="file:' not in page and '<img src="http' not in page  # self-contained
    images = _images(page)
    # contact sheet, cameras, training curves, 2 renders, shaded mesh, error-coloured mesh
    assert len(images) == 7, len(images)
    for im in images:
        a = np.asarray(im.convert("RGB"), dtype=np.float64)
        assert min(im.size) >= 30 and a.std() > 10, (im.size, a.std())
    # mesh previews: the object is drawn (not all background) and the error view is coloured
    shaded, coloured = (np.asarray(im.convert("RGB"), dtype=np.float64) for im in images[-2:])
    assert (shaded.sum(-1) < 700).mean() > 0.02
    sat = coloured.max(-1) - coloured.min(-1)
    assert (sat > 60).mean() > 0.01


def test_error_cloud_reader_matches_the_evaluation(scene):
    pts, err, vmax = read_error_cloud(scene["res"] / "eval_errors.ply")
    assert pts.shape == (20_000, 3) and err.shape == (20_000,)
    assert (err >= 0).all() and vmax is not None and vmax > 0


def test_report_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` installs it as root)")
    out, _ = report
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,4000",
            "--user-data-dir=" + str(tmp_path / "profile"),
            out.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    a = np.asarray(Image.open(shot).convert("RGB"))
    assert a.shape[:2] == (4000, 1280)
    assert a.std() > 20, a.std()
    colours = np.unique((a[::4, ::4] // 16).reshape(-1, 3), axis=0)
    assert len(colours) > 200, len(colours)  # text, plots and photos, not a blank page
    # the page's images are laid out over its height, not just a title on white
    rows = (a.std(axis=(1, 2)) > 5).reshape(40, 100).mean(1)
    assert (rows > 0.2).sum() > 20, rows


def test_report_degrades_when_artifacts_are_missing(scene, tmp_path):
    empty = tmp_path / "results" / "bare"
    empty.mkdir(parents=True)
    status = build_report(empty, benchmarks_dir=tmp_path / "nowhere")
    assert set(status.values()) == {"missing"}
    page = (empty / "report.html").read_text()
    for text in (
        "masks/overlay.jpg",
        "cameras_sphere.npz not found",
        "train_log.csv not found",
        "no neus/renders",
        "mesh_clean.ply nor mesh.ply",
        "eval.json not found",
        "nowhere",
    ):
        assert text in page, text

    # a scene without ground truth, halfway through: dataset, hull and mesh, no training log nor evaluation
    part = tmp_path / "results" / "noeval"
    shutil.copytree(scene["res"] / "dataset", part / "dataset")
    for rel in ("bbox.json", "hull.npz", "mesh_clean.ply"):
        shutil.copy(scene["res"] / rel, part / rel)
    (part / "neus").mkdir()
    (part / "neus" / "train_log.csv").write_text("step,loss\n")  # the trainer has only written its header
    status = build_report(part, max_faces=2000)
    assert status == {
        "photos": "ok",
        "sfm": "missing",
        "frame": "ok",
        "cameras": "ok",
        "training": "missing",
        "renders": "missing",
        "mesh": "ok",
        "quality": "ok",
        "evaluation": "missing",
        "timings": "missing",
    }
    page = (part / "report.html").read_text()
    assert "eval_errors.ply not found: no error colouring" in page
    assert len(_images(page)) == 3  # contact sheet, cameras, shaded mesh

    # a corrupt artifact is an error in its section only
    (part / "eval.json").write_text("{not json")
    status = build_report(part, max_faces=2000)
    assert status["evaluation"] == "error" and status["mesh"] == "ok"
    assert "Evaluation could not be shown" in (part / "report.html").read_text()


def test_rule_times_in_pipeline_order(scene):
    df = rule_times(scene["benchmarks"], "mug")
    assert list(df["rule"]) == ["neus_dataset", "visual_hull", "train", "mesh", "evaluate"]
    assert rule_times(scene["benchmarks"], "other").empty


def test_report_command(scene, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                "--scene-dir",
                str(scene["res"]),
                "--benchmarks",
                str(scene["benchmarks"]),
                "--out",
                str(out),
                "--max-faces",
                "2000",
            ]
        )
        == 0
    )
    assert out.is_file() and "neus-stage report: mug" in out.read_text()
    assert main(["report", "--scene-dir", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "scene folder not found" in capsys.readouterr().err
