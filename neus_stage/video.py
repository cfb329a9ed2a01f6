"""The frames stage: a video of the object in, its sharp, distinct frames out, for the photo pipeline.

Decoding is PyAV's (FFmpeg's libraries ship inside its wheel; nothing is downloaded). Every frame is
decoded once for its scores and once more for the frames kept; memory holds a second's worth of small
grey thumbnails, whatever the video's length.
Phone videos store a display rotation instead of turning the pixels; it is applied to every frame. The video
is read and the frames are written by :mod:`neus_stage.artifacts.video`.

Which frames are kept (every frame gets a reason in ``report.json``):

1. ``blurred``: motion blur and defocus lower the variance of the Laplacian of the frame's grey image. Its
   absolute value depends on the scene's texture, so each frame is scored relative to its neighbours (the
   frame's variance over the 75th percentile of the variances in a window of about one second around it):
   ``blur`` = 1 for a frame as sharp as the sharp ones around it, and a frame below ``blur_ratio`` is dropped.
2. ``duplicate``: a frame that shows little motion since the last frame kept so far (the median optical
   flow of tracked corners, as a share of the thumbnail's diagonal, below ``min_motion``): a camera held
   still, or a frame the encoder repeated, adds no view.
3. ``spacing``: of the frames left, ``target`` are kept, spread evenly over the camera's accumulated motion
   (not over time: a pause in the video gets no frames), the sharpest one in each stretch.

The kept frames are written as ``NNNNN.jpg`` (NNNNN the 0-based index of the frame in the video), so that
they sort in time order: the sfm stage then matches them sequentially (``sfm.matcher: auto``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts.reports import write_report
from .artifacts.video import VideoInfo, decode_frames, probe_video, write_frame
from .errors import StageError
from .photos import FRAMES_KIND, VIDEO_SUFFIXES
from .progress import Progress

log = logging.getLogger(__name__)

THUMB_SIZE = 320
"""Long side (px) of the grey thumbnails the motion between frames is measured on."""
BLUR_SIZE = 960
"""Long side (px) of the grey image the blur score is computed on (finer detail is mostly noise)."""
MIN_FRAMES = 20


# ---------------------------------------------------------------------------------------------- scores
def _grey(rgb: np.ndarray, long_side: int) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    s = long_side / max(g.shape)
    if s < 1:
        g = cv2.resize(g, (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s))), interpolation=cv2.INTER_AREA)
    return g


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for sharp detail, low for a blurred picture."""
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


def relative_blur_at(scores: list[float] | np.ndarray, i: int, window: int) -> float:
    """Score ``i`` over the 75th percentile of the scores within ``window`` frames on either side (the sharp
    frames nearby): about 1 for a sharp frame, well below 1 for a blurred one."""
    ref = float(np.percentile(np.asarray(scores[max(0, i - window) : i + window + 1], dtype=np.float64), 75))
    return float(scores[i]) / ref if ref > 0 else 1.0


def relative_blur(scores: np.ndarray, window: int) -> np.ndarray:
    """:func:`relative_blur_at` of every frame."""
    return np.array([relative_blur_at(scores, i, window) for i in range(len(scores))])


def motion(a: np.ndarray, b: np.ndarray, corners: np.ndarray | None = None) -> float:
    """How far the picture moved from thumbnail ``a`` to ``b``: the median length of the optical flow (LK) of
    corners tracked from ``a``, as a share of the diagonal. Without trackable corners, the mean absolute
    grey difference stands in (0 for identical pictures)."""
    import cv2

    diag = float(np.hypot(*a.shape))
    if corners is None:
        corners = cv2.goodFeaturesToTrack(a, maxCorners=300, qualityLevel=0.01, minDistance=5)
    if corners is not None and len(corners) >= 8:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, winSize=(21, 21), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() >= max(8, len(corners) // 4):
            return float(np.median(np.linalg.norm((moved - corners).reshape(-1, 2)[ok], axis=1)) / diag)
        return 1.0  # most corners lost: the picture changed completely
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)


@dataclass
class Selection:
    kept: list[int]
    reasons: dict[int, str]
    blur: dict[int, float]


