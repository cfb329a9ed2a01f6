"""The scene table, the photo checks and the ``neus-stage`` command line (help, errors, doctor)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage import cli, doctor
from neus_stage.errors import StageError
from neus_stage.photos import check_photos, displayed_size, list_photos, read_photo
from neus_stage.scenes import read_scene_table

BIN = Path(sys.executable).parent
COMMANDS = {
    "sfm",
    "masks",
    "dataset",
    "visual-hull",
    "train",
    "mesh",
    "evaluate",
    "synth",
    "doctor",
    "report",
    "frames",
    "export",
    "quality",
}


def _photos(folder: Path, n: int = 3, size: tuple[int, int] = (32, 24), ext: str = "png", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:03d}.{ext}")
    return folder


def _table(path: Path, header: list[str], *rows: list[str]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


# ============================================================================================ scene table
def test_scene_table_reads_and_fills_defaults(tmp_path, monkeypatch):
    _photos(tmp_path / "data" / "cup")
    _photos(tmp_path / "data" / "owl", ext="jpg")
    (tmp_path / "data" / "owl_masks").mkdir()
    np.savez(tmp_path / "data" / "owl.npz", world_mat_0=np.eye(4))
    (tmp_path / "data" / "owl.ply").write_text("ply\n")
    table = tmp_path / "scenes.tsv"
    table.write_text(
        "# demo scenes\n"
        "scene\tphotos\tmasks\tcameras\tposes\tgt\tdtu_scan\n"
        "cup\tdata/cup\t\t\t\t\t\n"
        "owl-2_b\t data/owl \tdata/owl_masks\tdata/owl.npz\treference\tdata/owl.ply\t65\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    df = read_scene_table(table, base=tmp_path)  # relative paths from base, not from the working directory
    assert list(df.index) == ["cup", "owl-2_b"]
    assert df.loc["cup", "poses"] == "sfm" and df.loc["cup", "masks"] == "" and df.loc["cup", "gt"] == ""
    assert df.loc["owl-2_b", "photos"] == str(tmp_path / "data" / "owl")  # stripped, absolute
    assert df.loc["owl-2_b", "cameras"] == str(tmp_path / "data" / "owl.npz")
    assert df.loc["owl-2_b", "poses"] == "reference" and df.loc["owl-2_b", "dtu_scan"] == "65"
    with pytest.raises(StageError, match="scene 'cup'.*photo folder not found"):
        read_scene_table(table)  # the working directory is the default base
    monkeypatch.chdir(tmp_path)
    assert list(read_scene_table(table).index) == ["cup", "owl-2_b"]
    # only the required columns: the optional ones are added empty
    df = read_scene_table(_table(tmp_path / "min.tsv", ["scene", "photos"], ["cup", "data/cup"]))
    assert set(df.columns) >= {"masks", "cameras", "poses", "gt", "dtu_scan"} and df.loc["cup", "poses"] == "sfm"


@pytest.mark.parametrize(
    "header,rows,message",
    [
        (["scene", "pictures"], [["a", "p"]], "missing column\\(s\\) photos"),
        (["scene", "photos", "notes"], [["a", "p", "x"]], "unknown column\\(s\\) notes"),
        (["scene", "photos"], [], "has no rows"),
        (["scene", "photos"], [["a", "p"], ["b", "p"], ["a", "p"]], "duplicate scene name\\(s\\) a"),
        (["scene", "photos"], [["my scene", "p"]], "invalid scene name"),
        (["scene", "photos"], [["a", "missing"]], "scene 'a': .*photo folder not found"),
        (["scene", "photos", "poses"], [["a", "p", "reference"]], "poses 'reference' needs a 'cameras' file"),
        (["scene", "photos", "poses"], [["a", "p", "colmap"]], "poses is 'colmap'; write 'sfm' or 'reference'"),
        (["scene", "photos", "cameras"], [["a", "p", "none.npz"]], "cameras file none.npz not found"),
        (["scene", "photos", "gt"], [["a", "p", "none.ply"]], "gt file none.ply not found"),
        (["scene", "photos", "masks"], [["a", "p", "none"]], "masks folder none not found"),
        (["scene", "photos", "dtu_scan"], [["a", "p", "scan65"]], "dtu_scan 'scan65' is not a scan number"),
    ],
)
def test_scene_table_errors(tmp_path, header, rows, message):
    _photos(tmp_path / "p")
    table = _table(tmp_path / "scenes.tsv", header, *rows)
    with pytest.raises(StageError, match=message) as err:
        read_scene_table(table, base=tmp_path)
    assert str(table) in str(err.value)  # every message names the table


def test_scene_table_photo_folder_problems(tmp_path):
    table = _table(tmp_path / "scenes.tsv", ["scene", "photos"], ["a", "p"])
    _photos(tmp_path / "p", n=2)
    with pytest.raises(StageError, match="only 2 photo\\(s\\); a reconstruction needs at least 3"):
        read_scene_table(table, base=tmp_path)
    _photos(tmp_path / "p", n=3)
    (tmp_path / "p" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    assert list(read_scene_table(table, base=tmp_path).index) == ["a"]
    (tmp_path / "p" / "notes.txt").write_text("shot on a phone")
    with pytest.raises(StageError, match="scene 'a'.*not photos \\(notes.txt\\)"):
        read_scene_table(table, base=tmp_path)
    with pytest.raises(StageError, match="scene table not found"):
        read_scene_table(tmp_path / "nope.tsv")


def test_scene_table_hash_in_a_field_and_trailing_tabs(tmp_path):
    """Only a line starting with # is a comment; a trailing tab does not shift the columns; extra fields are an
    error naming the line."""
    _photos(tmp_path / "shoot #2")
    table = tmp_path / "scenes.tsv"
    table.write_text("scene\tphotos\t\n# a comment\n\ncup\tshoot #2\t\n  # indented comment\n")
    df = read_scene_table(table, base=tmp_path)
    assert df.loc["cup", "photos"] == str(tmp_path / "shoot #2")
    table.write_text("scene\tphotos\ncup\tshoot #2\textra\n")
    with pytest.raises(StageError, match="line 2: 3 fields but the header \\(line 1\\) has 2 columns"):
        read_scene_table(table, base=tmp_path)
    table.write_text("scene,photos\ncup,shoot #2\n")
    with pytest.raises(StageError, match="must be tab-separated"):
        read_scene_table(table, base=tmp_path)


def test_scene_table_paths_fall_back_to_later_bases(tmp_path):
    """The workflow looks in the working directory first, then in its own folder (the demo's photos)."""
    work, workflow = tmp_path / "work", tmp_path / "workflow"
    _photos(workflow / "resources" / "p")
    work.mkdir()
    table = _table(tmp_path / "scenes.tsv", ["scene", "photos"], ["a", "resources/p"])
    df = read_scene_table(table, bases=[work, workflow])
    assert df.loc["a", "photos"] == str(workflow / "resources" / "p")
    _photos(work / "resources" / "p")  # the working directory's own folder wins
    assert read_scene_table(table, bases=[work, workflow]).loc["a", "photos"] == str(work / "resources" / "p")


def test_scene_table_names_a_video(tmp_path):
    """A video row is read (the frames stage picks its frames, tests/test_video.py); one that does not decode is
    refused before any work, naming the file."""
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    table = _table(tmp_path / "scenes.tsv", ["scene", "photos"], ["a", "clip.mp4"])
    with pytest.raises(StageError, match="scene 'a': .*clip.mp4: cannot open this video"):
        read_scene_table(table, base=tmp_path)


# ================================================================================================ photos
def test_list_photos_sorted_and_same_stem_error(tmp_path):
    folder = _photos(tmp_path / "p", n=4)
    assert [p.name for p in list_photos(folder)] == ["000.png", "001.png", "002.png", "003.png"]
    Image.new("RGB", (32, 24)).save(folder / "001.jpg")
    with pytest.raises(StageError, match="001.jpg and 001.png share the name '001'"):
        list_photos(folder)
    with pytest.raises(StageError, match="no photos found"):
        list_photos(_photos(tmp_path / "empty", n=0))


def test_check_photos_different_sizes_name_both(tmp_path):
    folder = _photos(tmp_path / "p", n=3, size=(32, 24))
    Image.new("RGB", (40, 30), (9, 9, 9)).save(folder / "003.png")
    with pytest.raises(StageError, match="different sizes") as err:
        check_photos(list_photos(folder))
    msg = str(err.value)
    assert "32x24: 000.png, 001.png, 002.png" in msg and "40x30: 003.png" in msg
    (folder / "003.png").unlink()
    assert check_photos(list_photos(folder)) == (32, 24)


def test_check_photos_exact_duplicate(tmp_path):
    folder = _photos(tmp_path / "p", n=3)
    (folder / "009.png").write_bytes((folder / "001.png").read_bytes())
    with pytest.raises(StageError, match="009.png: identical to 001.png"):
        check_photos(list_photos(folder))


def test_corrupt_photos_are_stage_errors_naming_the_file(tmp_path):
    folder = _photos(tmp_path / "p", n=3, ext="jpg")
    data = (folder / "001.jpg").read_bytes()
    (folder / "001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(StageError, match="001.jpg: cannot read this image"):
        check_photos(list_photos(folder))
    (folder / "001.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(StageError, match="001.jpg: cannot read this image"):
        read_photo(folder / "001.jpg")


def test_exif_orientation_is_applied(tmp_path):
    folder = _photos(tmp_path / "p", n=3, size=(32, 24))
    upright = np.asarray(Image.open(folder / "002.png").convert("RGB"))
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # a phone held sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(folder / "002.png", exif=exif.tobytes())
    assert Image.open(folder / "002.png").size == (24, 32)
    assert np.array_equal(read_photo(folder / "002.png"), upright)
    assert check_photos(list_photos(folder)) == (32, 24)  # sizes compared after orientation
    assert displayed_size(folder / "002.png") == (32, 24) == displayed_size(folder / "001.png")  # headers only
    # an eXIf chunk after the image data (allowed; Pillow finds it only by decoding): still turned
    data = (folder / "002.png").read_bytes()
    chunks, at = [], 8
    while at < len(data):
        n = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at : at + 12 + n])
        at += 12 + n
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c is not exif_chunk]
    (folder / "002.png").write_bytes(data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1])  # before IEND
    assert "exif" not in Image.open(folder / "002.png").info  # not among the header chunks
    assert displayed_size(folder / "002.png") == (32, 24)
    assert np.array_equal(read_photo(folder / "002.png"), upright)


