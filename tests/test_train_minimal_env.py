"""Training in a GPU node's stock PyTorch environment: ``neus-stage train`` and ``scripts/gpu_check.sh`` run in
subprocesses in which the project's heavier dependencies cannot be imported (a meta-path hook refuses them,
as if they were not installed), on a folder holding only the dataset, bbox.json and hull.npz."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# not on a GPU node's stock PyTorch image
ABSENT = ["pycolmap", "open3d", "rembg", "pymeshlab", "trimesh", "tensorboard", "snakemake", "onnxruntime", "cv2"]
# the training itself needs none of these either (torch, numpy, pyyaml, pillow and tqdm only)
TRAIN_ABSENT = ABSENT + ["scipy", "skimage", "pandas", "matplotlib", "sklearn"]

BLOCKER = '''
import sys

BLOCKED = set({names!r})


class _Hidden:
    """A meta-path finder that does not see the blocked packages: they import (and importlib.util.find_spec
    reports them) as if they were not installed."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
'''


def _env(tmp: Path, names: list[str]) -> dict[str, str]:
    site = tmp / f"site_{len(names)}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(names=sorted(names)))
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def bare_scene(mug_dataset, tmp_path_factory) -> Path:
    """The three inputs a training run needs, and nothing else."""
    root = tmp_path_factory.mktemp("bare")
    shutil.copytree(mug_dataset["dataset"], root / "dataset")
    shutil.copy2(mug_dataset["hull"], root / "hull.npz")
    shutil.copy2(mug_dataset["bbox"], root / "bbox.json")
    return root


def test_the_blocker_blocks(tmp_path):
    probe = (
        "import importlib, importlib.util\nfor m in ('trimesh', 'scipy.ndimage', 'torch.utils.tensorboard'):\n"
        "    try:\n        importlib.import_module(m)\n    except ImportError:\n        print('absent', m)\n"
        "print(importlib.util.find_spec('open3d'), importlib.util.find_spec('numpy') is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_env(tmp_path, TRAIN_ABSENT), capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split("\n")[:4] == [
        "absent trimesh",
        "absent scipy.ndimage",
        "absent torch.utils.tensorboard",
        "None True",
    ]


def test_neus_stage_train_runs_with_torch_numpy_pyyaml_pillow_tqdm_only(bare_scene, tmp_path):
    out = tmp_path / "neus"
    check = (
        "import runpy, sys\n"
        f"sys.argv = ['neus-stage', 'train', '--dataset', '{bare_scene / 'dataset'}', '--hull', "
        f"'{bare_scene / 'hull.npz'}', '--bbox', '{bare_scene / 'bbox.json'}', '--out', '{out}', '--preset', 'cpu', "
        "'--set', 'steps=12', '--set', 'n_rays=64', '--set', 'validate_every=0', '--set', 'log_every=4']\n"
        "try:\n    runpy.run_module('neus_stage.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"blocked = sorted(m for m in sys.modules if m.split('.')[0] in {TRAIN_ABSENT!r})\n"
        "print('BLOCKED-IMPORTED', blocked)\nsys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], env=_env(tmp_path, TRAIN_ABSENT), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BLOCKED-IMPORTED []" in proc.stdout
    assert "tensorboard is not installed" in proc.stderr
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "train_log.csv", "renders/final.png"):
        assert (out / name).is_file(), name
    assert not (out / "tb").exists()
    assert json.loads((out / "metrics.json").read_text())["steps"] == 12


def test_gpu_check_runs_end_to_end_on_the_cpu(bare_scene, tmp_path):
    """The prepared GPU check, in its CPU mode: both precisions of the torch encoding, the table, renders and
    a mesh from scikit-image's marching cubes (no trimesh, no pymeshlab)."""
    out = tmp_path / "check"
    cmd = [
        "bash",
        str(ROOT / "scripts" / "gpu_check.sh"),
        str(bare_scene / "dataset"),
        str(out),
        "--device",
        "cpu",
        "--preset",
        "cpu",
        "--steps",
        "12",
        "--mesh-resolution",
        "48",
        "--set",
        "n_rays=64",
        "--set",
        "hull_prior=full",
    ]  # a solid start: 12 steps from a neutral inside render almost nothing
    env = {**_env(tmp_path, ABSENT), "PYTHON": sys.executable}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "gpu_check.md").read_text()
    assert "| torch fp32 |" in table and "| torch bf16 |" in table and "held-out PSNR" in table
    result = json.loads((out / "gpu_check.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["torch fp32", "torch bf16"]
    assert all(r["steps"] == 12 and r["held-out mask IoU"] > 0.3 for r in result["runs"])
    assert result["mesh"]["faces"] > 100 and (out / "mesh.ply").stat().st_size > 1000
    assert (out / "render_torch_fp32.png").is_file() and (out / "render_torch_bf16.png").is_file()
    assert table in proc.stdout
