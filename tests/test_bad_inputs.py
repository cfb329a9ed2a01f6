"""Bad inputs: one clear message each, naming the file and the fix, and a re-run that completes after the fix.

Only the cases not tested elsewhere live here; README.md's table "Bad input and what you see" lists every
case with the test that covers it (test_sfm.py, test_masks.py, test_scenes_cli.py, test_workflow.py,
test_dataset_hull.py). The commands run as a user runs them (a subprocess), so a traceback would show.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage.errors import StageError
from neus_stage.photos import check_photos, list_photos

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_PHOTOS = ROOT / "resources" / "demo" / "photos"
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # the workflow's rules call neus-stage


def neus_stage(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "neus-stage", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error(proc: subprocess.CompletedProcess, command: str, *texts: str) -> str:
    """Exit status 2, no traceback, exactly one ``neus-stage <command>: error:`` line holding ``texts``."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"neus-stage {command}: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for text in texts:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _textured(folder: Path, name: str, seed: int, size=(64, 48), exif: Image.Exif | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = folder / name
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, quality=95, **({"exif": exif.tobytes()} if exif is not None else {})
    )
    return path


def _camera_exif(make: str, model: str, focal_mm: float, focal_35mm: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x920A] = focal_mm  # FocalLength
    exif.get_ifd(0x8769)[0xA405] = focal_35mm  # FocalLengthIn35mmFilm
    return exif


# ============================================================================= 1. photos from different cameras
def test_photos_from_two_cameras_are_refused_before_any_work(tmp_path):
    photos = tmp_path / "photos"
    canon, phone = _camera_exif("Canon", "EOS 80D", 35.0, 56), _camera_exif("Apple", "iPhone 13", 5.1, 26)
    for i in range(3):
        _textured(photos, f"canon_{i}.jpg", i, exif=canon)
    for i in range(2):
        _textured(photos, f"phone_{i}.jpg", 10 + i, exif=phone)  # same size: only EXIF tells them apart
    proc = neus_stage("sfm", "--photos", photos, "--out", tmp_path / "sfm")
    one_error(
        proc,
        "sfm",
        f"{photos}: photos from 2 different cameras or zoom settings",
        "Canon EOS 80D, 35 mm, 56 mm-equiv.: canon_0.jpg, canon_1.jpg, canon_2.jpg",
        "Apple iPhone 13, 5.1 mm, 26 mm-equiv.: phone_0.jpg, phone_1.jpg",
        "use the photos of one camera at one focal length",
    )
    assert not (tmp_path / "sfm" / "database.db").exists()  # refused before feature extraction
    for p in photos.glob("phone_*"):  # the fix: the other camera's photos go to a scene of their own
        p.unlink()
    assert check_photos(list_photos(photos)) == (64, 48)


def test_one_camera_at_two_zoom_settings_is_refused(tmp_path):
    photos = tmp_path / "photos"
    for i, focal in enumerate((18.0, 18.0, 55.0)):
        _textured(photos, f"{i:03d}.jpg", i, exif=_camera_exif("Nikon", "D3500", focal, int(focal * 1.5)))
    with pytest.raises(StageError, match=r"2 different cameras or zoom settings.*Nikon D3500, 18 mm.*Nikon D3500, 55"):
        check_photos(list_photos(photos))


def test_photos_without_exif_pass_the_camera_check(tmp_path):
    """A photo with its EXIF stripped (an edited copy) cannot be told apart: it is not refused."""
    photos = tmp_path / "photos"
    exif = _camera_exif("Canon", "EOS 80D", 35.0, 56)
    for i in range(3):
        _textured(photos, f"{i:03d}.jpg", i, exif=exif)
    _textured(photos, "003.png", 3)
    assert check_photos(list_photos(photos)) == (64, 48)


# ================================================================================== 2. duplicate photos
def test_same_photo_under_two_names_is_refused(tmp_path):
    """A pixel-identical copy in another format ('001 (1).png' beside '001.jpg') is caught like a byte copy."""
    photos = tmp_path / "photos"
    for i in range(3):
        _textured(photos, f"{i:03d}.jpg", i)
    Image.open(photos / "001.jpg").save(photos / "001 (1).png")
    proc = neus_stage("sfm", "--photos", photos, "--out", tmp_path / "sfm")
    one_error(proc, "sfm", "001.jpg: identical to 001 (1).png", "remove the duplicate photo")
    (photos / "001 (1).png").unlink()
    assert check_photos(list_photos(photos)) == (64, 48)


