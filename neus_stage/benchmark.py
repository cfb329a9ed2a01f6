"""The DTU benchmark: the scene table of the standard scans, and the table, report and plot of their scores.

Data layout (as users download it)::

    <dtu_root>/dtu_scan<N>/image/*.png, mask/*.png, cameras_sphere.npz   NeuS's DTU release
    <dtu_root>/ObsMask/ObsMask<N>_10.mat, Plane<N>.mat                     official DTU evaluation data
    <dtu_root>/Points/stl/stl<NNN>_total.ply

:func:`dtu_scene_table` turns ``benchmark.scans`` + ``dtu_root`` into rows of the workflow's scene table;
:func:`aggregate` reads every scan's ``eval.json`` and ``benchmarks/<rule>/<scene>.tsv`` and writes
``benchmark.csv``, ``benchmark.md`` (with published per-scan numbers beside ours) and ``benchmark.png``.
``python -m neus_stage.benchmark`` is the command the workflow's ``benchmark`` rule runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from .errors import StageError
from .scenes import COLUMNS

log = logging.getLogger(__name__)

STANDARD_SCANS = (24, 37, 40, 55, 63, 65, 69, 83, 97, 105, 106, 110, 114, 118, 122)
# Published DTU Chamfer distance (overall, mm) per standard scan (shared/notes/ANCHORS.md).
PUBLISHED = {
    "NeuS (w/o mask)": (1.00, 1.37, 0.93, 0.43, 1.10, 0.65, 0.57, 1.48, 1.09, 0.83, 0.52, 1.20, 0.35, 0.49, 0.54),
    "Neuralangelo": (0.37, 0.72, 0.35, 0.35, 0.87, 0.54, 0.53, 1.29, 0.97, 0.73, 0.47, 0.74, 0.32, 0.41, 0.43),
    "2DGS": (0.48, 0.91, 0.39, 0.39, 1.01, 0.83, 0.81, 1.36, 1.27, 0.76, 0.70, 1.40, 0.40, 0.76, 0.52),
}
PUBLISHED_BY_SCAN = {name: dict(zip(STANDARD_SCANS, values)) for name, values in PUBLISHED.items()}
#: the workflow's rules in pipeline order (run-time tables follow it; rules not listed come after)
RULE_ORDER = (
    "frames",
    "sfm",
    "dtu_masks",
    "masks",
    "neus_dataset",
    "visual_hull",
    "train",
    "mesh",
    "evaluate",
    "export",
    "report",
)
#: the rules whose run times the DTU benchmark table shows (every scan runs them)
STAGES = tuple(r for r in RULE_ORDER if r not in ("frames", "dtu_masks", "export", "report"))


# ------------------------------------------------------------------------------------------ scene table
def dtu_scene_name(scan: int) -> str:
    return f"dtu_scan{int(scan)}"


def dtu_scan_paths(dtu_root: Path, scan: int) -> dict[str, Path]:
    d = Path(dtu_root) / dtu_scene_name(scan)
    return {"dir": d, "photos": d / "image", "masks": d / "mask", "cameras": d / "cameras_sphere.npz"}


def missing_dtu_data(dtu_root: Path, scans: list[int]) -> list[str]:
    """The files and folders of the layout that are absent (empty list: everything is there)."""
    root = Path(dtu_root)
    missing = []
    for scan in scans:
        p = dtu_scan_paths(root, scan)
        missing += [str(p[k]) for k in ("photos", "masks") if not p[k].is_dir()]
        missing += [str(p["cameras"])] if not p["cameras"].is_file() else []
        for f in (
            root / "ObsMask" / f"ObsMask{scan}_10.mat",
            root / "ObsMask" / f"Plane{scan}.mat",
            root / "Points" / "stl" / f"stl{int(scan):03}_total.ply",
        ):
            if not f.is_file():
                missing.append(str(f))
    return missing


def dtu_scene_table(
    dtu_root: str | Path, scans: list[int], poses: str = "reference", strict: bool = True
) -> pd.DataFrame:
    """Scene-table rows (same columns and index as :func:`neus_stage.scenes.read_scene_table`) for DTU scans.

    ``poses='reference'`` trains on the released cameras; ``'sfm'`` runs COLMAP on the photos and keeps the
    released cameras only to align the mesh for evaluation. The masks column points at
    ``results/<scene>/dtu_masks`` (the release's masks renamed after the photos by the ``dtu_masks`` rule:
    the release names photos ``000000.png`` and masks ``000.png``). With ``strict``, a missing file of the
    layout is an error; otherwise (dry runs) the rows are made anyway so the jobs can be listed.
    """
    if not str(dtu_root):
        raise StageError("benchmark.scans is set but dtu_root is empty; set dtu_root to the DTU data folder")
    if poses not in ("reference", "sfm"):
        raise StageError(f"benchmark.poses is '{poses}'; write 'reference' or 'sfm'")
    scans = [int(s) for s in scans]
    if len(set(scans)) != len(scans):
        raise StageError(f"benchmark.scans lists a scan twice: {scans}")
    missing = missing_dtu_data(Path(dtu_root), scans)
    if missing and strict:
        shown = "\n  ".join(missing[:8]) + ("\n  ..." if len(missing) > 8 else "")
        raise StageError(
            f"DTU data missing under {dtu_root} ({len(missing)} path(s)):\n  {shown}\nexpected per scan N: "
            "dtu_scan<N>/{image/,mask/,cameras_sphere.npz} (NeuS release) and ObsMask/ObsMask<N>_10.mat, "
            "ObsMask/Plane<N>.mat, Points/stl/stl<NNN>_total.ply (official DTU evaluation data)"
        )
    rows = []
    for scan in scans:
        p = dtu_scan_paths(Path(dtu_root), scan)
        name = dtu_scene_name(scan)
        rows.append(
            {
                "scene": name,
                "photos": str(p["photos"]),
                "masks": f"results/{name}/dtu_masks",
                "cameras": str(p["cameras"]),
                "poses": poses,
                "gt": "",
                "dtu_scan": str(scan),
            }
        )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.set_index("scene", drop=False)


def link_masks_to_photos(photos: Path, masks: Path, out: Path) -> int:
    """Make ``out/<photo stem><mask suffix>`` links to the masks, paired with the photos in sorted order."""
    from .photos import list_photos

    photo_list = list_photos(Path(photos))
    mask_list = sorted(p for p in Path(masks).iterdir() if p.is_file() and not p.name.startswith("."))
    if len(mask_list) != len(photo_list):
        raise StageError(
            f"{masks}: {len(mask_list)} masks for {len(photo_list)} photos in {photos}; "
            "the DTU release has one mask per image"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for photo, mask in zip(photo_list, mask_list):
        link = out / f"{photo.stem}{mask.suffix.lower()}"
        link.unlink(missing_ok=True)
        link.symlink_to(mask.resolve())
    return len(photo_list)


# ----------------------------------------------------------------------------------------- aggregation
def _stage_benchmark(benchmarks: Path, stage: str, scene: str) -> dict | None:
    f = Path(benchmarks) / stage / f"{scene}.tsv"
    if not f.is_file():
        return None
    t = pd.read_csv(f, sep="\t")
    if t.empty:
        return None
    return {"s": float(t["s"].iloc[-1]), "max_rss": float(t["max_rss"].iloc[-1])}


def collect(evals: list[Path], benchmarks: Path | None = None) -> pd.DataFrame:
    """One row per eval.json (``results/<scene>/eval.json``): DTU scores, stage times and peak memory."""
    rows = []
    for ev in evals:
        ev = Path(ev)
        if not ev.is_file():
            raise StageError(f"{ev}: eval.json not found")
        r = json.loads(ev.read_text())
        if "scan" not in r or "overall" not in r:
            raise StageError(f"{ev}: not a DTU evaluation (no 'scan'/'overall'); was the scene given a dtu_scan?")
        scene = ev.parent.name
        row = {
            "scene": scene,
            "scan": int(r["scan"]),
            "accuracy_mm": r["accuracy"],
            "completeness_mm": r["completeness"],
            "overall_mm": r["overall"],
        }
        stages = {s: _stage_benchmark(benchmarks, s, scene) for s in STAGES} if benchmarks else {}
        train = stages.get("train")
        row["train_min"] = train["s"] / 60 if train else float("nan")
        row["train_peak_rss_mb"] = train["max_rss"] if train else float("nan")
        done = [v for v in stages.values() if v]
        row["pipeline_min"] = sum(v["s"] for v in done) / 60 if done else float("nan")
        row["peak_rss_mb"] = max(v["max_rss"] for v in done) if done else float("nan")
        metrics = ev.parent / "neus" / "metrics.json"
        gpu = json.loads(metrics.read_text()).get("peak_gpu_mem_mb") if metrics.is_file() else None
        row["train_peak_gpu_mb"] = float(gpu) if gpu is not None else float("nan")
        for name, per_scan in PUBLISHED_BY_SCAN.items():
            row[f"{name} overall_mm"] = per_scan.get(int(r["scan"]), float("nan"))
        rows.append(row)
    if not rows:
        raise StageError("no eval.json to aggregate")
    return pd.DataFrame(rows).sort_values("scan").reset_index(drop=True)


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if pd.isna(x) else f"{x:.{digits}f}"


def to_markdown(df: pd.DataFrame) -> str:
    """The report: one row per scan, then the means (ours over all rows; each published method over the
    same scans, so the means compare like with like)."""
    names = list(PUBLISHED)
    head = (
        ["scan", "accuracy", "completeness", "overall"]
        + [f"{n}" for n in names]
        + ["train (min)", "train peak RSS (MB)", "train peak GPU (MB)", "pipeline (min)"]
    )
    lines = [
        "# DTU benchmark",
        "",
        f"{len(df)} scan(s). Chamfer distances in mm (DTU protocol: accuracy = mesh to GT, completeness = GT "
        "to mesh, overall = their mean; lower is better). Published columns: overall Chamfer per scan as "
        "reported by each paper.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(head)) + "|",
    ]
    for _, r in df.iterrows():
        cells = [str(int(r["scan"])), _fmt(r["accuracy_mm"]), _fmt(r["completeness_mm"]), _fmt(r["overall_mm"])]
        cells += [_fmt(r[f"{n} overall_mm"]) for n in names]
        cells += [
            _fmt(r["train_min"], 1),
            _fmt(r["train_peak_rss_mb"], 0),
            _fmt(r["train_peak_gpu_mb"], 0),
            _fmt(r["pipeline_min"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    mean = df.mean(numeric_only=True)
    cells = ["**mean**", _fmt(mean["accuracy_mm"]), _fmt(mean["completeness_mm"]), f"**{_fmt(mean['overall_mm'])}**"]
    cells += [_fmt(mean[f"{n} overall_mm"]) for n in names]
    cells += [
        _fmt(mean["train_min"], 1),
        _fmt(df["train_peak_rss_mb"].max(), 0),
        _fmt(df["train_peak_gpu_mb"].max(), 0),
        _fmt(mean["pipeline_min"], 1),
    ]
    lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Means of times; maxima of memory. Published means over all 15 scans: NeuS (w/o mask) 0.84, "
        "Neuralangelo 0.61, 2DGS 0.80.",
        "",
    ]
    return "\n".join(lines)


def plot(df: pd.DataFrame, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = ["ours", *PUBLISHED]
    cols = ["overall_mm", *[f"{n} overall_mm" for n in PUBLISHED]]
    x = np.arange(len(df))
    w = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(df) + 3), 4))
    for i, (name, col) in enumerate(zip(names, cols)):
        ax.bar(x + (i - (len(names) - 1) / 2) * w, df[col].to_numpy(dtype=float), w, label=name)
    ax.set_xticks(x, [str(int(s)) for s in df["scan"]])
    ax.set_xlabel("DTU scan")
    ax.set_ylabel("overall Chamfer (mm, lower is better)")
    ax.set_title(f"DTU: mean overall {df['overall_mm'].mean():.2f} mm over {len(df)} scan(s)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def aggregate(evals: list[Path], out_dir: Path, benchmarks: Path | None = Path("benchmarks")) -> pd.DataFrame:
    """Write ``benchmark.csv``, ``benchmark.md`` and ``benchmark.png`` into ``out_dir``; return the table."""
    df = collect(evals, benchmarks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "benchmark.csv", index=False, float_format="%.4f")
    (out_dir / "benchmark.md").write_text(to_markdown(df))
    plot(df, out_dir / "benchmark.png")
    log.info("DTU benchmark over %d scan(s): mean overall %.3f mm -> %s", len(df), df["overall_mm"].mean(), out_dir)
    return df


def main(argv: list[str] | None = None) -> int:
    from .logs import setup_logging

    p = argparse.ArgumentParser(prog="python -m neus_stage.benchmark", description="the DTU benchmark's two steps")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("aggregate", help="eval.json files -> benchmark.csv, benchmark.md, benchmark.png")
    a.add_argument("evals", nargs="+", type=Path, help="results/<scene>/eval.json files")
    a.add_argument("--out", type=Path, required=True, help="folder for benchmark.csv, .md and .png")
    a.add_argument(
        "--benchmarks",
        type=Path,
        default=Path("benchmarks"),
        help="Snakemake benchmark tree (<rule>/<scene>.tsv): times and peak memory",
    )
    m = sub.add_parser("link-masks", help="links to a DTU release's masks, named after its photos")
    m.add_argument("--photos", type=Path, required=True, help="dtu_scan<N>/image")
    m.add_argument("--masks", type=Path, required=True, help="dtu_scan<N>/mask")
    m.add_argument("--out", type=Path, required=True, help="folder of links <photo stem>.png")
    args = p.parse_args(argv)
    setup_logging(False)
    try:
        if args.command == "aggregate":
            aggregate(args.evals, args.out, args.benchmarks)
        else:
            n = link_masks_to_photos(args.photos, args.masks, args.out)
            log.info("linked %d masks -> %s", n, args.out)
    except StageError as exc:
        print(f"benchmark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
