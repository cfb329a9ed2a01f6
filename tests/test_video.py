"""Video in: videos encoded from rendered views of the mug, with blurred and repeated frames planted. The frames
stage drops exactly the planted ones, spreads a target count over the camera's motion, applies a phone's display
rotation and reads the usual containers; bad videos, too few usable frames and a video mixed with photos are one
clear message; the scene table, sfm's matcher and the workflow take a video row."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neus_stage.errors import StageError
from neus_stage.photos import list_photos
from neus_stage.scenes import read_scene_table
from neus_stage.video import extract_frames, probe_video

ROOT = Path(__file__).resolve().parents[1]
BLURRED = (7, 18, 29)  # views replaced by a blurred copy
REPEATED = {10: 1, 25: 2}  # views followed by this many exact copies


@pytest.fixture(scope="module")
def views(tmp_path_factory) -> list[np.ndarray]:
    """40 rendered views of the mug (128x96) in the order a camera circling it would see them."""
    from neus_stage.synth import render_scene

    out = tmp_path_factory.mktemp("video_views")
    render_scene(out, scene="mug", n_views=40, width=128, height=96, seed=5, gt_resolution=32)
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((out / "photos").glob("*.jpg"))]


def encode(frames: list[np.ndarray], path: Path, codec: str = "libx264", fps: int = 10) -> Path:
    """A video of ``frames`` (PyAV, from its wheel's FFmpeg)."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def set_display_rotation(path: Path) -> None:
    """Write a phone's 'rotate 90' display matrix into an mp4's track header (tkhd), as phones store portrait video:
    the pixels stay landscape, players turn them 90 degrees clockwise."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    off = i + 4 + 4 + (12 if version == 0 else 20) + 4 + (4 if version == 0 else 8) + 8 + 8
    data[off : off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def planted(views, tmp_path_factory) -> dict:
    """The 40 views as a video with 3 views blurred (Gaussian, 2 px) and 3 repeated frames; which video frame is
    which."""
    import cv2

    seq, truth = [], []
    for i, f in enumerate(views):
        if i in BLURRED:
            seq.append(cv2.GaussianBlur(f, (0, 0), 2.0))
            truth.append("blurred")
        else:
            seq.append(f)
            truth.append("kept")
        for _ in range(REPEATED.get(i, 0)):
            seq.append(f.copy())
            truth.append("duplicate")
    path = encode(seq, tmp_path_factory.mktemp("video") / "mug.mp4")
    return {"path": path, "truth": truth, "frames": seq}


def test_planted_blur_and_repeats_are_dropped(planted, tmp_path):
    out = tmp_path / "frames"
    report = extract_frames(planted["path"], out, target=80, min_frames=10)
    truth = planted["truth"]
    assert report["n_frames"] == len(truth) == 43
    reasons = {it["frame"]: it["reason"] for it in report["kept"] + report["dropped"]}
    assert reasons == dict(enumerate(truth)), [(i, reasons[i], t) for i, t in enumerate(truth) if reasons[i] != t]
    for item in report["kept"] + report["dropped"]:
        assert set(item) == {"frame", "blur", "reason"} and isinstance(item["frame"], int)
    blur = {it["frame"]: it["blur"] for it in report["kept"] + report["dropped"]}
    assert max(blur[i] for i, t in enumerate(truth) if t == "blurred") < 0.1
    assert min(blur[i] for i, t in enumerate(truth) if t == "kept") > 0.5
    assert report["counts"] == {"kept": 37, "blurred": 3, "duplicate": 3, "spacing": 0}
    # the kept frames, named by their index in the video, are those frames
    files = sorted(p.name for p in out.glob("*.jpg"))
    assert files == [f"{it['frame']:05d}.jpg" for it in report["kept"]]
    for it in report["kept"][::9]:
        a = np.asarray(Image.open(out / f"{it['frame']:05d}.jpg"), dtype=np.float64)
        assert np.abs(a - planted["frames"][it["frame"]]).mean() < 6  # H.264 and JPEG, nothing else
    assert json.loads((out / "report.json").read_text())["kind"] == "frames"
    # the folder is a photo folder for the sfm stage: report.json is not a photo, and matching is sequential
    assert [p.name for p in list_photos(out)] == files
    from neus_stage.colmap.matching import choose_matcher
    from neus_stage.photos import frames_report

    assert frames_report(out) is not None and frames_report(tmp_path) is None
    assert choose_matcher("auto", 37, 150, video=True) == "sequential"
    assert choose_matcher("auto", 37, 150) == "exhaustive"


def test_target_count_is_spread_over_the_motion(planted, tmp_path):
    report = extract_frames(planted["path"], tmp_path / "frames", target=12, min_frames=10)
    kept = [it["frame"] for it in report["kept"]]
    assert len(kept) == 12 and report["counts"]["spacing"] == 43 - 12 - 6
    assert all(planted["truth"][i] == "kept" for i in kept)
    gaps = np.diff(kept)
    assert gaps.max() <= 2.5 * gaps.mean() and kept[0] <= 4 and kept[-1] >= 38, kept  # over the whole video


def test_phone_rotation_is_applied(views, tmp_path):
    path = encode(views[:24], tmp_path / "portrait.mp4")
    set_display_rotation(path)
    info = probe_video(path)
    assert info.rotation == 270 and (info.width, info.height) == (96, 128)  # 90 degrees clockwise
    report = extract_frames(path, tmp_path / "frames", target=80, min_frames=10)
    assert report["rotation_deg"] == 270 and report["size"] == [96, 128]
    first = report["kept"][0]["frame"]
    a = np.asarray(Image.open(tmp_path / "frames" / f"{first:05d}.jpg"), dtype=np.float64)
    assert a.shape == (128, 96, 3)
    assert np.abs(a - np.rot90(views[first], k=-1)).mean() < 6  # turned clockwise, as a player shows it


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".mov", "libx264"), (".avi", "mpeg4")])
def test_containers(views, tmp_path, suffix, codec):
    path = encode(views[:24], tmp_path / f"clip{suffix}", codec=codec)
    report = extract_frames(path, tmp_path / "frames", target=80, min_frames=10)
    assert report["n_frames"] == 24 and report["counts"]["kept"] >= 20


def test_bad_videos_are_one_clear_message(views, tmp_path, run_cli, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(StageError, match="junk.mp4: cannot open this video .*re-export or re-copy it"):
        extract_frames(junk, tmp_path / "a")
    good = encode(views[:24], tmp_path / "good.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    with pytest.raises(StageError, match="cut.mp4: (cannot open|cannot decode|the video is damaged)"):
        extract_frames(cut, tmp_path / "b", min_frames=10)
    short = encode(views[:5], tmp_path / "short.mp4")
    with pytest.raises(StageError, match="short.mp4: holds only 5 frame\\(s\\), fewer than the minimum of 20"):
        extract_frames(short, tmp_path / "c")
    still = encode([views[0]] * 30, tmp_path / "still.mp4")
    with pytest.raises(
        StageError,
        match=r"still.mp4: only 1 usable frame\(s\) of 30 \(0 blurred, 29 near-duplicates\)"
        r".*move around the object",
    ):
        extract_frames(still, tmp_path / "d", min_frames=10)
    with pytest.raises(StageError, match="frames.min .* above frames.target"):
        extract_frames(good, tmp_path / "e", target=10, min_frames=20)
    assert not any((tmp_path / x).exists() for x in "abcde")  # nothing written
    # the command: one line, exit status 2
    rc = run_cli(["frames", "--video", str(junk), "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert rc == 2 and "neus-stage frames: error: " in err and "Traceback" not in err
    rc = run_cli(["frames", "--video", str(good), "--out", str(tmp_path / "g"), "--min", "10"])
    assert rc == 0 and (tmp_path / "g" / "report.json").is_file()


def test_scene_table_takes_a_video_and_refuses_a_mix(views, tmp_path):
    clip = encode(views[:24], tmp_path / "clip.mp4")
    table = tmp_path / "scenes.tsv"
    table.write_text("scene\tphotos\nclip\tclip.mp4\n")
    df = read_scene_table(table, base=tmp_path)
    assert df.loc["clip", "photos"] == str(clip)
    table.write_text(f"scene\tphotos\tposes\tcameras\nclip\tclip.mp4\treference\t{clip}\n")
    with pytest.raises(StageError, match="scene 'clip': photos names a video .*reference cameras cannot be matched"):
        read_scene_table(table, base=tmp_path)
    (tmp_path / "junk.mov").write_bytes(b"not a video")
    table.write_text("scene\tphotos\nj\tjunk.mov\n")
    with pytest.raises(StageError, match="scene 'j': .*junk.mov: cannot open this video"):
        read_scene_table(table, base=tmp_path)
    # a video among photos: the file is named, and what to do
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(4):
        Image.fromarray(views[i]).save(mixed / f"{i:03d}.jpg")
    shutil.copy(clip, mixed / "walkaround.mp4")
    with pytest.raises(
        StageError,
        match="holds a video \\(walkaround.mp4\\) beside 4 other file\\(s\\).*move "
        "walkaround.mp4 out of the photo folder.*scene row of its own",
    ):
        list_photos(mixed)
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(clip, only / "walkaround.mp4")
    with pytest.raises(StageError, match="holds a video \\(walkaround.mp4\\) and no photos; name the video file"):
        list_photos(only)


def test_workflow_plans_frames_before_sfm(views, tmp_path):
    """A dry run of a scene table whose photos column names a video: frames -> sfm (on results/<scene>/frames) -> ...
    -> export and report."""
    encode(views[:24], tmp_path / "clip.mp4")
    (tmp_path / "scenes.tsv").write_text("scene\tphotos\nclip\tclip.mp4\n")
    snakemake = ROOT / ".venv" / "bin" / "snakemake"
    cmd = [
        str(snakemake) if snakemake.exists() else (shutil.which("snakemake") or pytest.skip("no snakemake")),
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "-n",
        "-p",
        "--cores",
        "1",
        "--config",
        f"scenes={tmp_path / 'scenes.tsv'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "frames --video" in text and "--out results/clip/frames" in text
    assert "sfm --photos results/clip/frames" in text
    for rule in ("frames", "sfm", "masks", "train", "mesh", "export", "report"):
        assert f"rule {rule}:" in text, rule
