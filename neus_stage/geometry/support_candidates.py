"""The candidate planes of the support search (:mod:`neus_stage.geometry.support`), on arrays only: the plane
type (:class:`SupportPlane`) and each candidate, found among the points no earlier one explains (RANSAC and a
robust refit, :mod:`neus_stage.geometry.support_fit`), measured against all the points and given the role
that the support's tests (see :mod:`neus_stage.geometry.support`) give it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .support_fit import local_noise, ransac_plane, refine_plane

MIN_POINTS = 30
"""Fewer points than this give no plane (RANSAC needs a population to vote)."""
MAX_SPREAD = 2.0
"""A plane is flat when its points' residuals, each divided by that point's own noise, have a robust
standard deviation of at most this (1: the plane explains them exactly as well as their local surface)."""


@dataclass
class SupportPlane:
    """A support plane ``normal @ x + offset = 0``; ``normal`` (3,) unit, towards the cameras (up)."""

    normal: np.ndarray
    offset: float
    inliers: np.ndarray  # bool (N,) over the points it was fitted to
    inlier_share: float  # inliers / finite points
    rms: float  # RMS distance of the inliers to the plane
    tolerance: float  # half-width of the inlier band (3 robust sigma of the residuals)
    tilt_deg: float = 0.0  # angle between the normal and the cameras' up prior
    below_share: float = 0.0  # share of the points more than two tolerances below the plane

    def height(self, x: np.ndarray) -> np.ndarray:
        """Signed height of points (...,3) above the plane (positive on the cameras' side)."""
        return np.asarray(x, dtype=np.float64) @ self.normal + self.offset

    def transformed(self, matrix: np.ndarray) -> SupportPlane:
        """The same plane in another frame, ``x_new = matrix[:3, :3] @ x + matrix[:3, 3]`` (a similarity:
        heights, rms and tolerance scale with it)."""
        m = np.asarray(matrix, dtype=np.float64)
        A, b = m[:3, :3], m[:3, 3]
        s = float(abs(np.linalg.det(A)) ** (1.0 / 3.0))
        R = A / s
        n = R @ self.normal
        n = n / np.linalg.norm(n)
        return SupportPlane(
            n,
            float(s * self.offset - n @ b),
            self.inliers,
            self.inlier_share,
            s * self.rms,
            s * self.tolerance,
            self.tilt_deg,
            self.below_share,
        )

    def to_json(self) -> dict:
        return {
            "normal": [float(v) for v in self.normal],
            "offset": float(self.offset),
            "inliers": int(np.count_nonzero(self.inliers)),
            "inlier_share": round(float(self.inlier_share), 4),
            "rms": float(self.rms),
            "tolerance": float(self.tolerance),
            "tilt_deg": round(float(self.tilt_deg), 2),
            "below_share": round(float(self.below_share), 4),
        }


Candidate = tuple[dict, SupportPlane]
"""A candidate plane: its record (bbox.json's ``candidates``) and the plane."""


@dataclass
class CandidateSearch:
    """One search's points, cameras and the tolerances every candidate plane is measured against."""

    points_all: np.ndarray  # (N,3) as given: the candidates' inlier masks are over these
    finite: np.ndarray  # bool (N,): the points searched
    P: np.ndarray  # the finite points
    C: np.ndarray  # camera centres (M,3)
    up: np.ndarray  # the cameras' up prior
    up_source: str
    scale: float  # median camera distance to the points
    sig: np.ndarray  # each finite point's own noise
    tau0: float  # how far above a plane every camera must be
    cos_tilt: float
    min_share: float
    tilted: str  # the role of a plane that passes every test but the tilt
    rng: np.random.Generator


def start_search(
    points_all: np.ndarray,
    finite: np.ndarray,
    C: np.ndarray,
    up: np.ndarray,
    up_source: str,
    scale: float,
    *,
    seed: int,
    band: float,
    max_tilt_deg: float,
    min_share: float,
) -> CandidateSearch:
    """The search's state: each point's own noise (the far floor is triangulated far less precisely than
    the object), at most ``band`` of the scene's scale (an isolated point), at least a millionth of it."""
    P = points_all[finite]
    rng = np.random.default_rng(seed)
    sig = np.clip(local_noise(P, rng=rng), 1e-6 * scale, band * scale)
    return CandidateSearch(
        points_all,
        finite,
        P,
        C,
        up,
        up_source,
        scale,
        sig,
        3.0 * float(np.median(sig)),
        float(np.cos(np.radians(max_tilt_deg))),
        min_share,
        f"tilted more than {max_tilt_deg:g} deg from the cameras' up",
        rng,
    )


def measured_plane(s: CandidateSearch, n: np.ndarray, d: float) -> tuple[SupportPlane, np.ndarray] | None:
    """The plane ``n @ x + d = 0`` measured against all the points (planes may share a few), with each
    point's height above it; None where fewer than three points lie within three of their own noise."""
    h = s.P @ n + d
    band_i = 3.0 * s.sig  # each point's inlier half-width
    inl = np.abs(h) < band_i
    if inl.sum() < 3:
        return None
    tol = float(np.median(band_i[inl]))
    rms = float(np.sqrt(np.mean(h[inl] ** 2)))
    below = float(np.mean(h < -2.0 * band_i))
    tilt = float(np.degrees(np.arccos(np.clip(n @ s.up, -1.0, 1.0))))
    mask = np.zeros(len(s.points_all), dtype=bool)
    mask[np.flatnonzero(s.finite)[inl]] = True
    return SupportPlane(n, float(d), mask, float(inl.mean()), rms, tol, tilt, below), h


def candidate_record(s: CandidateSearch, plane: SupportPlane, spread: float, gated: bool) -> dict:
    """A candidate plane's record (bbox.json's ``candidates``), with the role the support's tests give it."""
    inl = plane.inliers[s.finite]
    n, d = plane.normal, plane.offset
    info = {
        "normal": [round(float(v), 6) for v in n],
        "offset": float(d),
        "inliers": int(inl.sum()),
        "inlier_share": round(float(inl.mean()), 4),
        "rms": plane.rms,
        "tolerance": plane.tolerance,
        "tilt_deg": round(plane.tilt_deg, 2),
        "below_share": round(plane.below_share, 4),
        "spread": round(spread, 3),
        "points_own_noise": float(np.median(s.sig[inl])),
        "cameras_above": bool((s.C @ n + d > s.tau0).all()),
        "searched": "support" if gated else "rival",
    }
    # the tests a support passes (a wall of a corner passes all but the tilt)
    if not info["cameras_above"]:
        info["role"] = "cameras on both sides"
    elif spread > MAX_SPREAD:
        info["role"] = f"not flat: it spreads more than {MAX_SPREAD:g} times its points' own noise"
    elif plane.inlier_share < s.min_share:
        info["role"] = f"holds less than {s.min_share:.0%} of the points"
    elif plane.below_share * len(s.P) > info["inliers"]:
        info["role"] = "more points behind it than on it"
    elif n @ s.up < s.cos_tilt:
        info["role"] = s.tilted
    else:
        info["role"] = "qualifies"
    return info


def next_candidate(s: CandidateSearch, avail: np.ndarray, gated: bool) -> Candidate | None:
    """The next plane among the ``avail`` points (within the tilt of the cameras' up where ``gated``, of any
    orientation otherwise), oriented towards the cameras, with its record; its points leave ``avail``."""
    idx = np.flatnonzero(avail)
    if len(idx) < max(MIN_POINTS, s.min_share * len(s.P)):
        return None
    hyp = ransac_plane(s.P[idx], s.sig[idx], s.C, s.tau0, s.rng, up=s.up if gated else None, cos_tilt=s.cos_tilt)
    if hyp is None:
        return None
    n, d, _, spread = refine_plane(s.P[idx], s.sig[idx], *hyp)
    if n @ s.C.mean(0) + d < 0:  # orient towards the cameras
        n, d = -n, -d
    measured = measured_plane(s, n, d)
    if measured is None:
        return None
    plane, h = measured
    info = candidate_record(s, plane, spread, gated)
    avail &= ~(np.abs(h) < 3.0 * (3.0 * s.sig))  # within three inlier half-widths: this plane's
    return info, plane


def support_candidates(s: CandidateSearch, max_planes: int) -> tuple[list[Candidate], np.ndarray]:
    """Up to ``max_planes`` planes within the tilt of the cameras' up, one after another, and the points
    none of them explains."""
    candidates: list[Candidate] = []
    avail = np.ones(len(s.P), dtype=bool)
    for _ in range(max_planes):
        c = next_candidate(s, avail, gated=True)
        if c is None:
            break
        candidates.append(c)
    return candidates, avail


__all__ = [
    "MAX_SPREAD",
    "MIN_POINTS",
    "Candidate",
    "CandidateSearch",
    "SupportPlane",
    "candidate_record",
    "measured_plane",
    "next_candidate",
    "start_search",
    "support_candidates",
]
