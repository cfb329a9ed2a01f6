"""The support surface an object stands on: a plane of the scene's 3D points below the object.

No camera sees under an object that stands on a table, so its visual hull (and any surface trained
inside it) continues below the base as a cone; the table itself bounds the object. This module finds
that table as a plane, from points (SfM points, or points triangulated with known cameras) and cameras,
with no knowledge of the object: it is a pure function of arrays.

The plane is ``normal @ x + offset = 0`` with ``normal`` pointing to the cameras' side ("up"), so that
``height(x) = normal @ x + offset`` is positive above the table. A plane counts as the support when

- every camera lies above it (photos of an object on a table are taken from above the table),
- it tilts at most ``max_tilt_deg`` from the cameras' up direction (walls are not supports),
- it is flat: its points spread about it by at most ``MAX_SPREAD`` times their own noise (a slab through
  a curved, densely textured object spreads much more than its points' local noise),
- it holds at least ``min_share`` of the points and more points than lie below it (a table top, not the
  flat top of the object or a shelf above it),
- no other plane of comparable size (``ambiguous_ratio``) and another orientation is in view (an object
  in a corner, or two tables): then no single plane bounds the object and none is returned.

Tolerances come from the data: each point's own noise is the distance of its nearest neighbours to their
local plane (at most ``band`` of the cameras' distance to the points). Residuals are measured in units of
that noise: a point is an inlier within three of its own noise, so the floor far from the cameras,
triangulated far less precisely than the object near them, keeps its points while the object's base,
precise and just above the floor, stays out; the fit is a robust (biweight) weighted least squares.

The up prior comes from the cameras alone: photos are taken upright, so every camera's x axis (image
right) is horizontal and the up direction is the direction most perpendicular to all of them (for a ring
of cameras this is the ring's normal; unlike the ring normal it also holds for cameras on one side of the
object, as DTU's), oriented by the cameras' own up vectors (minus the camera y axis).

This module holds the search and its answer; each candidate plane (the plane type :class:`SupportPlane`, its
measures and the tests above) is :mod:`neus_stage.geometry.support_candidates`, the fits
:mod:`neus_stage.geometry.support_fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .support_candidates import (
    MIN_POINTS,
    Candidate,
    CandidateSearch,
    SupportPlane,
    next_candidate,
    start_search,
    support_candidates,
)


@dataclass
class SupportSearch:
    """What :func:`find_support` found: the plane (or None) and why, with every candidate plane."""

    plane: SupportPlane | None
    reason: str  # "plane", "too few points", "no plane", "two planes"
    message: str  # one sentence for logs and reports
    up: np.ndarray  # the cameras' up prior (3,)
    up_source: str  # how the prior was found
    scale: float  # median camera distance to the points (the unit of the tolerances)
    candidates: list[dict] = field(default_factory=list)
    band: float = 0.0  # three times the points' median own noise (how far above a plane the cameras must be)
    alternatives: list[SupportPlane] = field(default_factory=list)  # other qualifying planes, largest first

    def to_json(self) -> dict:
        return {
            "found": self.plane is not None,
            "reason": self.reason,
            "message": self.message,
            "up_prior": [float(v) for v in self.up],
            "up_source": self.up_source,
            "scale": float(self.scale),
            "band": float(self.band),
            "candidates": self.candidates,
            **({"plane": self.plane.to_json()} if self.plane else {}),
        }


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def up_prior(
    camera_centers: np.ndarray, camera_up: np.ndarray | None = None, points: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """The cameras' up direction (unit (3,)) and how it was found.

    With up vectors: the direction most perpendicular to every camera's x axis (x = forward x (-up) with
    forward from each camera towards the median of ``points``), oriented by the mean up vector; where the
    x axes do not span a plane (all cameras at one azimuth) the mean up vector itself. Without up vectors:
    the normal of the plane through the camera centres (a ring), oriented so the cameras are above the
    points' median.
    """
    C = np.asarray(camera_centers, dtype=np.float64).reshape(-1, 3)
    target = np.median(points, axis=0) if points is not None and len(points) else C.mean(0)
    if camera_up is not None:
        U = np.asarray(camera_up, dtype=np.float64).reshape(-1, 3)
        U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        mean_up = _unit(U.sum(0))
        fwd = target - C
        fwd = fwd / np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-12)
        X = np.cross(fwd, U)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        w, V = np.linalg.eigh(X.T @ X)
        if len(C) >= 3 and w[0] <= 0.2 * w[1]:
            v = V[:, 0]
            return (v if v @ mean_up >= 0 else -v), "perpendicular to the cameras' x axes"
        return mean_up, "mean of the cameras' up vectors"
    if len(C) < 3:
        return np.array([0.0, 0.0, 1.0]), "default +z (fewer than 3 cameras)"
    _, _, Vt = np.linalg.svd(C - C.mean(0))
    v = Vt[2]
    return (v if v @ (C.mean(0) - target) >= 0 else -v), "normal of the camera ring"


def _result(
    s: CandidateSearch,
    plane: SupportPlane | None,
    reason: str,
    message: str,
    candidates: list[Candidate],
    alternatives: list[SupportPlane] | None = None,
) -> SupportSearch:
    """The search's answer, with every candidate's record."""
    records = [c[0] for c in candidates]
    return SupportSearch(plane, reason, message, s.up, s.up_source, s.scale, records, s.tau0, alternatives or [])


def _rank_qualified(candidates: list[Candidate]) -> list[SupportPlane]:
    """The candidates that qualify as a support, largest first; the largest's role becomes "support"."""
    qualified = [(i, pl) for i, (info, pl) in enumerate(candidates) if info["role"] == "qualifies"]
    qualified.sort(key=lambda t: -t[1].inlier_share)
    for k, (i, _) in enumerate(qualified):
        candidates[i][0]["role"] = "support" if k == 0 else "qualifies (smaller)"
    return [pl for _, pl in qualified]


