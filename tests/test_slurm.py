"""The workflow on a real SLURM: profiles/slurm submits every job with sbatch, training lands on the GPU partition.

tests/slurm_harness/start_slurm.sh starts a single-node SLURM on this machine (partitions ``cpu`` and
``gpu``, two fake GPUs), a tiny rendered scene runs through ``snakemake --workflow-profile`` with the
project's SLURM profile (sizes scaled down to the one small node, everything else as shipped), and the
test checks SLURM's own records: one job per rule, ``train`` and ``mesh`` on ``gpu`` with ``gres/gpu=1``
allocated, the rest on ``cpu``. Run ``pytest -s tests/test_slurm.py`` to see the records.

Needs root and apt (or an installed slurm-wlm + munge); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "slurm_harness"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
BASE = Path(os.environ.get("NEUS_SLURM_BASE", "/tmp/neus-stage-slurm"))
GPU_RULES = {"train", "mesh"}
CPU_RULES = {"masks", "neus_dataset", "visual_hull", "evaluate", "export", "report"}

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def _foreign_slurmctld() -> bool:
    """A slurmctld that this harness did not start (it would own /etc/slurm and the ports)."""
    ours = BASE / "slurmctld.pid"
    own_pid = ours.read_text().strip() if ours.is_file() else ""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != own_pid:
            try:
                if (proc / "comm").read_text().strip() == "slurmctld":
                    return True
            except OSError:
                continue
    return False


@pytest.fixture(scope="module")
def slurm_cluster(request):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the SLURM harness needs root on Linux (it installs slurm-wlm and starts its daemons)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("neither apt-get nor an installed slurmctld: cannot start a SLURM here")
    pytest.importorskip("snakemake_executor_plugin_slurm")
    if _foreign_slurmctld():
        pytest.skip("another slurmctld is running on this machine; not starting a second one")
    was_up = _alive(BASE / "slurmctld.pid")
    try:
        start = subprocess.run(
            [str(HARNESS / "start_slurm.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        subprocess.run([str(HARNESS / "stop_slurm.sh")], capture_output=True, timeout=90)
        pytest.fail("start_slurm.sh did not finish in 300 s")
    if not was_up:
        request.addfinalizer(lambda: subprocess.run([str(HARNESS / "stop_slurm.sh")], timeout=90))
    if start.returncode == 4:  # packages missing and apt could not install them (offline, no mirror)
        pytest.skip(f"SLURM packages unavailable: {start.stderr.strip()}")
    assert start.returncode == 0, f"start_slurm.sh failed:\n{start.stdout}\n{start.stderr}"
    print(start.stdout)
    return BASE


def _test_profile(tmp: Path) -> Path:
    """profiles/slurm/config.yaml with sizes that fit the one small harness node (2 cores), all else kept."""
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    prof["set-threads"] = {rule: 1 for rule in prof["set-threads"]}
    for res in [prof["default-resources"], *prof["set-resources"].values()]:
        res["mem_mb"] = min(int(res["mem_mb"]), 1500)
        res["runtime"] = min(int(res["runtime"]), 15)
        if "cpus_per_gpu" in res:
            res["cpus_per_gpu"] = 1
    prof["slurm-init-seconds-before-status-checks"] = 1  # poll at once: the jobs take seconds here
    prof["latency-wait"] = 5  # one machine, no network filesystem
    prof["retries"] = 0  # a failure here is a bug to see, not a hiccup to retry
    out = tmp / "profile"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return out


def _job_records(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """`scontrol show job -d` for each id (finished jobs stay visible for MinJobAge)."""
    records = {}
    for jid in job_ids:
        out = subprocess.run(
            ["scontrol", "show", "job", "-d", "-o", jid], capture_output=True, text=True, timeout=20
        ).stdout
        fields = dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", out))
        records[jid] = fields
    return records


def test_workflow_on_slurm(slurm_cluster, tmp_path):
    from neus_stage.synth import render_scene

    t0 = time.perf_counter()
    render_scene(tmp_path / "scene", scene="mug", n_views=12, width=160, height=120, gt_resolution=96)
    (tmp_path / "scenes.tsv").write_text(
        "scene\tphotos\tmasks\tcameras\tposes\tgt\n"
        "mug\tscene/photos\tscene/masks\tscene/cameras_sphere.npz\treference\tscene/gt.ply\n"
    )
    config = {
        "scenes": "scenes.tsv",
        "visual_hull": {"resolution": 32},
        "train": {
            "preset": "cpu",
            "overrides": {
                "steps": 30,
                "checkpoint_every": 10,
                "validate_every": 0,
                "log_every": 10,
                "n_rays": 128,
                "n_samples": 32,
            },
        },
        "mesh": {"resolution": 48, "dilation": 2},
        "export": {"faces": 5000, "texture_size": 256},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    profile = _test_profile(tmp_path)

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # jobs inherit it: sbatch --export=ALL
    cmd = [
        "timeout",
        "240",
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--workflow-profile",
        str(profile),
    ]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=270)
    log = run.stdout + run.stderr
    (tmp_path / "snakemake.out").write_text(log)
    assert run.returncode == 0, f"snakemake on SLURM failed (rc {run.returncode}):\n{log[-6000:]}"
    assert (tmp_path / "results" / "mug" / "eval.json").is_file()

    # every rule's job went through sbatch: snakemake names the SLURM id of each submission
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    job_ids = [sid for _, sid in submitted]
    assert len(job_ids) == len(GPU_RULES | CPU_RULES), f"expected one SLURM job per rule:\n{log[-4000:]}"

    records = _job_records(job_ids)
    rows = []
    for jid, rec in records.items():
        rule = re.sub(r"^rule_([A-Za-z_]+?)_wildcards.*$", r"\1", rec.get("Comment", "?"))
        rows.append(
            (jid, rule, rec.get("Partition"), rec.get("JobState"), rec.get("TresPerJob", ""), rec.get("JOB_GRES", ""))
        )
    report = [
        "SLURM records (scontrol show job -d):",
        f"{'jobid':>6} {'rule':<13} {'partition':<9} {'state':<10} {'TresPerJob':<12} JOB_GRES (allocated)",
    ]
    for jid, rule, part, state, tres, gres in rows:
        report.append(f"{jid:>6} {rule:<13} {part:<9} {state:<10} {tres or '-':<12} {gres or '-'}")
    jobcomp = BASE / "log" / "jobcomp.log"
    if jobcomp.is_file():
        lines = [ln for ln in jobcomp.read_text().splitlines() if any(f"JobId={j} " in ln for j in job_ids)]
        report.append("jobcomp.log:\n" + "\n".join(lines))
    print("\n" + "\n".join(report))
    # kept for the CI log (.ci/run prints it after the suite): which jobs SLURM ran where
    (ROOT / "logs").mkdir(exist_ok=True)
    (ROOT / "logs" / "slurm_test.txt").write_text("\n".join(report) + "\n")

    rules = {row[1] for row in rows}
    assert rules == GPU_RULES | CPU_RULES, rows
    for jid, rule, part, state, tres, gres in rows:
        assert state == "COMPLETED", (jid, rule, state)
        if rule in GPU_RULES:
            assert part == "gpu", (jid, rule, part)
            assert tres == "gres:gpu:1", (jid, rule, tres)  # requested: sbatch --gpus=1
            assert gres.startswith("gpu:") and gres.endswith(":1"), (jid, rule, gres)  # allocated: one GPU
        else:
            assert part == "cpu", (jid, rule, part)
            assert "gpu" not in tres and "gpu" not in gres, (jid, rule, tres, gres)
    print(f"workflow on SLURM: {len(rows)} jobs in {time.perf_counter() - t0:.0f} s")
