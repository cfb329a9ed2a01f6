"""Training throughput of the presets at an equal batch (rays x samples per ray), printed as a table.

    .venv/bin/python scripts/bench_train.py DATASET_DIR HULL_NPZ [--steps 10] [--warmup 10] [--rays 256]

Each preset trains from scratch twice on the same NeuS dataset, ``--warmup`` steps and ``--warmup`` +
``--steps`` steps, and its rate is the difference: the start-up a run pays once (the first occupancy-grid
evaluation of every cell, the dataset moved to the device, the first steps' allocations) is left out, as
it is from a long training run's pace (a 10-step run of the cpu preset spends half its time there). Every
run has the same rays per step and the same samples per ray (faithful NeuS: 64 uniform + 64 up-sampled; hash
grid: 128 uniform, of which the occupancy grid skips the empty ones). Hash grids run with every level
active from the first step (training activates them progressively, and the torch backend looks up only
the active ones, so early steps are cheaper than this). Reported: ray samples per second (rays x samples
per ray / time) and network-evaluated samples per second. ``--cases`` picks rows by their first word(s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from neus_stage.train.config import resolve_config
from neus_stage.train.trainer import train

CASES = {
    "faithful NeuS (mlp, analytic normals)": ("neus", {"n_samples": 64, "n_importance": 64}),
    "fast (hash grid, torch backend)": ("fast", {"n_samples": 128, "sample_budget": 0, "encoding_backend": "torch"}),
    "fast, analytic normals": (
        "fast",
        {"n_samples": 128, "sample_budget": 0, "encoding_backend": "torch", "normals": "analytic"},
    ),
    "cpu preset (small hash grid)": ("cpu", {"n_samples": 128}),
    "cpu preset, bf16 autocast": ("cpu", {"n_samples": 128, "precision": "bf16"}),
}


def _train_seconds(preset: str, overrides: dict, dataset: Path, hull: Path) -> tuple[float, float]:
    """(training seconds, network-evaluated samples) of one run from scratch."""
    cfg = resolve_config(preset, overrides)
    cfg.start_levels = cfg.n_levels  # every hash-grid level looked up from the first step: the full cost
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(cfg, dataset, Path(tmp), hull_path=hull)
    return metrics["seconds"], metrics["samples_per_s"] * metrics["seconds"]


def run(
    dataset: Path, hull: Path, steps: int, rays: int, device: str, cases: list[str] | None = None, warmup: int = 10
) -> pd.DataFrame:
    rows = []
    for name, (preset, extra) in CASES.items():
        if cases and not any(name.startswith(c) for c in cases):
            continue
        overrides = {
            "steps": steps,
            "n_rays": rays,
            "validate_every": 0,
            "checkpoint_every": 10**9,
            "val_downscale": 8,
            "device": device,
            "log_every": 10**9,
            **extra,
        }
        t0 = time.time()
        short, short_samples = _train_seconds(preset, {**overrides, "steps": warmup}, dataset, hull)
        full, full_samples = _train_seconds(preset, {**overrides, "steps": warmup + steps}, dataset, hull)
        wall = time.time() - t0
        seconds = max(full - short, 1e-9)
        cfg = resolve_config(preset, overrides)
        per_ray = cfg.n_samples + cfg.n_importance
        rows.append(
            {
                "mode": name,
                "steps": steps,
                "rays/step": rays,
                "samples/ray": per_ray,
                "steps/s": round(steps / seconds, 3),
                "ray samples/s": round(steps * rays * per_ray / seconds),
                "evaluated samples/s": round((full_samples - short_samples) / seconds),
                "start-up s": round(short - warmup * seconds / steps, 1),
                "wall s": round(wall, 1),
            }
        )
    df = pd.DataFrame(rows)
    base = df.loc[0, "ray samples/s"]
    df["speed-up"] = (df["ray samples/s"] / base).round(1)
    return df


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("hull", type=Path)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10, help="steps of the run whose time is subtracted")
    ap.add_argument("--rays", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cases", nargs="*", default=None, help="only the rows whose mode starts with one of these")
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    table = run(a.dataset, a.hull, a.steps, a.rays, a.device, a.cases, a.warmup)
    print(table.to_markdown(index=False) if hasattr(table, "to_markdown") else table.to_string(index=False))
    if a.json:
        a.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2))