def _rival_message(
    s: CandidateSearch,
    candidates: list[Candidate],
    avail: np.ndarray,
    best: SupportPlane,
    max_tilt_deg: float,
    ambiguous_ratio: float,
) -> str | None:
    """Rivals, of any orientation, among the points no support candidate explains (appended to
    ``candidates``): the message where one would bound the object as well as ``best`` (a corner's wall:
    flat, nothing seen behind it, the cameras on one side), of comparable size and another orientation."""
    cos_parallel = np.cos(np.radians(0.5 * max_tilt_deg))
    for _ in range(2):
        c = next_candidate(s, avail, gated=False)
        if c is None:
            break
        candidates.append(c)
        info, pl = c
        if (
            info["role"] in ("qualifies", s.tilted)
            and abs(pl.normal @ best.normal) < cos_parallel
            and pl.inlier_share >= max(s.min_share, ambiguous_ratio * best.inlier_share)
        ):
            info["role"] = "rival"
            ang = float(np.degrees(np.arccos(np.clip(abs(pl.normal @ best.normal), 0.0, 1.0))))
            return (
                f"two planes of comparable size ({best.inlier_share:.0%} and "
                f"{pl.inlier_share:.0%} of the points, {ang:.0f} deg apart): no single support "
                "plane"
            )
    return None


def find_support(
    points: np.ndarray,
    camera_centers: np.ndarray,
    camera_up: np.ndarray | None = None,
    *,
    seed: int = 0,
    max_tilt_deg: float = 45.0,
    min_share: float = 0.05,
    ambiguous_ratio: float = 0.5,
    band: float = 0.02,
    max_planes: int = 4,
) -> SupportSearch:
    """Search the support plane among ``points`` (N,3), seen by cameras at ``camera_centers`` (M,3)
    whose up vectors (minus the camera y axis, in the same frame) are ``camera_up`` (M,3) or unknown.

    Support candidates are found one after another (RANSAC among planes with every camera on one side and
    at most ``max_tilt_deg`` from the cameras' up; a plane's points are removed before the next is
    searched), at most ``max_planes``; then up to two planes of any orientation among the points left, as
    rivals. ``band`` caps each point's noise as a share of the median camera-to-points distance.
    ``alternatives`` lists the other planes that qualify (a box's top besides the floor), largest first,
    for a caller that checks a plane against the silhouettes and needs the next one. See the module
    docstring for what makes a plane the support.
    Deterministic for a given ``seed``.
    """
    P_all = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    C = np.asarray(camera_centers, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(P_all).all(1)
    P = P_all[finite]
    up, up_source = up_prior(C, camera_up, P if len(P) else None)
    scale = float(np.median(np.linalg.norm(C - np.median(P, 0), axis=1))) if len(P) else 0.0
    if len(P) < MIN_POINTS or len(C) < 1 or scale <= 0:
        return SupportSearch(
            None, "too few points", f"only {len(P)} points: no support plane can be fitted", up, up_source, scale
        )
    s = start_search(
        P_all, finite, C, up, up_source, scale, seed=seed, band=band, max_tilt_deg=max_tilt_deg, min_share=min_share
    )
    candidates, avail = support_candidates(s, max_planes)
    qualified = _rank_qualified(candidates)
    if not qualified:
        return _result(
            s,
            None,
            "no plane",
            f"no plane of the {len(P)} points qualifies as a support "
            f"({len(candidates)} candidate plane(s), see candidates)",
            candidates,
        )
    best = qualified[0]
    rival = _rival_message(s, candidates, avail, best, max_tilt_deg, ambiguous_ratio)
    if rival is not None:
        return _result(s, None, "two planes", rival, candidates)
    return _result(
        s,
        best,
        "plane",
        f"support plane through {int(best.inliers.sum())} of {len(P)} points "
        f"({best.inlier_share:.0%}), rms {best.rms:.3g}, tilted {best.tilt_deg:.1f} deg from the "
        "cameras' up",
        candidates,
        qualified[1:],
    )


def fit_support_plane(
    points: np.ndarray, camera_centers: np.ndarray, camera_up: np.ndarray | None = None, *, seed: int = 0
) -> SupportPlane | None:
    """The support plane of ``points`` (N,3) under cameras at ``camera_centers`` (M,3) (up vectors
    ``camera_up`` (M,3) = minus each camera's y axis, if known), or None where no dominant plane with the
    cameras on one side exists (see :func:`find_support` for the reason)."""
    return find_support(points, camera_centers, camera_up, seed=seed).plane


__all__ = ["SupportPlane", "SupportSearch", "find_support", "fit_support_plane", "up_prior"]
