"""How each stage's cost grows with the number of photos and their size: a table, fitted exponents, a plot.

    .venv/bin/python scripts/bench_scaling.py --out /tmp/scaling \\
        --counts 25 50 100 200 --megapixels 0.5 2 12 [--dtu ../shared/data/dtu_scan65] [--png docs/scaling.png]

Photo-count series: the rendered ``teapot`` scene (two camera rings over a textured floor) at 640x480 with
25 ... 200 views. Photo-size series: ``--dtu`` (DTU scan 65, 49 photos at 800x600) subsampled to
``--size-count`` photos and resized to each of ``--megapixels`` (upsampled above 0.5 MP: the content is the
same, the pixels to read, decode and downscale grow). Each stage runs as its own process, as the workflow
runs it (``neus-stage sfm``, ``masks``, ``dataset``, ``visual-hull``), with the workflow's defaults
(``images.max_size`` 1600: photos above it are downscaled once by the sfm stage); wall time and peak
memory (maxrss) are recorded per stage. The exponent b of a stage is the slope of log(time) against
log(photos) or log(pixels per photo) (time ~ n^b). Run by hand, on a quiet machine: not part of CI.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

STAGES = ("sfm", "masks", "dataset", "visual-hull")


def run_stage(args: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak resident memory in MB) of one ``neus-stage`` command run as its own process."""
    code = (
        "import resource, sys; from neus_stage.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    t = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-c", code, "--log", str(log.with_suffix(".full.log")), *args], stderr=fh, stdout=fh
        )
    wall = time.perf_counter() - t
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{text[-2000:]}")
    # the command's stderr reaches the full log (--log); the terminal shows only progress
    full = log.with_suffix(".full.log")
    lines = [*text.splitlines(), *(full.read_text().splitlines() if full.is_file() else [])]
    rss = [int(line.split()[-1]) for line in lines if "MAXRSS" in line]
    return wall, (rss[-1] / 1024 if rss else float("nan"))


def pipeline(photos: Path, work: Path) -> dict[str, tuple[float, float]]:
    """Run the stages up to the visual hull on a photo folder; {stage: (seconds, MB)}."""
    work.mkdir(parents=True, exist_ok=True)
    sfm, masks, dataset = work / "sfm", work / "masks", work / "dataset"
    out = {}
    out["sfm"] = run_stage(["sfm", "--photos", str(photos), "--out", str(sfm)], work / "sfm.log")
    out["masks"] = run_stage(
        ["masks", "--images", str(sfm / "undistorted" / "images"), "--sfm", str(sfm), "--out", str(masks)],
        work / "masks.log",
    )
    out["dataset"] = run_stage(
        ["dataset", "--sfm", str(sfm), "--masks", str(masks), "--out", str(dataset)], work / "dataset.log"
    )
    out["visual-hull"] = run_stage(
        [
            "visual-hull",
            "--dataset",
            str(dataset),
            "--bbox",
            str(work / "bbox.json"),
            "--hull",
            str(work / "hull.npz"),
            "--sparse",
            str(sfm / "undistorted" / "sparse"),
        ],
        work / "hull.log",
    )
    return out


def resized(src: Path, dst: Path, megapixels: float, count: int) -> Path:
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    dst.mkdir(parents=True, exist_ok=True)
    if len(list(dst.glob("*.jpg"))) == len(files):  # made by an earlier run
        return dst
    for p in files:
        im = Image.open(p).convert("RGB")
        s = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC).save(
            dst / f"{p.stem}.jpg", quality=92
        )
    return dst


