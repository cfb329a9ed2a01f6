"""The commands README.md and config/README.md document, run verbatim in a fresh copy of the checkout with
no activated environment (``.venv/bin`` is not on PATH), as a new user runs them.

Snakemake commands run as dry runs (``-n`` appended; the end-to-end run of the real workflow without
activation is tests/test_workflow.py), which parses the config and the scene table, validates the config
against the schema and builds every job's shell command: each must call the package through the Python
that runs Snakemake, never a bare ``neus-stage`` that only an activated environment has on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "config" / "README.md"]
pytestmark = pytest.mark.workflow


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command) for every runnable line: fenced bash blocks and inline `.venv/bin/...` spans."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith((".venv/bin/snakemake", "printf ")):
                    out.append((doc.name, line))
        for span in re.findall(r"`(\.venv/bin/snakemake[^`]*)`", text):
            out.append((doc.name, span))
    return out


def _env() -> dict[str, str]:
    """The environment of a shell without the venv activated: no .venv/bin on PATH, no VIRTUAL_ENV."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = (
        os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin and not p.endswith(".venv/bin")
        )
        or "/usr/bin:/bin"
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory) -> Path:
    """The checkout's files as git knows them (tracked and new, not ignored), with the venv and the rembg
    model linked in as `make setup` would have made them."""
    root = tmp_path_factory.mktemp("fresh") / "neus-stage"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    if (ROOT / ".models").is_dir():
        (root / ".models").symlink_to(ROOT / ".models")
    return root


def test_the_docs_document_the_commands_this_test_runs():
    commands = [c for _, c in documented_commands()]
    assert any("--config scenes=config/my_scenes.tsv" in c for c in commands)
    assert any("mesh='{resolution: 512}'" in c for c in commands)
    assert any("config/dtu.yaml" in c for c in commands)


@pytest.mark.parametrize("doc,command", documented_commands())
def test_documented_command_runs_without_activation(fresh_checkout: Path, doc: str, command: str):
    if command.startswith("printf "):
        proc = subprocess.run(
            ["bash", "-c", command], cwd=fresh_checkout, env=_env(), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return
    if "my_scenes.tsv" in command and not (fresh_checkout / "config" / "my_scenes.tsv").is_file():
        prep = [c for _, c in documented_commands() if c.startswith("printf ")]
        subprocess.run(["bash", "-c", prep[0]], cwd=fresh_checkout, env=_env(), check=True)
    proc = subprocess.run(
        ["bash", "-c", command + " -n -p"], cwd=fresh_checkout, env=_env(), capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{doc}: {command}\n{out[-3000:]}"
    shells = [ln for ln in out.splitlines() if ln.startswith("Shell command:")] or re.findall(
        r"^\s+(\S*python\S* -m neus_stage.*)$", out, re.M
    )
    assert shells, out[-2000:]
    for line in out.splitlines():
        assert not re.match(r"^\s*neus-stage ", line), f"a rule calls a bare neus-stage: {line}"
    assert "-m neus_stage" in out


def test_snakemake_from_another_directory_needs_no_configfile(fresh_checkout: Path, tmp_path: Path):
    """`snakemake -s <checkout>/Snakefile -d OTHER_DIR` finds the workflow's config and the demo's photos."""
    snakemake = fresh_checkout / ".venv" / "bin" / "snakemake"
    proc = subprocess.run(
        [str(snakemake), "-s", str(fresh_checkout / "Snakefile"), "-d", str(tmp_path), "-n", "--cores", "1"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "rule sfm" in proc.stdout and "resources/demo/photos" in proc.stdout
