"""Voting visual hulls: one carver for the visual-hull stage and the masks stage's multi-view check.

Each view is a callable that takes points (M,3) and says, for each, whether the view sees it (it projects
inside the image, in front of the camera) and whether its mask calls it foreground there. Every voxel
collects ``seen`` and ``background`` counts; a voxel that more views call background than any later rule
could allow (``most_allowed``) is carved at once and projected into no further view, which is what makes
a 128^3 hull over 50 views cost seconds. The callers project with :func:`.cameras.project` and decide the
mask (dilated or not) and which counts make a voxel occupied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

PARALLEL_POINTS = 100_000
"""Grids of at least this many points are voted on several threads."""

View = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""points (M,3) -> (seen (M,) bool, foreground (M,) bool)."""


def vote(
    points: np.ndarray, views: Iterable[View], most_allowed: int, dtype: type = np.int32
) -> tuple[np.ndarray, np.ndarray]:
    """(seen, background) counts (N,) of ``points`` over ``views``; a point's counts stop once more than
    ``most_allowed`` views have called it background (it is carved whatever the others say). Large grids are
    voted in one block of points per core (threads: the projections and lookups release the GIL)."""
    from ..threads import map_views, workers

    views = list(views)
    n = workers() if len(points) >= PARALLEL_POINTS else 1
    if n == 1:
        return _vote(points, views, most_allowed, dtype)
    blocks = np.array_split(np.arange(len(points)), n)
    parts = map_views(lambda idx: _vote(points[idx], views, most_allowed, dtype), blocks)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _vote(points: np.ndarray, views: list[View], most_allowed: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    seen = np.zeros(len(points), dtype)
    background = np.zeros(len(points), dtype)
    alive = np.arange(len(points))
    pts = points
    for look in views:
        inside, fg = look(pts)
        seen[alive] += inside
        background[alive] += inside & ~fg
        keep = background[alive] <= most_allowed
        if not keep.all():
            alive, pts = alive[keep], pts[keep]
    return seen, background
