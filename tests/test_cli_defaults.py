"""One default per setting (issue #15): a stage setting's default lives in the signature of the package function
it feeds. The command line adds none of its own (an option not given is not passed), ``--help`` shows the
function's default, given options reach the function under its parameter names, and building the parser
imports no heavy module (torch, pycolmap)."""

from __future__ import annotations

import argparse
import functools
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from neus_stage import cli
from neus_stage.scale import ScaleSettings

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_DESTS = {"help", "verbose", "log", "command", "func"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _settings(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if getattr(a, "feeds", None)]


def _required_argv(cmd: str, p: argparse.ArgumentParser) -> list[str]:
    """The command with its required options only (and the first of each required either-or group)."""
    argv = [cmd]
    chosen = [a for a in p._actions if a.required and a.option_strings]
    chosen += [g._group_actions[0] for g in p._mutually_exclusive_groups if g.required]
    for a in chosen:
        argv += [a.option_strings[0], "x"]
    return argv


# ---------------------------------------------------------------------------------- the one default
@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_every_setting_names_a_parameter_with_a_default_shown_in_help(cmd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping: one line per option
    p = _subparsers()[cmd]
    help_text = " ".join(p.format_help().split())
    for action in _settings(p):
        func = cli._feeds_function(action.feeds)
        params = inspect.signature(func).parameters
        assert action.dest in params, f"{cmd} {action.option_strings}: {action.feeds} has no parameter {action.dest}"
        default = params[action.dest].default
        assert default is not inspect.Parameter.empty, f"{cmd} {action.dest}: {action.feeds} gives no default"
        assert action.default is argparse.SUPPRESS, f"{cmd} {action.dest}: argparse has a default of its own"
        if "(default:" in action.help:  # the help says what the function does without it (None / empty)
            assert default in (None, ()), f"{cmd} {action.dest}: help states a default, the signature has {default!r}"
            continue
        shown = f"{action.dest}={default}" if action.nargs == 0 else f"{default}"
        assert f"{' '.join(action.help.split())} (default: {shown})" in help_text, (cmd, action.dest)


@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_no_other_option_holds_a_setting_default(cmd):
    """Options that feed no function parameter default to nothing (None, an empty list, or not set at all)."""
    p = _subparsers()[cmd]
    for action in p._actions:
        if getattr(action, "feeds", None) or action.required or action.dest == "help":
            continue
        assert action.default in (None, [], argparse.SUPPRESS), (cmd, action.dest, action.default)


@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_global_options_are_no_function_parameters(cmd):
    """cli._given picks the namespace's entries by name: the top-level ones must never match a parameter."""
    for feeds in {a.feeds for a in _settings(_subparsers()[cmd])}:
        params = inspect.signature(cli._feeds_function(feeds)).parameters
        assert not GLOBAL_DESTS & set(params), feeds


# ------------------------------------------------------------------------------- what reaches the function
@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_settings_not_given_stay_out_of_the_namespace(cmd):
    p = _subparsers()[cmd]
    args = cli.build_parser().parse_args(_required_argv(cmd, p))
    for action in _settings(p):
        assert action.dest not in args, (cmd, action.dest)


def _record(monkeypatch, module, name: str) -> list[tuple[tuple, dict]]:
    """Replace ``module.name`` by a recorder with the same signature (cli._given reads it)."""
    calls = []
    real = getattr(module, name)

    @functools.wraps(real)
    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return {}

    monkeypatch.setattr(module, name, fake)
    return calls


def test_masks_pass_only_the_given_settings(monkeypatch, run_cli):
    import neus_stage.masks

    calls = _record(monkeypatch, neus_stage.masks, "compute_masks")
    assert run_cli(["masks", "--images", "i", "--out", "o"]) == 0
    assert calls[-1] == ((Path("i"), Path("o")), {})
    assert (
        run_cli(
            [
                "masks",
                "--images",
                "i",
                "--out",
                "o",
                "--threshold",
                "0.7",
                "--sfm",
                "s",
                "--no-multiview",
                "--mode",
                "rembg",
            ]
        )
        == 0
    )
    assert calls[-1] == (
        (Path("i"), Path("o")),
        {"threshold": 0.7, "sfm_dir": Path("s"), "multiview": False, "mode": "rembg"},
    )


def test_mesh_flags_reach_their_parameters(monkeypatch, run_cli):
    import neus_stage.mesh

    calls = _record(monkeypatch, neus_stage.mesh, "mesh_from_checkpoint")
    base = ["mesh", "--checkpoint", "c.pt", "--dataset", "d", "--bbox", "b.json", "--out", "m.ply"]
    assert run_cli(base) == 0
    assert calls[-1] == ((Path("c.pt"), Path("d"), Path("b.json"), Path("m.ply")), {})
    assert run_cli([*base, "--clean", "mc.ply", "--hull", "h.npz", "--no-cut-at-support", "--resolution", "64"]) == 0
    assert calls[-1][1] == {
        "clean_path": Path("mc.ply"),
        "hull_path": Path("h.npz"),
        "cut_at_support": False,
        "resolution": 64,
    }
    assert run_cli([*base, "--cut-at-support"]) == 0
    assert calls[-1][1] == {"cut_at_support": True}


def test_dataset_scale_settings_use_the_dataclass_defaults(monkeypatch, run_cli, capsys):
    import neus_stage.dataset

    calls = _record(monkeypatch, neus_stage.dataset, "build_dataset_from_sfm")
    base = ["dataset", "--out", "ds", "--masks", "m", "--sfm", "s"]
    assert run_cli(base) == 0
    assert calls[-1] == ((Path("s"), Path("m"), Path("ds")), {"scale": ScaleSettings()})
    assert (
        run_cli(
            [
                *base,
                "--margin",
                "0.2",
                "--marker-ids",
                "3, 5",
                "--scale-factor",
                "0.01",
                "--known-length",
                "1",
                "2",
                "0.3",
            ]
        )
        == 0
    )
    assert calls[-1][1] == {
        "margin": 0.2,
        "scale": ScaleSettings(marker_ids=(3, 5), factor=0.01, known_length=(1, 2, 0.3)),
    }
    capsys.readouterr()
    assert run_cli([*base, "--marker-ids", "a,b"]) == 2  # a StageError: one line, exit 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("neus-stage dataset: error:")]
    assert len(err) == 1 and "--marker-ids" in err[0]


def test_synth_report_and_evaluate_rename_and_convert(monkeypatch, run_cli):
    import neus_stage.evaluate
    import neus_stage.report
    import neus_stage.synth

    synth = _record(monkeypatch, neus_stage.synth, "render_scene")
    assert run_cli(["synth", "--out", "o", "--views", "7"]) == 0
    assert synth[-1] == ((Path("o"),), {"n_views": 7})

    report = _record(monkeypatch, neus_stage.report, "build_report")
    assert run_cli(["report", "--scene-dir", "r", "--benchmarks", "b", "--quality", "q.json"]) == 0
    assert report[-1] == ((Path("r"),), {"benchmarks_dir": Path("b"), "quality_out": Path("q.json")})

    generic = _record(monkeypatch, neus_stage.evaluate, "evaluate_generic")
    assert run_cli(["evaluate", "--mesh", "m.ply", "--out", "e.json", "--gt", "g.ply"]) == 0
    assert generic[-1] == ((Path("m.ply"), Path("g.ply"), Path("e.json")), {"alignment": None})
    assert run_cli(["evaluate", "--mesh", "m.ply", "--out", "e.json", "--gt", "g.ply", "--thresholds", "1,2"]) == 0
    assert generic[-1][1] == {"alignment": None, "thresholds": [1.0, 2.0]}
    with pytest.raises(SystemExit) as exc:
        run_cli(["evaluate", "--mesh", "m.ply", "--out", "e.json", "--gt", "g.ply", "--thresholds", "one"])
    assert exc.value.code == 2


def test_train_passes_preset_and_paths_only_when_given(monkeypatch, run_cli, tmp_path):
    import neus_stage.train.config
    import neus_stage.train.trainer

    presets = _record(monkeypatch, neus_stage.train.config, "resolve_config")
    trained = _record(monkeypatch, neus_stage.train.trainer, "train")
    ds = tmp_path / "ds"
    (ds / "mask").mkdir(parents=True)
    (ds / "mask" / "000.png").write_bytes(b"")
    assert run_cli(["train", "--dataset", str(ds), "--out", "run"]) == 0
    assert presets[-1] == ((), {"overrides": {}})
    assert trained[-1][1] == {}
    assert (
        run_cli(
            [
                "train",
                "--dataset",
                str(ds),
                "--out",
                "run",
                "--preset",
                "cpu",
                "--hull",
                "h.npz",
                "--bbox",
                "b.json",
                "--set",
                "steps=5",
            ]
        )
        == 0
    )
    assert presets[-1] == ((), {"preset": "cpu", "overrides": {"steps": "5"}})
    assert trained[-1][1] == {"hull_path": Path("h.npz"), "bbox_path": Path("b.json")}
    (ds / "mask" / "000.png").unlink()  # no masks: no hull either, the box only
    assert run_cli(["train", "--dataset", str(ds), "--out", "run", "--hull", "h.npz", "--bbox", "b.json"]) == 0
    assert trained[-1][1] == {"bbox_path": Path("b.json")}
    assert presets[-1][1]["overrides"] == {"use_mask": False, "hull_prior": "none"}


# ------------------------------------------------------------------------------------------ no heavy imports
def test_building_and_parsing_imports_neither_torch_nor_pycolmap():
    code = (
        "import sys; from neus_stage.cli import build_parser; "
        "build_parser().parse_args(['sfm', '--photos', 'x', '--out', 'y']); "
        "print('torch' in sys.modules, 'pycolmap' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