# ========================================================================= 3. photos of an unrelated scene
@pytest.fixture(scope="module")
def mixed_photos(tmp_path_factory) -> Path:
    """The 36 demo photos of the mug plus 4 of another scene (the 'parts' render), shot by the same camera."""
    from neus_stage.synth import render_scene

    root = tmp_path_factory.mktemp("mixed")
    render_scene(root / "other", scene="parts", n_views=4, width=400, height=300, seed=1, gt_resolution=32)
    photos = root / "photos"
    photos.mkdir()
    for p in DEMO_PHOTOS.glob("*.jpg"):
        shutil.copy(p, photos)
    exif = Image.open(DEMO_PHOTOS / "000.jpg").getexif()  # same camera: the EXIF check has nothing to say
    for i, p in enumerate(sorted((root / "other" / "photos").glob("*.jpg"))):
        Image.open(p).save(photos / f"other_{i}.jpg", quality=95, exif=exif.tobytes())
    return photos


def test_unrelated_photos_are_named_as_dropped(mixed_photos, tmp_path):
    proc = neus_stage("sfm", "--photos", mixed_photos, "--out", tmp_path / "sfm", "--min-registered", 0.95)
    one_error(
        proc,
        "sfm",
        f"{mixed_photos}: only 36 of 40 photos registered",
        "dropped: other_0, other_1, other_2, other_3.",
        "Remove blurry or unrelated photos",
        "lower min_registered",
    )
    report = json.loads((tmp_path / "sfm" / "report.json").read_text())
    assert report["dropped"] == ["other_0", "other_1", "other_2", "other_3"]
    assert not (tmp_path / "sfm" / "undistorted").exists()  # nothing for the masks stage to pick up


@pytest.mark.slow
def test_unrelated_photos_rerun_without_them(mixed_photos, tmp_path):
    """The fix the message offers: go on without them (min_registered 0.8, the default): a warning names them."""
    proc = neus_stage("sfm", "--photos", mixed_photos, "--out", tmp_path / "sfm", "--min-registered", 0.8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 photo(s) not registered and left out of every later stage: other_0, other_1, other_2, other_3" in (
        proc.stderr
    )
    assert sorted(p.stem for p in (tmp_path / "sfm" / "undistorted" / "images").glob("*.png")) == sorted(
        p.stem for p in DEMO_PHOTOS.glob("*.jpg")
    )


# ===================================================================== 4. read-only results, a full disk
@pytest.mark.parametrize(
    "error, where, text",
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/results/mug"),
            "/data/results/mug: ",
            "make the folder writable for this user",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/data/results/mug"),
            "/data/results/mug: ",
            "the folder is on a read-only file system",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "{tmp}/bbox.json, {tmp}/hull.npz: ", "the disk is full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "{tmp}/bbox.json, {tmp}/hull.npz: ", "quota"),
    ],
)
def test_os_errors_become_one_line(tmp_path, capsys, monkeypatch, error, where, text, run_cli):
    """At the command's top level: an OSError from anywhere in a stage is one line with the path and the fix."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("neus_stage.hull.carve_visual_hull", fail)
    argv = ["visual-hull", "--dataset", tmp_path, "--bbox", tmp_path / "bbox.json", "--hull", tmp_path / "hull.npz"]
    assert run_cli([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("neus-stage visual-hull: error: ")]
    assert len(lines) == 1, err
    assert where.format(tmp=tmp_path) + error.strerror in lines[0] and text in lines[0]
    assert "snakemake -d DIR" in lines[0]


def _mount_namespace_reason() -> str | None:
    """None where this process may mount a tmpfs in a private mount namespace (root or CAP_SYS_ADMIN), else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"mounting in a private mount namespace is not allowed here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def mounts():
    reason = _mount_namespace_reason()
    if reason:
        pytest.skip(f"needs a read-only / tiny file system: {reason}")


def _in_namespace(setup: str, mountpoint: Path, argv: list, listing: Path) -> subprocess.CompletedProcess:
    """Run ``argv`` in a private mount namespace after ``setup`` mounts over ``mountpoint`` (nothing leaks out);
    what is left under the mount point afterwards is listed into ``listing`` (outside the mount)."""
    script = f'{setup} || exit 99; "$@"; rc=$?; (cd "$MNT" && find . -type f | sort) > "$LISTING"; exit $rc'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**ENV, "MNT": str(mountpoint), "LISTING": str(listing)},
    )


def _dataset_argv(render: Path, out: Path) -> list:
    return [
        "neus-stage",
        "dataset",
        "--photos",
        render / "photos",
        "--reference-cameras",
        render / "cameras_sphere.npz",
        "--masks",
        render / "masks",
        "--out",
        out,
    ]