def exponent(x: list[float], y: list[float]) -> float:
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (renders, runs, results.json)")
    ap.add_argument("--counts", type=int, nargs="*", default=[25, 50, 100, 200])
    ap.add_argument("--megapixels", type=float, nargs="*", default=[0.5, 2, 12])
    ap.add_argument("--dtu", type=Path, default=None, help="a DTU scan folder (photos/) for the photo-size series")
    ap.add_argument("--size-count", type=int, default=25, help="photos in the photo-size series")
    ap.add_argument("--png", type=Path, default=None, help="log-log plot of the stage times")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        metavar="RESULTS_JSON",
        help="rows of earlier runs (their results.json) to table with this run's; this run's rows replace "
        "theirs for the same series, photo count, size and stage",
    )
    ap.add_argument(
        "--runs",
        nargs="*",
        default=[],
        metavar="N:MP",
        help="single runs of N teapot photos resized to MP megapixels (e.g. 50:2.07 for phone-size "
        "1920x1080 photos, 200:12)",
    )
    a = ap.parse_args()
    from neus_stage.synth import render_scene

    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in a.counts:
        render = a.out / f"teapot_{n}"
        if not (render / "photos").is_dir():
            render_scene(render, scene="teapot", n_views=n, width=640, height=480, seed=0, gt_resolution=64)
        work = a.out / f"run_teapot_{n}"
        shutil.rmtree(work, ignore_errors=True)
        for stage, (sec, mb) in pipeline(render / "photos", work).items():
            rows.append(
                {"series": "photos", "photos": n, "megapixels": 0.31, "stage": stage, "seconds": sec, "peak_mb": mb}
            )
            print(rows[-1], flush=True)
    if a.dtu is not None:
        for mp in a.megapixels:
            photos = resized(a.dtu / "photos", a.out / f"dtu_{mp:g}mp", mp, a.size_count)
            work = a.out / f"run_dtu_{mp:g}mp"
            shutil.rmtree(work, ignore_errors=True)
            for stage, (sec, mb) in pipeline(photos, work).items():
                rows.append(
                    {
                        "series": "size",
                        "photos": a.size_count,
                        "megapixels": mp,
                        "stage": stage,
                        "seconds": sec,
                        "peak_mb": mb,
                    }
                )
                print(rows[-1], flush=True)
    for spec in a.runs:
        n, mp = int(spec.split(":")[0]), float(spec.split(":")[1])
        render = a.out / f"teapot_{n}"
        if not (render / "photos").is_dir():
            render_scene(render, scene="teapot", n_views=n, width=640, height=480, seed=0, gt_resolution=64)
        photos = resized(render / "photos", a.out / f"teapot_{n}_{mp:g}mp", mp, n)
        work = a.out / f"run_teapot_{n}_{mp:g}mp"
        shutil.rmtree(work, ignore_errors=True)
        for stage, (sec, mb) in pipeline(photos, work).items():
            rows.append({"series": "run", "photos": n, "megapixels": mp, "stage": stage, "seconds": sec, "peak_mb": mb})
            print(rows[-1], flush=True)
    key_cols = ["series", "photos", "megapixels", "stage"]
    earlier = [pd.read_json(path, orient="records") for path in a.merge]
    df = pd.concat([*earlier, pd.DataFrame(rows, columns=[*key_cols, "seconds", "peak_mb"])], ignore_index=True)
    df = df.drop_duplicates(subset=key_cols, keep="last")
    (a.out / "results.json").write_text(df.to_json(orient="records", indent=1))
    print()
    for series, key in (("photos", "photos"), ("size", "megapixels"), ("run", ["photos", "megapixels"])):
        sub = df[df.series == series]
        if sub.empty:
            continue
        table = sub.pivot_table(index=key, columns="stage", values="seconds").reindex(columns=list(STAGES))
        table = table.astype(float)
        table["total"] = table.sum(axis=1)
        mem = sub.groupby(key)["peak_mb"].max().astype(float).rename("peak MB")
        print(pd.concat([table.round(1), mem.round(0)], axis=1).to_markdown())
        if series == "run":
            continue
        exps = {s: exponent(table.index, table[s]) for s in [*STAGES, "total"]}
        print(f"exponent of time against {key}: " + ", ".join(f"{s} {v:.2f}" for s, v in exps.items()))
        print()
    if a.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        series_list = (
            ("photos", "photos", "photos (640x480)"),
            ("size", "megapixels", f"megapixels per photo ({a.size_count} photos)"),
        )
        for ax, (series, key, label) in zip(axes, series_list):
            sub = df[df.series == series]
            for stage in STAGES:
                s = sub[sub.stage == stage]
                if len(s):
                    ax.loglog(s[key], s["seconds"], "o-", label=stage)
            ax.set_xlabel(label)
            ax.set_ylabel("seconds (2 CPU cores)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
