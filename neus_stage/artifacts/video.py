"""The frames stage's files: the video it reads (probed from its header and first frame, decoded frame by frame
with the display rotation applied) and the frames it writes (``NNNNN.jpg``).

Decoding is PyAV's (FFmpeg's libraries ship inside its wheel; nothing is downloaded). Phone videos store a
display rotation instead of turning the pixels; it is applied to every frame. A missing, unreadable or damaged
video is a StageError naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import StageError


@dataclass
class VideoInfo:
    """What :func:`probe_video` reads of a video."""

    path: Path
    frames: int | None  # from the container (may be missing or approximate)
    fps: float | None
    width: int  # after rotation
    height: int
    rotation: int  # degrees counter-clockwise the decoded picture is turned for display
    codec: str
    duration_s: float | None


def _open(path: Path):
    """The container, its first video stream; a StageError naming the file for anything unreadable."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise StageError("PyAV (the 'av' package) is not installed: run `make setup`") from exc
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: video not found; check the 'photos' column of the scene table")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise StageError(
            f"{path}: cannot open this video ({exc}); it is damaged or not a video: re-export or "
            "re-copy it (mp4 with H.264 works everywhere)"
        ) from exc
    if not container.streams.video:
        container.close()
        raise StageError(f"{path}: holds no video stream; give a video file of the object")
    return container, container.streams.video[0]


def _rotation_of(stream, frame=None) -> int:
    """The display rotation (degrees, counter-clockwise, a multiple of 90) of a stream or its first frame."""
    rot = getattr(frame, "rotation", None) if frame is not None else None
    if rot is None:
        try:
            rot = int(float(stream.metadata.get("rotate", 0)))
            rot = -rot  # the legacy tag says how far to turn clockwise
        except (TypeError, ValueError):
            rot = 0
    return int(round(float(rot) / 90.0)) * 90 % 360


def probe_video(path: Path) -> VideoInfo:
    """What a video holds, read from its header and first frame (fast): a StageError if it does not decode."""
    import av

    container, stream = _open(path)
    try:
        try:
            frame = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError, ValueError) as exc:
            raise StageError(
                f"{path}: cannot decode this video ({exc or 'no frames'}); it is damaged or uses a "
                "codec FFmpeg cannot read: re-export it (mp4 with H.264 works everywhere)"
            ) from exc
        rotation = _rotation_of(stream, frame)
        w, h = frame.width, frame.height
        if rotation in (90, 270):
            w, h = h, w
        fps = float(stream.average_rate) if stream.average_rate else None
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        return VideoInfo(
            Path(path), int(stream.frames) or None, fps, w, h, rotation, stream.codec_context.name, duration
        )
    finally:
        container.close()


def _upright(frame, rotation: int) -> np.ndarray:
    """RGB uint8 of a decoded frame, turned for display (``rotation`` degrees counter-clockwise)."""
    rgb = frame.to_ndarray(format="rgb24")
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def decode_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB uint8 upright frame) of every frame of the video, with the display rotation applied."""
    import av

    container, stream = _open(path)
    stream.thread_type = "AUTO"
    rotation = None
    try:
        for i, frame in enumerate(container.decode(stream)):
            if rotation is None:
                rotation = _rotation_of(stream, frame)
            yield i, _upright(frame, rotation)
    except av.error.FFmpegError as exc:
        raise StageError(f"{path}: the video is damaged: decoding stopped ({exc}); re-export or re-copy it") from exc
    finally:
        container.close()


def write_frame(out_dir: Path, index: int, rgb: np.ndarray, quality: int) -> None:
    """Frame ``index`` (0-based in the video; RGB uint8) as ``out_dir/NNNNN.jpg``: the files sort in time order."""
    Image.fromarray(rgb).save(Path(out_dir) / f"{index:05d}.jpg", quality=int(quality))
