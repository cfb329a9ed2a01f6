"""The masks stage: foreground masks from rembg (offline, from the project's model folder, see
:mod:`neus_stage.masks_rembg`), from the SfM points (:mod:`neus_stage.segment`) or the user's
(:mod:`neus_stage.masks_user`), checked and made consistent across views with a voting visual hull in the SfM
frame (:mod:`neus_stage.masks_check`).

Outputs in ``out_dir``: ``<stem>.png`` (uint8 0/255, the size of each image), ``report.json`` and a contact
sheet ``overlay.jpg`` (a .jpg so it never matches the ``*.png`` mask glob).

Multi-view consistency (with ``sfm_dir``, or known ``cameras``): every view votes on a voxel grid around the
object (the region that most views call foreground, around where the cameras converge, or the cameras'
bounding sphere); a voxel is occupied when, of the views that see it, at most a small share call it
background. The hull is projected back into each view:

- rembg masks: a consistent view keeps its own fine boundary, restricted to the slightly dilated hull (drops
  background blobs the other views reject); an outlier (object cut by the frame, filling it, found only in
  part) also gets back what it lost, from the hull of the consistent views.
- user masks are taken as given (only undistorted and checked); their agreement is reported.

Measured on rendered hard scenes (tests/test_hard_scenes.py): the ``parts`` scene's worst rembg view
(IoU 0.45, a whole part missed) comes out at 0.96; scenes where rembg is already right stay within 0.01.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .artifacts.dataset import read_cameras_sphere, write_mask
from .artifacts.reports import write_report
from .artifacts.sfm import read_sfm_cameras
from .errors import StageError
from .geometry.cameras import CameraSet
from .masks_candidates import Candidates, chosen_masks, judged_candidates
from .masks_check import MaskViews, check_consistency, degenerate
from .masks_user import load_user_masks, refuse_bad_user_masks
from .photos import displayed_size, list_photos, read_photo
from .threads import map_views

log = logging.getLogger(__name__)

MODES = ("auto", "rembg", "geometry", "user", "none")


# ------------------------------------------------------------------------------------------ cameras
def views_from_sfm(sfm_dir: Path, stems: list[str], sizes: dict[str, tuple[int, int]]) -> MaskViews:
    """The registered views among ``stems`` (in that order) from ``sfm_dir/undistorted/sparse``."""
    cams, rec = read_sfm_cameras(Path(sfm_dir))
    registered = [s for s in stems if s in cams.names]
    for s in registered:
        if sizes[s] != (cams.width, cams.height):
            raise StageError(
                f"image {s} is {sizes[s][0]}x{sizes[s][1]} but the sfm camera is {cams.width}x{cams.height}; "
                "with --sfm, mask the undistorted images (<sfm>/undistorted/images)"
            )
    return MaskViews.of(cams.subset(registered), rec)


def views_from_cameras_sphere(
    path: Path, stems: list[str], size: tuple[int, int]
) -> tuple[MaskViews, np.ndarray, np.ndarray]:
    """Views from a NeuS ``cameras_sphere.npz`` (view i = ``stems[i]``, the sorted images of ``size`` (w, h))
    and the box around its scale_mat sphere, which holds the object."""
    world_mats, scale_mat = read_cameras_sphere(path, n_views=len(stems))
    c, r = scale_mat[:3, 3], scale_mat[0, 0]
    return MaskViews(CameraSet.from_world_mats(stems, world_mats, *size)), c - r, c + r


# ------------------------------------------------------------------------------------------- inputs
def _checked_mode(
    mode: str, threshold: float, user_masks: Path | None, sfm_dir: Path | None, cameras: Path | None
) -> str:
    """The mode to run (``auto`` with the user's masks is ``user``); a StageError for arguments that clash."""
    if mode not in MODES:
        raise StageError(f"unknown masks mode '{mode}'; choose one of {', '.join(MODES)}")
    if not 0.0 < threshold < 1.0:
        raise StageError(f"threshold must lie between 0 and 1, got {threshold}")
    if sfm_dir is not None and cameras is not None:
        raise StageError("give either an sfm folder or reference cameras for the multi-view check, not both")
    if mode == "user" and user_masks is None:
        raise StageError("masks mode 'user' needs a mask folder (the scene table's 'masks' column, or --user-masks)")
    return "user" if user_masks is not None and mode == "auto" else mode


def _image_sizes(images: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """(width, height) of each image as displayed (EXIF orientation applied), from the headers."""
    return {s: displayed_size(p) for s, p in images.items()}


def _read_views(
    images: dict[str, Path], sizes: dict[str, tuple[int, int]], sfm_dir: Path | None, cameras: Path | None
) -> tuple[MaskViews | None, tuple[np.ndarray, np.ndarray] | None]:
    """The views' cameras (reference ``cameras`` or the sfm stage's) and, for reference cameras, the box that
    holds the object; (None, None) without either."""
    if cameras is not None:
        views, lo, hi = views_from_cameras_sphere(Path(cameras), list(images), sizes[next(iter(images))])
        return views, (lo, hi)
    if sfm_dir is not None:
        return views_from_sfm(Path(sfm_dir), list(images), sizes), None
    return None, None


def _views_for(
    mode: str,
    multiview: bool,
    images: dict[str, Path],
    sizes: dict[str, tuple[int, int]],
    sfm_dir: Path | None,
    cameras: Path | None,
) -> tuple[MaskViews | None, tuple[np.ndarray, np.ndarray] | None]:
    """The views (and reference cameras' object box) the mode needs: for the multi-view check, or to seed
    geometry masks (a StageError where those have no SfM points); (None, None) where it needs none."""
    views, region = None, None
    if (multiview or mode == "geometry") and mode != "none":
        views, region = _read_views(images, sizes, sfm_dir, cameras)
    if mode == "geometry" and not (views is not None and views.has_points):
        raise StageError(
            "masks mode 'geometry' seeds the masks with SfM points: it needs poses from sfm (a scene with "
            "reference cameras has none); use masks mode auto, rembg or user"
        )
    return views, region


# ---------------------------------------------------------------------------------------- user masks
def _user_masks(
    user_masks: Path,
    images: dict[str, Path],
    sizes: dict[str, tuple[int, int]],
    sfm_dir: Path | None,
    views: MaskViews | None,
    region,
    report: dict,
) -> tuple[dict[str, np.ndarray], str, dict | None]:
    """The user's masks, checked against the views' hull (never changed): (masks, why, consistency report)."""
    masks, report["user_masks_undistorted"] = load_user_masks(Path(user_masks), images, sizes, sfm_dir)
    refuse_bad_user_masks(masks, Path(user_masks))
    if views is None:
        return masks, "the user's masks", None
    _, empty, full = degenerate(masks)
    check = check_consistency(views, masks, empty + full, region)
    report["candidates"]["user"] = check.summary()
    if not check.passed:
        raise StageError(
            f"{user_masks}: {check.failure()}; the masks do not outline one object seen from every photo: "
            "check the masks (names, order, which photo each belongs to) or leave the 'masks' column empty "
            "to compute them"
        )
    return masks, "the user's masks", check.unadjusted()


# -------------------------------------------------------------------------------------------- outputs
def _write_candidates(cands: Candidates, candidates_dir: Path) -> None:
    """Every candidate as it was judged (``<candidate>/<stem>.png``), to see why one was chosen."""
    folder = Path(candidates_dir)
    jobs = [(folder / name / f"{stem}.png", m) for name, masks in cands.masks.items() for stem, m in masks.items()]
    map_views(lambda job: write_mask(*job), jobs)  # PNG encoding releases the GIL: one mask per core


def _contact_sheet(images: dict[str, Path], masks: dict[str, np.ndarray], path: Path, n_max: int = 16) -> None:
    stems = list(images)
    if len(stems) > n_max:
        stems = [stems[i] for i in np.linspace(0, len(stems) - 1, n_max).round().astype(int)]
    thumbs = []
    for s in stems:
        img = read_photo(images[s]).astype(np.float32)
        m = masks[s]
        img[~m] = 0.35 * img[~m] + 0.65 * np.array([255, 0, 0], np.float32)
        t = Image.fromarray(img.astype(np.uint8))
        t.thumbnail((200, 200))
        thumbs.append(t)
    cols = min(4, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    tw = max(t.width for t in thumbs)
    th = max(t.height for t in thumbs)
    sheet = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    for i, t in enumerate(thumbs):
        sheet.paste(t, ((i % cols) * tw, (i // cols) * th))
    sheet.save(path, quality=85)


def _clear_masks(out_dir: Path) -> None:
    """Create ``out_dir`` and remove the masks an earlier run left in it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()


def _write_masks(out_dir: Path, images: dict[str, Path], final: dict[str, np.ndarray]) -> None:
    map_views(lambda item: write_mask(out_dir / f"{item[0]}.png", item[1]), list(final.items()))
    with contextlib.suppress(Exception):  # the contact sheet is a convenience, never a failure
        _contact_sheet(images, final, out_dir / "overlay.jpg")


def _log_done(final: dict[str, np.ndarray] | None, mode: str, why: str, seconds: float) -> None:
    if final is None:
        log.info("masks done in %.1f s: none (%s)", seconds, why)
    else:
        log.info(
            "masks done in %.1f s: %d views, mode %s (%s), mean foreground share %.3f",
            seconds,
            len(final),
            mode,
            why,
            float(np.mean([m.mean() for m in final.values()])),
        )


# ------------------------------------------------------------------------------------------- report
def _new_report(images_dir: Path, n_images: int, requested: str, threshold: float) -> dict:
    """The report's fields known before any mask is computed (the candidates' judgements are added to it)."""
    return {
        "images_dir": str(images_dir),
        "n_images": n_images,
        "mode_requested": requested,
        "threshold": threshold,
        "model": None,
        "user_masks_undistorted": 0,
        "candidates": {},
    }


def _outcome(
    mode: str, why: str, final: dict[str, np.ndarray] | None, consistency: dict | None, timings: dict[str, float]
) -> dict:
    """The report's fields on the masks written: their source, why, foreground shares, consistency, timings."""
    return {
        "mode": mode,
        "why": why,
        "source": {"user": "user", "rembg": "rembg", "geometry": "geometry", "none": None}[mode],
        "final_foreground_share": None if final is None else {s: round(float(m.mean()), 5) for s, m in final.items()},
        "consistency": consistency,
        "timings": timings,
    }


# ----------------------------------------------------------------------------------------------- stage
def compute_masks(
    images_dir: Path,
    out_dir: Path,
    *,
    mode: str = "auto",
    model: str = "u2netp",
    user_masks: Path | None = None,
    sfm_dir: Path | None = None,
    cameras: Path | None = None,
    threshold: float = 0.5,
    multiview: bool = True,
    candidates_dir: Path | None = None,
) -> dict:
    """Write ``out_dir/<stem>.png`` (0/255) for every image of ``images_dir`` and ``out_dir/report.json``.

    ``mode``: ``user`` (the masks of ``user_masks``, one ``<stem>.<ext>`` per image; masks of the original
    photos are undistorted with the camera of ``sfm_dir``), ``rembg`` (``model``, loaded offline),
    ``geometry`` (seeded by the SfM points, see :mod:`neus_stage.segment`), ``none`` (no masks: training
    models the background), or ``auto``: the user's masks where given, else rembg where its masks are
    consistent across views and agree with the SfM points, else the fused (rembg + geometry) masks where
    rembg's passed the multi-view check, or the more consistent of those and the geometry-seeded ones where
    they did not, else none. With ``multiview`` and cameras (``sfm_dir``, or a NeuS
    ``cameras`` file, view i = the i-th sorted image), masks are checked against a voting visual hull of all
    views and repaired. With ``candidates_dir``, every candidate's masks (``rembg``, ``geometry``, ``fused``)
    are also written there as ``<candidate>/<stem>.png``, before any repair. An explicit mode that cannot be
    honoured is a StageError; ``auto`` goes on without masks and says why (in the log, on the terminal and in
    ``report.json``).
    """
    t0 = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    mode = requested = _checked_mode(mode, threshold, user_masks, sfm_dir, cameras)
    images = {p.stem: p for p in list_photos(images_dir, min_photos=1)}
    sizes = _image_sizes(images)
    _clear_masks(out_dir)
    views, region = _views_for(mode, multiview, images, sizes, sfm_dir, cameras)

    report = _new_report(images_dir, len(images), requested, threshold)
    timings: dict[str, float] = {}
    final, why, consistency = None, "masks mode none: the scene is trained without masks", None
    t = time.perf_counter()
    if mode == "user":
        final, why, consistency = _user_masks(user_masks, images, sizes, sfm_dir, views, region, report)
    elif mode != "none":
        cands = judged_candidates(mode, model, threshold, images, sizes, views, region, report, timings)
        if candidates_dir is not None:
            _write_candidates(cands, candidates_dir)
        final, mode, why, consistency = chosen_masks(cands, mode, multiview, report)
    timings["masks_s"] = round(time.perf_counter() - t, 2)

    if final is not None:
        _write_masks(out_dir, images, final)
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    report.update(_outcome(mode, why, final, consistency, timings))
    write_report(out_dir / "report.json", report)
    _log_done(final, mode, why, timings["total_s"])
    return report
