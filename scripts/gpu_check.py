"""One prepared GPU check: train the fast preset in each precision and encoding, mesh at 512^3, one table.

    scripts/gpu_check.sh DATASET_DIR OUT_DIR [--steps 1500] [--minutes-per-run 1.4] [--device auto]

Runs in a GPU node's stock PyTorch environment (torch, numpy, pillow, pyyaml, tqdm, plus scikit-image and
scipy for marching cubes; no pycolmap, open3d, rembg, trimesh, pymeshlab, snakemake or tensorboard) from a
checkout of the repository (``scripts/gpu_check.sh`` puts it on PYTHONPATH; nothing is installed).
DATASET_DIR is a NeuS dataset (image/, mask/, cameras_sphere.npz) with hull.npz and bbox.json in it or
beside it (a ``results/<scene>`` folder's ``dataset/``), built beforehand on a CPU machine;
``--pack SCENE_DIR DEST`` makes such a folder from ``results/<scene>`` with JPEG images, to travel small.

For each run (torch encoding fp32 and mixed precision; tinycudann fp32 and fp16 where it imports) it trains
``--steps`` steps (at most ``--minutes-per-run``: the schedules are fitted to that budget) with every
``--holdout-every``-th view held out, then reports steps/s, ray samples/s, network-evaluated samples/s,
held-out PSNR and mask IoU, and peak GPU memory; the run the fast preset would pick (``precision=auto``)
is meshed at ``--mesh-resolution``. Writes OUT_DIR/gpu_check.md (the table), gpu_check.json, each run's
validation render (render_<run>.png), the mesh (mesh.ply, normalised frame) and runs/.

On a machine without a GPU, ``--device cpu --preset cpu --steps 20 --mesh-resolution 64`` runs the same
path end to end in a minute (the tests do).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neus_stage.train.checkpoint import load_sdf_function
from neus_stage.train.config import resolve_config
from neus_stage.train.device import pick_device
from neus_stage.train.encodings import tinycudann_available
from neus_stage.train.trainer import train

log = logging.getLogger("gpu_check")


def find_inputs(dataset: Path) -> tuple[Path, Path]:
    """hull.npz and bbox.json in the dataset folder or beside it."""
    for folder in (dataset, dataset.parent):
        hull, bbox = folder / "hull.npz", folder / "bbox.json"
        if hull.is_file() and bbox.is_file():
            return hull, bbox
    sys.exit(
        f"gpu_check: {dataset}: no hull.npz and bbox.json in it or beside it (run the visual_hull stage, "
        "or make the folder with --pack)"
    )


def pack(scene_dir: Path, dest: Path, quality: int = 95) -> None:
    """results/<scene> -> DEST with image/*.jpg (JPEG ``quality``), mask/, cameras_sphere.npz, hull.npz, bbox.json."""
    from PIL import Image

    src = scene_dir / "dataset"
    (dest / "image").mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "image").iterdir()):
        Image.open(p).convert("RGB").save(dest / "image" / f"{p.stem}.jpg", quality=quality)
    shutil.copytree(src / "mask", dest / "mask", dirs_exist_ok=True)
    for name in ("cameras_sphere.npz", "meta.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    for name in ("hull.npz", "bbox.json"):
        shutil.copy2(scene_dir / name, dest / name)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB")


def runs_for(device: torch.device) -> list[tuple[str, str, str]]:
    """(name, encoding_backend, precision) of each run on this device."""
    mixed = "fp16" if device.type == "cuda" else "bf16"
    runs = [("torch fp32", "torch", "fp32"), (f"torch {mixed}", "torch", mixed)]
    if device.type == "cuda" and tinycudann_available():
        runs += [("tcnn fp32", "tcnn", "fp32"), ("tcnn fp16", "tcnn", "fp16")]
    return runs


def write_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY (float32 vertices, int32 triangles) with numpy alone."""
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\n"
        f"property float y\nproperty float z\nelement face {len(faces)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode()
    rec = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rec["n"], rec["i"] = 3, faces
    with open(path, "wb") as fh:
        fh.write(header + verts.astype("<f4").tobytes() + rec.tobytes())


def mesh(checkpoint: Path, hull_path: Path, resolution: int, device: torch.device, out: Path) -> dict:
    from neus_stage.artifacts.box import read_hull
    from neus_stage.geometry.extraction import extract_mesh

    occ, lo, hi = read_hull(hull_path)
    t0 = time.time()
    sdf = load_sdf_function(checkpoint, str(device))
    verts, faces = extract_mesh(
        sdf,
        lo,
        hi,
        resolution,
        occupancy=occ,
        occupancy_bounds=(lo, hi),
        device=str(device),
        coarse=4,
        chunk=2**18 if device.type == "cuda" else 2**15,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    write_ply(out, verts, faces)
    return {"mesh_s": round(seconds, 1), "faces": int(len(faces)), "mesh": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, nargs="?")
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--pack", nargs=2, type=Path, metavar=("SCENE_DIR", "DEST"), help="make a dataset folder and stop")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--minutes-per-run", type=float, default=1.4)
    ap.add_argument("--holdout-every", type=int, default=8)
    ap.add_argument("--mesh-resolution", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training options for every run")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if a.pack:
        pack(*a.pack)
        return
    if a.dataset is None or a.out is None:
        ap.error("give DATASET_DIR and OUT_DIR (or --pack SCENE_DIR DEST)")
    hull, bbox = find_inputs(a.dataset)
    device = pick_device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "tinycudann": tinycudann_available(),
        "python": sys.version.split()[0],
    }
    log.info("gpu check on %s", env)
    extra = dict(s.split("=", 1) for s in a.set)
    rows, run_dirs = [], {}
    for name, backend, precision in runs_for(device):
        cfg = resolve_config(
            a.preset,
            {
                "steps": a.steps,
                "max_minutes": a.minutes_per_run,
                "holdout_every": a.holdout_every,
                "validate_every": 0,
                "checkpoint_every": 10**9,
                "log_every": 100,
                "device": str(device),
                "encoding_backend": backend,
                "precision": precision,
                **extra,
            },
        )
        run_dir = a.out / "runs" / name.replace(" ", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        m = train(cfg, a.dataset, run_dir, hull_path=hull, bbox_path=bbox)
        shutil.copy2(run_dir / "renders" / "final.png", a.out / f"render_{name.replace(' ', '_')}.png")
        rows.append(
            {
                "run": name,
                "steps": m["steps"],
                "train s": round(m["seconds"], 1),
                "steps/s": round(m["steps"] / m["seconds"], 2),
                "ray samples/s": round(m["ray_samples_per_s"]),
                "evaluated samples/s": round(m["samples_per_s"]),
                "held-out PSNR": round(m.get("heldout_psnr", m["val_psnr"]), 2),
                "held-out mask IoU": round(m.get("heldout_mask_iou", m["val_mask_iou"]), 3),
                "peak GPU MiB": round(m["peak_gpu_mem_mb"]) if m["peak_gpu_mem_mb"] is not None else None,
            }
        )
        run_dirs[name] = run_dir
    # the run that precision=auto picks: fp16 with tinycudann's encoding, else fp32
    meshed_run = "tcnn fp16" if "tcnn fp16" in run_dirs else "torch fp32"
    meshed = mesh(run_dirs[meshed_run] / "checkpoint.pt", hull, a.mesh_resolution, device, a.out / "mesh.ply")
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    note = (
        f"\n{env['device']}, torch {env['torch']}, tinycudann {'yes' if env['tinycudann'] else 'no'}; "
        f"preset {a.preset}, dataset {a.dataset}. Mesh of '{meshed_run}' at {a.mesh_resolution}^3: "
        f"{meshed['mesh_s']} s, {meshed['faces']} faces.\n"
    )
    table = "\n".join(lines) + "\n" + note
    (a.out / "gpu_check.md").write_text(table)
    (a.out / "gpu_check.json").write_text(
        json.dumps({"env": env, "runs": rows, "mesh": meshed, "meshed_run": meshed_run}, indent=2)
    )
    print(table)


if __name__ == "__main__":
    main()