class FrameSelector:
    """Steps 1 and 2 of the module doc frame by frame (``push`` in video order), keeping one thumbnail (the last
    retained frame's), then step 3 over the retained frames (``finish``)."""

    def __init__(self, *, blur_ratio: float, min_motion: float):
        self.blur_ratio, self.min_motion = blur_ratio, min_motion
        self.reasons: dict[int, str] = {}
        self.blur: dict[int, float] = {}
        self.retained: list[int] = []
        self.travelled: list[float] = []  # camera motion accumulated up to each retained frame
        self._last: np.ndarray | None = None
        self._corners = None
        self._total = 0.0

    def push(self, index: int, blur: float, thumb: np.ndarray) -> None:
        import cv2

        self.blur[index] = blur
        if blur < self.blur_ratio:
            self.reasons[index] = "blurred"
            return
        if self._last is not None:
            m = motion(self._last, thumb, self._corners)
            if m < self.min_motion:
                self.reasons[index] = "duplicate"
                return
            self._total += m
        self.retained.append(index)
        self.travelled.append(self._total)
        self._last = thumb
        self._corners = cv2.goodFeaturesToTrack(thumb, maxCorners=300, qualityLevel=0.01, minDistance=5)

    def finish(self, target: int) -> Selection:
        """``target`` of the retained frames over equal stretches of accumulated motion, the sharpest of each."""
        kept = list(self.retained)
        if len(kept) > target:
            t = np.asarray(self.travelled)
            edges = np.linspace(t[0], t[-1] + 1e-12, target + 1)
            bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, target - 1)
            chosen = []
            for b in range(target):
                members = [r for r, bb in zip(self.retained, bins) if bb == b]
                if members:
                    chosen.append(max(members, key=lambda r: self.blur[r]))
            kept = sorted(chosen)
            for r in set(self.retained) - set(kept):
                self.reasons[r] = "spacing"
        for k in kept:
            self.reasons[k] = "kept"
        return Selection(kept, dict(self.reasons), dict(self.blur))


def select_frames(
    blur: np.ndarray, thumbs: list[np.ndarray], *, target: int, blur_ratio: float, min_motion: float
) -> Selection:
    """Which frames to keep, given each frame's relative blur score and thumbnail (see the module doc)."""
    selector = FrameSelector(blur_ratio=blur_ratio, min_motion=min_motion)
    for i, (b, th) in enumerate(zip(blur, thumbs)):
        selector.push(i, float(b), th)
    return selector.finish(target)


# ------------------------------------------------------------------------------------------------ stage
REASONS = {
    "kept": "sharp, distinct, and chosen for the target count",
    "blurred": "blur score (variance of the Laplacian over that of the sharp frames around it) below blur_ratio",
    "duplicate": "little motion since the last kept frame (median optical flow below min_motion of the diagonal)",
    "spacing": "sharp and distinct, but not needed: the target count is spread over the camera's motion",
}


def _check_settings(video: Path, target: int, min_frames: int, blur_ratio: float) -> None:
    """A StageError naming the setting for counts below 1 or out of order, a blur ratio outside (0, 1) or a
    file that is not named as a video."""
    if target < 1 or min_frames < 1:
        raise StageError(f"frames.target ({target}) and frames.min ({min_frames}) must be at least 1")
    if min_frames > target:
        raise StageError(
            f"frames.min ({min_frames}) is above frames.target ({target}); lower frames.min or raise frames.target"
        )
    if not 0 < blur_ratio < 1:
        raise StageError(f"frames.blur_ratio {blur_ratio}: give a share between 0 and 1 (default 0.5)")
    if video.suffix.lower() not in VIDEO_SUFFIXES:
        raise StageError(f"{video}: not a video file name (accepted: {', '.join(sorted(VIDEO_SUFFIXES))})")


def _probe(video: Path) -> VideoInfo:
    """:func:`probe_video`, logged."""
    info = probe_video(video)
    log.info(
        "video %s: %s frames, %s fps, %dx%d after a rotation of %d deg, codec %s",
        video,
        info.frames or "?",
        f"{info.fps:.3g}" if info.fps else "?",
        info.width,
        info.height,
        info.rotation,
        info.codec,
    )
    return info


def _score_frames(video: Path, n_frames: int | None, selector: FrameSelector, window: int) -> int:
    """The first pass: every frame decoded, scored and pushed to ``selector`` (its blur score once the
    ``window`` frames after it are decoded); the number of frames."""
    scores: list[float] = []
    pending: deque[tuple[int, np.ndarray]] = deque()  # thumbnails whose blur score waits for later frames
    with Progress("decoding the video", n_frames, "frames") as bar:
        for i, rgb in decode_frames(video):
            scores.append(laplacian_variance(_grey(rgb, BLUR_SIZE)))
            pending.append((i, _grey(rgb, THUMB_SIZE)))
            while pending and pending[0][0] + window < len(scores):
                j, thumb = pending.popleft()
                selector.push(j, relative_blur_at(scores, j, window), thumb)
            bar.update()
    for j, thumb in pending:
        selector.push(j, relative_blur_at(scores, j, window), thumb)
    return len(scores)