# =================================================================================================== cli
def test_every_subcommand_has_help(capsys, run_cli):
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == COMMANDS
    for cmd in sorted(COMMANDS):
        with pytest.raises(SystemExit) as exc:
            run_cli([cmd, "--help"])
        assert exc.value.code == 0, cmd
        out = capsys.readouterr().out
        assert out.startswith(f"usage: neus-stage {cmd}"), cmd
    help_all = subprocess.run([BIN / "neus-stage", "--help"], capture_output=True, text=True, timeout=60)
    assert help_all.returncode == 0
    assert all(cmd in help_all.stdout for cmd in COMMANDS)


def _assert_one_line_error(proc: subprocess.CompletedProcess, cmd: str, text: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"neus-stage {cmd}: error:")]
    assert len(lines) == 1, proc.stderr
    assert text in lines[0]


def test_stage_errors_exit_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [BIN / "neus-stage", "dataset", "--out", tmp_path / "ds", "--masks", tmp_path, "--reference-cameras", "c.npz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_line_error(proc, "dataset", "--reference-cameras needs --photos")
    proc = subprocess.run(
        [BIN / "neus-stage", "train", "--dataset", tmp_path, "--out", tmp_path / "run", "--set", "stepz=5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_line_error(proc, "train", "unknown training option 'stepz'")
    assert not (tmp_path / "run").exists()  # nothing written before the options are checked


@pytest.mark.parametrize(
    "argv,text",
    [
        (["visual-hull", "--dataset", "{tmp}/none", "--bbox", "{tmp}/b.json", "--hull", "{tmp}/h.npz"], "no images"),
        (["train", "--dataset", "{tmp}", "--out", "{tmp}/run", "--set", "steps"], "write KEY=VALUE"),
        (["train", "--dataset", "{tmp}", "--out", "{tmp}/run", "--preset", "huge"], "unknown training preset"),
        (["evaluate", "--mesh", "{tmp}/m.ply", "--out", "{tmp}/e.json", "--dtu-root", "{tmp}"], "needs --scan"),
        (["synth", "--out", "{tmp}/s", "--scene", "kettle"], "unknown synthetic scene 'kettle'"),
    ],
)
def test_stage_errors_in_process(tmp_path, capsys, argv, text, run_cli):
    assert run_cli([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"neus-stage {argv[0]}: error:")]
    assert len(lines) == 1 and text in lines[0], err


def test_doctor_command_lists_the_components():
    proc = subprocess.run([BIN / "neus-stage", "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in (
        "torch",
        "CUDA",
        "tinycudann",
        "pycolmap",
        "onnxruntime",
        "rembg models",
        "open3d",
        "pymeshlab",
        "snakemake",
        "SLURM",
    ):
        assert f"] {name}" in proc.stdout, name
    assert "[ok] torch" in proc.stdout


def test_doctor_reports_rembg_models(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUS_STAGE_MODELS", str(tmp_path))
    rows = {name: (ok, detail) for name, ok, detail, _ in doctor.checks()}
    assert rows["rembg models"][0] is False and "none in" in rows["rembg models"][1]
    assert "-> masks stage fails: run `make setup`" in doctor.doctor()
    (tmp_path / "u2netp").mkdir()
    (tmp_path / "u2netp" / "u2netp.onnx").write_bytes(b"onnx")
    rows = {name: (ok, detail) for name, ok, detail, _ in doctor.checks()}
    assert rows["rembg models"] == (True, f"u2netp in {tmp_path}")