def test_read_only_results_folder(mounts, mug_render, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    setup = 'mount --bind "$MNT" "$MNT" && mount -o remount,ro,bind "$MNT"'
    proc = _in_namespace(setup, results, _dataset_argv(mug_render, results / "mug" / "dataset"), tmp_path / "left")
    assert proc.returncode != 99, proc.stderr
    one_error(
        proc,
        "dataset",
        f"{results}/mug: Read-only file system",
        "on a read-only file system",
        "choose a results folder on a writable disk",
    )
    assert (tmp_path / "left").read_text() == ""  # nothing written
    proc = neus_stage(*_dataset_argv(mug_render, results / "mug" / "dataset")[1:])  # the same, writable
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (results / "mug" / "dataset" / "cameras_sphere.npz").is_file()


def test_full_disk(mounts, mug_render, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    out = results / "mug" / "dataset"
    setup = 'mount -t tmpfs -o size=32k tmpfs "$MNT"'  # room for a couple of the 12 photos
    proc = _in_namespace(setup, results, _dataset_argv(mug_render, out), tmp_path / "left")
    assert proc.returncode != 99, proc.stderr
    one_error(proc, "dataset", f"{out}: No space left on device", "the disk is full: free space there")
    left = (tmp_path / "left").read_text().split()
    assert left and all(re.match(r"\./mug/dataset/(image|mask)/\d+\.png$", p) for p in left), left  # views only
    setup = 'mount -t tmpfs -o size=8m tmpfs "$MNT"'  # the fix: room; the stage starts the folder over
    proc = _in_namespace(setup, results, _dataset_argv(mug_render, out), tmp_path / "left")
    assert proc.returncode == 0, proc.stderr[-3000:]
    left = (tmp_path / "left").read_text().split()
    assert "./mug/dataset/cameras_sphere.npz" in left and "./mug/dataset/meta.json" in left
    assert len([p for p in left if "/image/" in p]) == 12 and not [p for p in left if p.endswith(".partial")]


# ====================================================== 5. stages killed midway leave no half-written file
def test_a_write_killed_midway_leaves_the_old_file_or_none(tmp_path, monkeypatch):
    from neus_stage.artifacts.dataset import read_cameras_sphere, write_cameras_sphere

    world_mats, scale_mat = np.tile(np.eye(4), (3, 1, 1)), np.eye(4)
    target = tmp_path / "dataset" / "cameras_sphere.npz"

    def dies_midway(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # SIGINT, or any failure, between the first and the last byte

    monkeypatch.setattr(np, "savez", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        write_cameras_sphere(target, world_mats, scale_mat)
    assert list(target.parent.iterdir()) == []  # no half-written file for a later stage to read
    monkeypatch.undo()
    write_cameras_sphere(target, world_mats, scale_mat)
    monkeypatch.setattr(np, "savez", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        write_cameras_sphere(target, world_mats * 2, scale_mat)
    assert [p.name for p in target.parent.iterdir()] == ["cameras_sphere.npz"]
    monkeypatch.undo()
    assert np.array_equal(read_cameras_sphere(target)[0], world_mats)  # the previous, complete file


# ============================================================================ 5. an interrupted workflow run
CONFIG = """\
scenes: config/scenes.tsv
visual_hull: {resolution: 48}
train:
  preset: cpu
  overrides: {steps: 40, checkpoint_every: 5, n_rays: 128, validate_every: 0}
mesh: {resolution: 32, dilation: 2}
"""


def _snakemake(work: Path, *args: str, profile: str = "none") -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(work),
        "--cores",
        "2",
        "--workflow-profile",
        profile,
        *args,
    ]


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before {what}:\n{proc.communicate()[0][-4000:]}")
        if time.time() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.2)


def _train_pids(session: int) -> list[int]:
    """The ``neus-stage train`` processes in snakemake's session (its own, by start_new_session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[3]) == session and b"train" in cmdline and any(a.endswith(b"neus-stage") for a in cmdline):
            pids.append(int(stat.parent.name))
    return pids


def _ckpt_step(log: Path, pattern: str) -> int:
    m = re.search(pattern, log.read_text())
    assert m, log.read_text()[-3000:]
    return int(m.group(1))


def _project(tmp_path: Path, render: Path) -> Path:
    """A one-scene project on the small rendered mug (poses and masks given: no COLMAP, no rembg). The scene
    folder's name holds a space, so the rules' quoting of user paths is exercised on the way (issue #3)."""
    work = tmp_path / "project"
    (work / "config").mkdir(parents=True)
    (work / "my scene").symlink_to(render)
    (work / "config" / "config.yaml").write_text(CONFIG)
    (work / "config" / "scenes.tsv").write_text(
        "scene\tphotos\tmasks\tcameras\tposes\n"
        "mug\tmy scene/photos\tmy scene/masks\tmy scene/cameras_sphere.npz\treference\n"
    )
    return work


def _start(work: Path, *args: str, profile: str = "none") -> subprocess.Popen:
    return subprocess.Popen(
        _snakemake(work, *args, profile=profile),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def _finish_and_check(work: Path, profile: str, after_step: int) -> None:
    """The re-run resumes training from its last complete checkpoint and finishes the workflow."""
    neus = work / "results" / "mug" / "neus"
    target = "results/mug/mesh_clean.ply"  # the workflow's last stage here (the scene has no ground truth)
    done = subprocess.run(
        _snakemake(work, target, profile=profile), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    resumed = _ckpt_step(work / "logs" / "train" / "mug.log", r"resuming from \S+last.pt at step (\d+)")
    assert after_step <= resumed < 40
    assert (work / "results" / "mug" / "mesh_clean.ply").is_file() and (neus / "checkpoint.pt").is_file()
    assert not (neus / "ckpt" / "last.pt").exists()  # a finished training removes its resume point
    assert json.loads((neus / "metrics.json").read_text())["steps"] == 40


@pytest.mark.workflow
def test_ctrl_c_during_training_then_rerun(mug_render, tmp_path):
    """Ctrl-C in the terminal (SIGINT to snakemake's process group) once training has checkpointed."""
    work = _project(tmp_path, mug_render)
    neus = work / "results" / "mug" / "neus"
    last, log = neus / "ckpt" / "last.pt", work / "logs" / "train" / "mug.log"
    proc = _start(work, "results/mug/neus/checkpoint.pt")
    _wait_for(last.is_file, proc, "a training checkpoint")
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out[-3000:]
    stopped = _ckpt_step(log, r"training stopped by signal 2 at step (\d+); checkpoint \S+last.pt is resumed")
    assert "Traceback" not in log.read_text()
    assert not (neus / "checkpoint.pt").exists() and last.is_file()
    # Snakemake knows the job's outputs are incomplete (config.yaml was written): a plain run refuses them ...
    dry = subprocess.run(
        _snakemake(work, "-n", "results/mug/mesh_clean.ply"), capture_output=True, text=True, env=ENV, timeout=300
    )
    assert dry.returncode != 0 and "IncompleteFilesException" in dry.stdout + dry.stderr
    assert "results/mug/neus/config.yaml" in dry.stdout + dry.stderr
    # ... and profiles/default (rerun-incomplete: true, what a user's plain `snakemake` gets) redoes the job
    _finish_and_check(work, str(ROOT / "profiles" / "default"), after_step=stopped)


@pytest.mark.slow
@pytest.mark.workflow
def test_training_killed_outright_then_rerun(mug_render, tmp_path):
    """kill -9 of the training job (the OOM killer, a node failure) while snakemake lives on."""
    work = _project(tmp_path, mug_render)
    neus = work / "results" / "mug" / "neus"
    last = neus / "ckpt" / "last.pt"
    proc = _start(work, "results/mug/neus/checkpoint.pt")
    _wait_for(last.is_file, proc, "a training checkpoint")
    mtime = last.stat().st_mtime_ns
    _wait_for(lambda: last.stat().st_mtime_ns != mtime, proc, "a second checkpoint")  # kill it mid-run
    pids = _train_pids(proc.pid)
    assert pids, "the training process was not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "Error in rule train" in out, out[-3000:]
    assert not (neus / "checkpoint.pt").exists() and not (neus / "config.yaml").exists()  # removed by snakemake
    _finish_and_check(work, "none", after_step=10)  # a plain re-run: nothing is marked incomplete


# ============================================================ 9. silent wrong results that are now errors or handled
def test_photos_in_subfolders_are_warned_about(tmp_path, caplog):
    """30 photos at the top and 6 in extra/: the 6 are not silently dropped from view (a warning names them)."""
    from neus_stage import photos as P

    for i in range(4):
        _textured(tmp_path / "p", f"{i:03d}.jpg", i)
    for i in range(2):
        _textured(tmp_path / "p" / "extra", f"x{i}.jpg", 10 + i)
    P._warned_subfolders.clear()
    with caplog.at_level("WARNING"):
        assert len(list_photos(tmp_path / "p")) == 4
    assert "2 photo(s) in subfolders are not used: extra/ (2)" in caplog.text


def test_16_bit_grey_pngs_are_read_not_clipped_to_white(tmp_path):
    """Pillow's convert('RGB') clips 16-bit grey to 255 (every photo white, then 'duplicates')."""
    folder = tmp_path / "p"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        a = (rng.random((24, 32)) * 65535).astype(np.uint16)
        Image.fromarray(a).save(folder / f"{i}.png")
    from neus_stage.photos import read_photo

    img = read_photo(folder / "0.png")
    assert img.dtype == np.uint8 and img.std() > 40 and 100 < img.mean() < 160
    check_photos(list_photos(folder))  # no "identical to" error


def test_heic_photos_are_read(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    folder = tmp_path / "p"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        im = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        pillow_heif.from_pillow(im).save(folder / f"IMG_{i}.HEIC", quality=95)
    photos = list_photos(folder)
    assert [p.name for p in photos] == ["IMG_0.HEIC", "IMG_1.HEIC", "IMG_2.HEIC"]
    assert check_photos(photos) == (64, 48)


def _mask_set(tmp_path: Path, value_object: int, inverted: bool = False) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(4):
        _textured(images, f"{i:03d}.png", i, size=(64, 48))
        m = np.zeros((48, 64), np.uint8)
        m[12:36, 16:48] = value_object
        if inverted:
            m = value_object - m
        masks.mkdir(exist_ok=True)
        Image.fromarray(m).save(masks / f"{i:03d}.png")
    return images, masks


def test_user_masks_with_0_1_values_are_read(tmp_path):
    from neus_stage.masks import compute_masks

    images, masks = _mask_set(tmp_path, 1)
    report = compute_masks(images, tmp_path / "out", user_masks=masks)
    assert report["mode"] == "user"
    out = np.asarray(Image.open(tmp_path / "out" / "000.png"))
    assert out.max() == 255 and abs((out > 0).mean() - 0.25) < 1e-6


def test_inverted_user_masks_are_named(tmp_path):
    images, masks = _mask_set(tmp_path, 255, inverted=True)
    proc = neus_stage("masks", "--images", images, "--user-masks", masks, "--out", tmp_path / "out")
    one_error(proc, "masks", f"{masks}: the masks look inverted", "invert them")


def test_ctrl_c_in_sfm_is_one_line(tmp_path):
    """SIGINT while COLMAP works: one line and exit status 130, no traceback."""
    photos = ROOT.parent / "shared" / "data" / "dtu_scan65" / "photos"
    if not photos.is_dir():
        photos = DEMO_PHOTOS
    proc = subprocess.Popen(
        [BIN / "neus-stage", "sfm", "--photos", photos, "--out", tmp_path / "sfm"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "sfm" / "database.db").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("neus-stage sfm: error: interrupted")]
    assert len(lines) == 1, err[-2000:]


def test_an_error_is_printed_once(tmp_path):
    """One line, as the README promises: not a log record and then the same message again."""
    (tmp_path / "p").mkdir()
    proc = neus_stage("sfm", "--photos", tmp_path / "p", "--out", tmp_path / "sfm")
    one_error(proc, "sfm", "no photos found")
    assert proc.stderr.count("no photos found") == 1, proc.stderr


def test_misspelt_scene_override_stops_before_any_work(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "scenes.tsv").write_text(f"scene\tphotos\nmug\t{DEMO_PHOTOS}\n")
    (tmp_path / "config" / "config.yaml").write_text(
        "scenes: config/scenes.tsv\nscene_overrides: {mugg: {train: {steps: 10}}}\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            "--workflow-profile",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "scene_overrides names scene(s) mugg that the scene table does not have (its scenes: mug)" in (
        proc.stdout + proc.stderr
    )


def test_a_photo_set_too_large_for_the_memory_is_refused_before_the_work(
    mug_dataset, mug_render, tmp_path, monkeypatch
):
    """With less memory than the views need at once, sfm (before extracting a feature) and training (before
    reading an image) stop with the estimate and the setting to lower."""
    from neus_stage import memory
    from neus_stage.sfm import run_sfm
    from neus_stage.train.data import NeusScene

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 100_000)  # 100 kB left
    with pytest.raises(
        StageError,
        match=r"12 photos at the working size 96x72 need about 0\.0 GiB, but this "
        r"machine has 0\.0 GiB available; lower images\.max_size",
    ):
        run_sfm(mug_render / "photos", tmp_path / "sfm")
    assert not (tmp_path / "sfm" / "database.db").exists()
    with pytest.raises(
        StageError,
        match=r"image: 12 views of 96x72 \(downscale 1\) on the cpu need about .* "
        r"raise train\.image_downscale \(now 1\)",
    ):
        NeusScene(mug_dataset["dataset"])
    assert memory.image_bytes(200, 4000, 3000) / memory.GIB > 8  # 200 photos at 12 MP: why images.max_size