def _selection(
    video: Path, selector: FrameSelector, n: int, target: int, min_frames: int
) -> tuple[Selection, dict[str, int]]:
    """The frames kept of the ``n`` scored ones and the count of each reason; a StageError (with the counts
    and what to do) when the video holds fewer than ``min_frames`` usable frames."""
    if n < min_frames:
        raise StageError(
            f"{video}: holds only {n} frame(s), fewer than the minimum of {min_frames}; film the object "
            f"longer, all around it, or lower frames.min"
        )
    sel = selector.finish(target)
    counts = {r: sum(1 for v in sel.reasons.values() if v == r) for r in REASONS}
    if len(sel.kept) < min_frames:
        raise StageError(
            f"{video}: only {len(sel.kept)} usable frame(s) of {n} ({counts['blurred']} blurred, {counts['duplicate']} "
            f"near-duplicates), fewer than the minimum of {min_frames}; film more slowly and steadily in good light "
            "(less motion blur), move around the object rather than holding still, or lower frames.min "
            "(frames.blur_ratio and frames.min_motion set what counts as blurred and as a duplicate)"
        )
    return sel, counts


def _write_kept(video: Path, out_dir: Path, kept: list[int], quality: int) -> None:
    """The second pass: the kept frames written to ``out_dir`` (it starts over, so no stale frame is left)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    keep = set(kept)
    with Progress("writing the kept frames", len(keep), "frames") as bar:
        for i, rgb in decode_frames(video):
            if i in keep:
                write_frame(out_dir, i, rgb, quality)
                bar.update()
            if i >= max(keep):
                break


def _report(info: VideoInfo, n: int, sel: Selection, counts: dict[str, int], settings: dict, timings: dict) -> dict:
    """report.json: the video, the settings, and every frame with its blur score and the reason it was kept
    or dropped."""

    def item(i: int) -> dict:
        return {"frame": i, "blur": round(float(sel.blur[i]), 3), "reason": sel.reasons[i]}

    keep = set(sel.kept)
    return {
        "kind": FRAMES_KIND,
        "video": str(info.path),
        "n_frames": n,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "size": [info.width, info.height],
        "rotation_deg": info.rotation,
        "codec": info.codec,
        "settings": settings,
        "counts": counts,
        "reasons": REASONS,
        "kept": [item(i) for i in sel.kept],
        "dropped": [item(i) for i in range(n) if i not in keep],
        "timings": timings,
    }


def extract_frames(
    video: Path,
    out_dir: Path,
    *,
    target: int = 80,
    min_frames: int = MIN_FRAMES,
    blur_ratio: float = 0.5,
    min_motion: float = 0.002,
    quality: int = 95,
) -> dict:
    """The frames stage: decode ``video``, keep sharp, distinct frames, write ``out_dir/NNNNN.jpg`` and
    ``out_dir/report.json``; returns the report. StageErrors for a video that does not decode or holds fewer
    than ``min_frames`` usable frames (with the counts and what to do)."""
    video, out_dir = Path(video), Path(out_dir)
    _check_settings(video, target, min_frames, blur_ratio)
    t0 = time.perf_counter()
    info = _probe(video)
    window = max(3, round((info.fps or 30.0) / 2))
    selector = FrameSelector(blur_ratio=blur_ratio, min_motion=min_motion)
    n = _score_frames(video, info.frames, selector, window)
    t_decode = time.perf_counter() - t0
    sel, counts = _selection(video, selector, n, target, min_frames)
    _write_kept(video, out_dir, sel.kept, quality)
    settings = {
        "target": target,
        "min": min_frames,
        "blur_ratio": blur_ratio,
        "min_motion": min_motion,
        "blur_window_frames": window,
    }
    timings = {"decode_s": round(t_decode, 2), "total_s": round(time.perf_counter() - t0, 2)}
    report = _report(info, n, sel, counts, settings, timings)
    write_report(out_dir / "report.json", report)
    log.info(
        "frames: kept %d of %d (%d blurred, %d near-duplicates, %d not needed for the target of %d) in %.1f s",
        len(sel.kept),
        n,
        counts["blurred"],
        counts["duplicate"],
        counts["spacing"],
        target,
        report["timings"]["total_s"],
    )
    return report
