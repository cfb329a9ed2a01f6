"""The report's sections on training and run times: the training curves, the validation renders and each
rule's time. Each returns its HTML or raises :class:`~neus_stage.report.html.Missing` saying what is absent."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts.reports import read_report_if_any
from ..benchmark import RULE_ORDER
from .context import ReportContext
from .figures import training_figure
from .html import Missing, df_table, esc, img_tag, kv_table, missing_note


def rule_times(benchmarks_dir: Path, scene: str) -> pd.DataFrame:
    """One row per rule with a ``benchmarks/<rule>/<scene>.tsv`` (Snakemake's benchmark: the last run)."""
    rows = []
    for tsv in Path(benchmarks_dir).glob(f"*/{scene}.tsv"):
        t = pd.read_csv(tsv, sep="\t")
        if t.empty or "s" not in t:
            continue
        last = t.iloc[-1]
        row = {"rule": tsv.parent.name, "seconds": float(last["s"])}
        if "max_rss" in t and pd.notna(pd.to_numeric(last["max_rss"], errors="coerce")):
            row["peak memory (MB)"] = float(pd.to_numeric(last["max_rss"], errors="coerce"))
        if "cpu_time" in t and pd.notna(pd.to_numeric(last["cpu_time"], errors="coerce")):
            row["CPU time (s)"] = float(pd.to_numeric(last["cpu_time"], errors="coerce"))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["rule", "seconds"])
    order = {r: i for i, r in enumerate(RULE_ORDER)}
    df = pd.DataFrame(rows)
    df["_o"] = df["rule"].map(lambda r: order.get(r, len(order)))
    return df.sort_values(["_o", "rule"]).drop(columns="_o").reset_index(drop=True)


def training_section(ctx: ReportContext) -> str:
    """The training curves (neus/train_log.csv) and the numbers of neus/metrics.json."""
    f = ctx.files
    csv = f.path("neus/train_log.csv")
    if not csv.is_file():
        raise Missing("neus/train_log.csv not found: the train stage has not run")
    df = pd.read_csv(csv)
    if df.empty:
        raise Missing("neus/train_log.csv has no rows yet")
    metrics = read_report_if_any(f.path("neus/metrics.json"))
    held = "heldout_psnr" in metrics
    n_held = len(metrics.get("heldout_views") or [])
    if held:
        dot, dot_label = metrics["heldout_psnr"], f"mean of {n_held} held-out views"
    else:
        dot, dot_label = metrics.get("val_psnr"), f"training view {metrics.get('val_view', '?')} (not held out)"
    parts = [img_tag(training_figure(df, dot, dot_label), "image/png", "training curves", "wide")]
    cfg = {}
    if f.path("neus/config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load(f.path("neus/config.yaml").read_text()) or {}
    parts.append(
        kv_table(
            [
                ("preset", cfg.get("preset")),
                ("steps", metrics.get("steps", int(df["step"].iloc[-1]) + 1)),
                ("time (s)", metrics.get("seconds", float(df["seconds"].iloc[-1]) if "seconds" in df else None)),
                ("device", metrics.get("device")),
                *(
                    [
                        (
                            "held-out views (never trained on)",
                            f"{n_held}: {', '.join(metrics.get('heldout_views') or [])}",
                        ),
                        ("held-out PSNR (dB, mean)", metrics.get("heldout_psnr")),
                        ("held-out mask IoU (mean)", metrics.get("heldout_mask_iou")),
                        *([("held-out SSIM (mean)", metrics["heldout_ssim"])] if "heldout_ssim" in metrics else []),
                    ]
                    if held
                    else [
                        (
                            "PSNR of a training view (dB; no view held out, so not a validation)",
                            metrics.get("val_psnr"),
                        ),
                        ("mask IoU of that training view", metrics.get("val_mask_iou")),
                        ("that training view", metrics.get("val_view")),
                    ]
                ),
                (
                    "training-batch PSNR (dB, last row of train_log.csv)",
                    float(df["psnr"].iloc[-1]) if "psnr" in df else None,
                ),
                ("final inv_s", metrics.get("inv_s", float(df["inv_s"].iloc[-1]) if "inv_s" in df else None)),
                ("ray samples per second", metrics.get("samples_per_s")),
                ("config hash", cfg.get("hash")),
            ]
        )
    )
    if not metrics:
        parts.append(missing_note("neus/metrics.json not found: training has not finished"))
    return "\n".join(parts)


def renders_section(ctx: ReportContext, n_latest: int = 3) -> str:
    """The ``n_latest`` validation renders of neus/renders/ and the final one."""
    folder = ctx.files.path("neus/renders")
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise Missing("no neus/renders/*.png: the train stage has not run (or wrote no validation render)")
    steps = [p for p in files if p.stem != "final"][-n_latest:]
    chosen = steps + [p for p in files if p.stem == "final"]
    metrics = read_report_if_any(ctx.files.path("neus/metrics.json"))
    which = (
        f"held-out view {metrics.get('val_view', '?')} (never trained on)"
        if "heldout_psnr" in metrics
        else f"training view {metrics.get('val_view', '?')} (no view held out)"
        if metrics
        else "first view"
    )
    parts = [
        f"<p class='caption'>Each panel: ground truth | rendered colour | normals | opacity of {esc(which)}, "
        "the latest renders last.</p>"
    ]
    for p in chosen:
        parts.append(
            f"<figure>{img_tag(p.read_bytes(), 'image/png', p.name, 'render')}"
            f"<figcaption>{esc(p.name)}</figcaption></figure>"
        )
    return "\n".join(parts)


def timings_section(ctx: ReportContext) -> str:
    """Each rule's run time and peak memory (Snakemake's benchmark files), and their total."""
    f = ctx.files
    if f.benchmarks is None or not Path(f.benchmarks).is_dir():
        raise Missing(f"benchmarks folder {f.benchmarks} not found: no rule times (stages run by hand?)")
    df = rule_times(f.benchmarks, f.scene)
    df = df[df["rule"] != "report"]  # a previous report's time, if any: this one's is written after it ends
    if df.empty:
        raise Missing(f"no {f.benchmarks}/<rule>/{f.scene}.tsv files: no rule times")
    total = pd.DataFrame([{"rule": "total", "seconds": df["seconds"].sum()}])
    return df_table(pd.concat([df, total], ignore_index=True)) + (
        "<p class='caption'>From Snakemake's benchmark files (wall-clock seconds, peak resident memory); the "
        "report's own time is not included.</p>"
    )
