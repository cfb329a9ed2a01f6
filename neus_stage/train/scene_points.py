"""The scene's own 3-D points as training signal (``point_weight``): the photos' stereo, which COLMAP solved
before training, pins the SDF where the colour loss alone is slow to carve, such as the inside of a deep cup
that only the high views see (Geo-NeuS's explicit SDF supervision, with free space along the lines of sight).

Two terms on the points of hull.npz that lie in the visual hull and off the support plane (less every
holdout_every-th, which the quality check measures instead), and on the plane sweep's points (sweep.py,
``sweep_pixels``; all trained on):

- **surface**: |sdf| at the points (their zero level);
- **free space**: where it is known which training views observe a point (SfM tracks, the sweep's agreeing
  views), the segment from the point towards each such camera is empty, so ``relu(clearance - sdf)`` at a
  random spot of it, from a margin in front of the point to where the segment leaves the box (what blocks
  an observed point's line of sight cannot be there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifacts.box import held_out_points, read_hull_file
from ..geometry.grid_lookup import grow, in_grid
from .config import TrainConfig

log = logging.getLogger(__name__)

SIGHT_MARGIN = 0.01
"""Free space starts this share of the box's diagonal in front of the point (its triangulation error and
the surface's own band stay free of the term)."""
CLEARANCE = 0.5
"""... and asks for an SDF of at least this share of that margin on the line (a surface just behind the
spot is not free space either: a plain sign test lets the zero level settle a hair behind every spot, which
is where a filled cup's false lid sits)."""


@dataclass
class ScenePoints:
    """Surface points (M,3) and lines of sight (K,): a start at a point, the unit direction to an observing
    camera, the free length from the margin to the box's side or the camera, normalised frame, on the device."""

    xyz: torch.Tensor
    sight_o: torch.Tensor
    sight_d: torch.Tensor
    sight_len: torch.Tensor
    clearance: float = 0.0


def _lines_of_sight(
    x: np.ndarray, views: np.ndarray, centres: np.ndarray, box_min: np.ndarray, box_max: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, direction, free length) of each (point, observing camera) pair with room for free space."""
    i, j = np.nonzero(views)
    d = centres[j] - x[i]
    dist = np.linalg.norm(d, axis=1)
    d = d / np.maximum(dist, 1e-12)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (box_max - x[i]) / d, np.where(d < 0, (box_min - x[i]) / d, np.inf))
    margin = SIGHT_MARGIN * float(np.linalg.norm(box_max - box_min))
    length = np.minimum(t.min(1), dist) - margin
    ok = length > 0
    return x[i][ok] + margin * d[ok], d[ok], length[ok]


def scene_points(
    cfg: TrainConfig,
    hull_path: Path | None,
    hull: np.ndarray | None,
    box_min: np.ndarray,
    box_max: np.ndarray,
    centres: np.ndarray,
    train_ids: list[int],
    device: torch.device,
    dense: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScenePoints | None:
    """For point_weight > 0: the points and lines of sight (see the module docstring) of ``hull_path``;
    ``centres`` (V,3): the dataset's camera centres (normalised frame, the views of hull.npz's
    ``support_views``), of which ``train_ids`` train; ``dense``: more points (normalised frame) and the views
    observing each (sweep.py), used for training only. None where there are no points."""
    if cfg.point_weight <= 0 or hull_path is None or hull is None:
        return None
    h = read_hull_file(Path(hull_path))
    grown = grow(hull, 1)
    n_dense = len(dense[0]) if dense is not None else 0
    x, ok, views = np.zeros((0, 3)), np.zeros(0, dtype=bool), None
    if h.support_points is not None and h.scale_mat is not None and len(h.support_points):
        x = (h.support_points - h.scale_mat[:3, 3]) / h.scale_mat[0, 0]
        ok = in_grid(x, grown, box_min, box_max)
        if h.support_inliers is not None:
            ok &= ~h.support_inliers
        ok &= ~held_out_points(len(x), cfg.holdout_every)  # kept for the quality check
        views = h.support_views
    elif not n_dense:
        log.info("point_weight: %s holds no scene points; training without the point terms", hull_path)
        return None
    if views is not None and views.shape[1] != len(centres):
        log.warning(
            "%s: support_views has %d views, the dataset %d; no free-space term for its points",
            hull_path,
            views.shape[1],
            len(centres),
        )
        views = None
    n_hull = len(x)
    if n_dense:
        inside = in_grid(dense[0], grown, box_min, box_max)
        known = views if views is not None else np.zeros((len(x), len(centres)), dtype=bool)
        x = np.concatenate([x, dense[0][inside]])
        views = np.concatenate([known, dense[1][inside]])
        ok = np.concatenate([ok, np.ones(int(inside.sum()), dtype=bool)])
    if not ok.any():
        return None
    o = d = length = np.zeros((0, 3))
    if views is not None:
        o, d, length = _lines_of_sight(x[ok], views[ok][:, train_ids], centres[train_ids], box_min, box_max)
    log.info(
        "point terms: %d of the %d scene points (in the visual hull, off the support%s) and %d of the %d sweep "
        "points, %d lines of sight",
        ok[:n_hull].sum(),
        n_hull,
        f", every {cfg.holdout_every}th held out" if cfg.holdout_every > 0 else "",
        ok[n_hull:].sum(),
        n_dense,
        len(length),
    )
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)  # noqa: E731
    clear = CLEARANCE * SIGHT_MARGIN * float(np.linalg.norm(box_max - box_min))
    return ScenePoints(t(x[ok]), t(o).reshape(-1, 3), t(d).reshape(-1, 3), t(length).reshape(-1), clear)


def point_sdf(
    model, points: ScenePoints | None, n: int, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The SDF at ``n`` random surface points, and at ``n`` random spots of random lines of sight less the
    clearance they need (all where there are fewer; free space is violated where negative); None without
    points."""
    if points is None:
        return None
    xyz = points.xyz
    dev = xyz.device
    if len(xyz) > n:
        xyz = xyz[torch.randint(len(xyz), (n,), generator=gen, device=dev)]
    k = len(points.sight_len)
    if k:
        pick = torch.randint(k, (min(n, k),), generator=gen, device=dev) if k > n else torch.arange(k, device=dev)
        u = torch.rand(len(pick), generator=gen, device=dev)
        free = points.sight_o[pick] + (u * points.sight_len[pick])[:, None] * points.sight_d[pick]
        sdf = model.sdf(torch.cat([xyz, free]))
        return sdf[: len(xyz)], sdf[len(xyz) :] - points.clearance
    return model.sdf(xyz), xyz.new_zeros(0)
