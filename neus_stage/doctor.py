"""`neus-stage doctor`: what this machine has, and what each missing piece means for the workflow."""

from __future__ import annotations

import importlib
import shutil

from .masks_rembg import models_dir


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is what we report
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    return True, str(getattr(mod, "__version__", "installed"))


def checks() -> list[tuple[str, bool, str, str]]:
    """(component, ok, detail, what it means when missing)."""
    rows = []
    ok, ver = _version("torch")
    cuda_detail = "no CUDA device"
    cuda = False
    if ok:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            cuda_detail = f"CUDA {torch.version.cuda}: {', '.join(names)}"
    rows.append(("torch", ok, ver, "training and mesh extraction cannot run"))
    rows.append(("CUDA", cuda, cuda_detail, "training runs on the CPU (preset cpu; fast preset is slow without a GPU)"))
    tcnn_ok, tcnn = _version("tinycudann")
    rows.append(
        (
            "tinycudann",
            tcnn_ok and cuda,
            tcnn if tcnn_ok else "not installed",
            "the fast preset uses the pure-torch hash grid (same results, several times slower on GPU)",
        )
    )
    ok, ver = _version("pycolmap")
    detail = ver
    if ok:
        import pycolmap

        detail += ", CUDA SIFT" if getattr(pycolmap, "has_cuda", False) else ", CPU build"
    rows.append(("pycolmap", ok, detail, "the sfm stage cannot run (give poses=reference cameras instead)"))
    ok, ver = _version("onnxruntime")
    rows.append(("onnxruntime", ok, ver, "rembg masks cannot be computed (give a masks folder instead)"))
    found = sorted(p.stem for p in models_dir().glob("*/*.onnx")) if models_dir().is_dir() else []
    rows.append(
        (
            "rembg models",
            bool(found),
            f"{', '.join(found) or 'none'} in {models_dir()}",
            "masks stage fails: run `make setup` (installs u2netp offline)",
        )
    )
    ok, ver = _version("open3d")
    rows.append(("open3d", ok, ver, "install the system library libusb-1.0 (Debian: apt-get install libusb-1.0-0)"))
    ok, ver = _version("pymeshlab")
    rows.append(("pymeshlab", ok, ver, "mesh cleaning cannot run"))
    ok, ver = _version("snakemake")
    rows.append(("snakemake", ok, ver, "the workflow cannot run (the neus-stage commands still work by hand)"))
    slurm = [c for c in ("sbatch", "squeue", "sinfo") if shutil.which(c)]
    rows.append(
        (
            "SLURM",
            len(slurm) == 3,
            ", ".join(slurm) or "no sbatch/squeue/sinfo on PATH",
            "only local runs (profiles/default); profiles/slurm needs a SLURM cluster",
        )
    )
    return rows


def doctor() -> str:
    lines = ["neus-stage doctor: what this machine has", ""]
    for name, ok, detail, missing in checks():
        lines.append(f"  [{'ok' if ok else '--'}] {name:13s} {detail}")
        if not ok:
            lines.append(f"       {'':13s} -> {missing}")
    return "\n".join(lines)
