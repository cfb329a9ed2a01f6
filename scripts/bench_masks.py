"""Masks on scenes built to break them: rembg alone against what the masks stage chooses, as IoU with the truth.

    .venv/bin/python scripts/bench_masks.py --out /tmp/bench_masks [--scenes teapot house parts cut floor]
        [--dtu ../shared/data/dtu_scan24 ../shared/data/dtu_scan65]

Rendered scenes (neus_stage.synth, true masks) are posed by COLMAP and masked in auto mode; DTU scans use their
reference masks (undistorted like the photos). Prints one row per scene: views registered, rembg alone (mean /
worst view), the mode chosen, the final masks (mean / worst), and the stage's time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SIZES = {
    "teapot": (40, 640, 480),
    "house": (36, 400, 300),
    "parts": (36, 400, 300),
    "cut": (36, 400, 300),
    "floor": (36, 400, 300),
    "pot": (40, 400, 300),
}


def run(photos: Path, truth: dict[str, Path], work: Path, name: str) -> dict:
    from neus_stage import masks as M
    from neus_stage.artifacts.dataset import read_mask
    from neus_stage.geometry.mask_hull import iou
    from neus_stage.masks_user import undistorter
    from neus_stage.sfm import run_sfm

    sfm = run_sfm(photos, work / "sfm")
    t = time.perf_counter()
    report = M.compute_masks(
        work / "sfm" / "undistorted" / "images",
        work / "masks",
        sfm_dir=work / "sfm",
        candidates_dir=work / "candidates",
    )
    seconds = time.perf_counter() - t
    undistort = undistorter(work / "sfm")[1]
    true = {
        s: undistort(np.asarray(Image.open(p).convert("L")) >= 128) for s, p in truth.items() if s in sfm["registered"]
    }
    final = (
        {s: np.asarray(Image.open(work / "masks" / f"{s}.png")) >= 128 for s in true}
        if report["mode"] != "none"
        else {}
    )
    raw = {s: read_mask(work / "candidates" / "rembg" / f"{s}.png") for s in true}
    r = [iou(raw[s], true[s]) for s in true]
    f = [iou(final[s], true[s]) for s in final]
    return {
        "scene": name,
        "registered": f"{sfm['n_registered']}/{sfm['n_photos']}",
        "rembg alone": f"{np.mean(r):.3f} / {np.min(r):.3f}",
        "chosen": report.get("chosen") or report["mode"],
        "final": f"{np.mean(f):.3f} / {np.min(f):.3f}" if f else "none",
        "seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scenes", nargs="*", default=["teapot", "house", "parts", "cut", "floor"])
    ap.add_argument("--dtu", type=Path, nargs="*", default=[])
    a = ap.parse_args()
    from neus_stage.synth import render_scene

    rows = []
    for scene in a.scenes:
        n, w, h = SIZES.get(scene, (36, 400, 300))
        render = a.out / f"render_{scene}"
        if not (render / "photos").is_dir():
            render_scene(render, scene=scene, n_views=n, width=w, height=h, seed=0, gt_resolution=64)
        truth = {p.stem: p for p in sorted((render / "masks").glob("*.png"))}
        rows.append(run(render / "photos", truth, a.out / f"run_{scene}", f"{scene} ({n} views, {w}x{h})"))
        print(rows[-1], flush=True)
    for scan in a.dtu:
        truth = {p.stem: p for p in sorted((scan / "reference" / "mask").glob("*.png"))}
        rows.append(run(scan / "photos", truth, a.out / f"run_{scan.name}", scan.name))
        print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
