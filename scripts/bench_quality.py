"""Mesh quality against training time: Chamfer (% of the ground truth's box diagonal) after a time budget.

    .venv/bin/python scripts/bench_quality.py results/demo --gt resources/demo/gt.ply \\
        --reference-cameras resources/demo/cameras_sphere.npz --minutes 2 5 10 --presets cpu neus

For each preset and budget, trains from scratch on the scene's dataset and hull with ``max_minutes`` set
(the trainer fits its learning-rate, level and annealing schedules to the budget), extracts the mesh at
``--resolution`` and evaluates it as the workflow's evaluate rule does (SfM frame mapped into the ground
truth's by the camera-centre similarity, refined by ICP). Prints a table (Chamfer and the F-score at 1% of
the ground truth's diagonal); ``--json`` keeps the rows. Only the training is timed against the budget;
mesh extraction and evaluation come on top. ``--steps N`` trains a fixed number of steps instead (the
preset's schedule unchanged; the rows then compare methods, not machines: the machine's load does not
enter), e.g. the demo's own run: ``--steps 2000``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from neus_stage.evaluate import evaluate_generic
from neus_stage.frames import reference_alignment, refine_with_icp
from neus_stage.mesh import mesh_from_checkpoint
from neus_stage.train.config import parse_overrides, resolve_config
from neus_stage.train.trainer import train


def run_one(scene_dir: Path, preset: str, minutes: float, args: argparse.Namespace, work: Path) -> dict:
    budget = {"steps": args.steps} if args.steps else {"max_minutes": minutes, "steps": 10**6}
    cfg = resolve_config(preset, {"validate_every": 0, **budget, **args.overrides})
    run = work / (f"{preset}_{args.steps}steps" if args.steps else f"{preset}_{minutes:g}")
    metrics = train(cfg, scene_dir / "dataset", run / "neus", hull_path=scene_dir / "hull.npz")
    mesh = run / "mesh_clean.ply"
    mesh_from_checkpoint(
        run / "neus" / "checkpoint.pt",
        scene_dir / "dataset",
        scene_dir / "bbox.json",
        run / "mesh.ply",
        clean_path=mesh,
        hull_path=scene_dir / "hull.npz",
        resolution=args.resolution,
        dilation=args.dilation,
    )
    alignment = None
    if args.reference_cameras is not None:
        alignment = reference_alignment(scene_dir / "dataset", args.reference_cameras)
        if args.icp:
            alignment = refine_with_icp(mesh, args.gt, alignment)
    ev = evaluate_generic(mesh, args.gt, run / "eval.json", alignment=alignment)
    f1 = next(f["fscore"] for f in ev["fscores"] if abs(f["threshold_pct_diag"] - 1.0) < 1e-6)
    return {
        "preset": preset + "".join(f" {k}={v}" for k, v in args.overrides.items()),
        "minutes": None if args.steps else minutes,
        "steps": metrics["steps"],
        "train s": round(metrics["seconds"]),
        "val PSNR": round(metrics["val_psnr"], 2),
        "Chamfer %": round(ev["chamfer_pct_diag"]["overall"], 3),
        "accuracy %": round(ev["chamfer_pct_diag"]["accuracy"], 3),
        "completeness %": round(ev["chamfer_pct_diag"]["completeness"], 3),
        "F@1%": round(f1, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene_dir", type=Path, help="results/<scene> with dataset/, hull.npz and bbox.json")
    ap.add_argument("--gt", type=Path, required=True)
    ap.add_argument("--reference-cameras", type=Path, default=None, help="with SfM poses: the true cameras")
    ap.add_argument("--no-icp", dest="icp", action="store_false")
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10])
    ap.add_argument("--steps", type=int, default=0, help="train this many steps instead of --minutes")
    ap.add_argument("--presets", nargs="+", default=["cpu", "neus"])
    ap.add_argument("--resolution", type=int, default=256, help="mesh grid (the demo config's)")
    ap.add_argument("--dilation", type=int, default=4, help="mask dilation for culling (the demo config's)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs (checkpoints, meshes) in this folder")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training options for every run")
    args = ap.parse_args()
    args.overrides = parse_overrides(args.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        for preset in args.presets:
            for minutes in args.minutes[:1] if args.steps else args.minutes:
                rows.append(run_one(args.scene_dir, preset, minutes, args, work))
                print(pd.DataFrame(rows).to_string(index=False), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=2))
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
