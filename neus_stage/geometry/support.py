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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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


def local_noise(
    points: np.ndarray, k: int = 12, max_points: int = 40000, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Each point's own noise (N,): the RMS distance of its ``k`` nearest neighbours to their best-fitting
    plane (noise plus the surface's curvature at the scale of the point spacing). Above ``max_points``
    points, a random subset is measured and the others get the value of their nearest measured point."""
    from scipy.spatial import cKDTree

    P = np.asarray(points, dtype=np.float64)
    if len(P) <= k:
        return np.zeros(len(P))
    tree = cKDTree(P)
    sub = np.arange(len(P))
    if len(P) > max_points:
        sub = np.sort((rng or np.random.default_rng(0)).choice(len(P), max_points, replace=False))
    _, idx = tree.query(P[sub], k=k)
    X = P[idx] - P[idx].mean(1, keepdims=True)
    w = np.linalg.eigvalsh(np.einsum("nki,nkj->nij", X, X) / k)
    noise = np.sqrt(np.maximum(w[:, 0], 0.0))
    if len(sub) == len(P):
        return noise
    _, nearest = cKDTree(P[sub]).query(P)
    return noise[nearest]


def _fit_lsq(P: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Plane through ``P`` minimising the (``w``-weighted) squared distances: (unit normal, offset)."""
    w = np.ones(len(P)) if w is None else w
    mu = (w[:, None] * P).sum(0) / w.sum()
    X = (P - mu) * np.sqrt(w)[:, None]
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    n = Vt[2]
    return n, float(-n @ mu)


def _ransac(
    P: np.ndarray,
    sig: np.ndarray,
    C: np.ndarray,
    cam_tol: float,
    rng: np.random.Generator,
    *,
    up: np.ndarray | None = None,
    cos_tilt: float = -1.0,
    n_hyp: int = 2000,
    n_score: int = 4000,
) -> tuple[np.ndarray, float] | None:
    """The plane that best explains ``P`` within three of each point's own noise ``sig`` (MSAC: a point
    scores 1 - (r / 3 sig)^2, so a tight plane beats a slab of the same count) among those with every
    camera more than ``cam_tol`` on one side and, with ``up``, a normal within the tilt whose cosine is
    ``cos_tilt``; normal towards the cameras."""
    n = len(P)
    pick = np.arange(n) if n <= n_score else rng.choice(n, n_score, replace=False)
    S, band = P[pick], 3.0 * sig[pick, None]
    best, best_score = None, 0.0
    for _ in range(max(1, n_hyp // 500)):
        idx = rng.integers(0, n, size=(500, 3))
        a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
        nrm = np.cross(b - a, c - a)
        ln = np.linalg.norm(nrm, axis=1)
        ok = ln > 1e-12 * max(1.0, float(np.abs(P).max()) ** 2)
        nrm, a = nrm[ok] / ln[ok, None], a[ok]
        d = -np.einsum("ij,ij->i", nrm, a)
        hc = C @ nrm.T + d  # (M,K) camera heights
        side = np.where(hc[0] >= 0, 1.0, -1.0)
        nrm, d, hc = nrm * side[:, None], d * side, hc * side
        valid = (hc > cam_tol).all(0)
        if up is not None:
            valid &= nrm @ up >= cos_tilt
        if not valid.any():
            continue
        nrm, d = nrm[valid], d[valid]
        r = np.abs(S @ nrm.T + d) / band
        score = np.where(r < 1.0, 1.0 - r * r, 0.0).sum(0)
        k = int(np.argmax(score))
        if score[k] > best_score:
            best, best_score = (nrm[k], float(d[k])), float(score[k])
    return best


def _refine(P: np.ndarray, sig: np.ndarray, n: np.ndarray, d: float) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Robust refit: weighted least squares (weights 1 / sig^2 times Tukey's biweight of the normalised
    residual r / sig, zero beyond 3) on the points within three of their own noise, repeated until stable;
    a structure just above the plane (a pot's inside bottom) gets little weight. Returns (n, d, inliers,
    spread), the spread being the robust standard deviation of the inliers' normalised residuals: about
    1 for a plane that explains its points as well as their own local surface does, 2 and more for a slab
    (residuals spread evenly over the whole band)."""
    for _ in range(8):
        z = np.abs(P @ n + d) / sig
        inl = z < 3.0
        if inl.sum() < 3:
            break
        w = (1.0 - (z[inl] / 3.0) ** 2) ** 2 / sig[inl] ** 2
        n_new, d_new = _fit_lsq(P[inl], w)
        if n_new @ n < 0:
            n_new, d_new = -n_new, -d_new
        done = np.linalg.norm(n_new - n) < 1e-6 and abs(d_new - d) < 1e-3 * float(np.median(sig[inl]))
        n, d = n_new, d_new
        if done:
            break
    z = np.abs(P @ n + d) / sig
    inl = z < 3.0
    spread = 1.4826 * float(np.median(z[inl])) if inl.any() else float("inf")
    return n, d, inl, spread


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
    rng = np.random.default_rng(seed)
    # each point's own noise (the far floor is triangulated far less precisely than the object), at most
    # ``band`` of the scene's scale (an isolated point), at least a millionth of it
    sig = np.clip(local_noise(P, rng=rng), 1e-6 * scale, band * scale)
    tau0 = 3.0 * float(np.median(sig))  # how far above a plane every camera must be
    cos_tilt = float(np.cos(np.radians(max_tilt_deg)))
    n_pts = len(P)
    tilted = f"tilted more than {max_tilt_deg:g} deg from the cameras' up"

    def candidate(avail: np.ndarray, gated: bool) -> tuple[dict, SupportPlane] | None:
        idx = np.flatnonzero(avail)
        if len(idx) < max(MIN_POINTS, min_share * n_pts):
            return None
        hyp = _ransac(P[idx], sig[idx], C, tau0, rng, up=up if gated else None, cos_tilt=cos_tilt)
        if hyp is None:
            return None
        n, d, _, spread = _refine(P[idx], sig[idx], *hyp)
        if n @ C.mean(0) + d < 0:  # orient towards the cameras
            n, d = -n, -d
        h = P @ n + d
        band_i = 3.0 * sig  # each point's inlier half-width
        inl = np.abs(h) < band_i  # over all points (planes may share a few)
        if inl.sum() < 3:
            return None
        tol = float(np.median(band_i[inl]))
        rms = float(np.sqrt(np.mean(h[inl] ** 2)))
        below = float(np.mean(h < -2.0 * band_i))
        tilt = float(np.degrees(np.arccos(np.clip(n @ up, -1.0, 1.0))))
        mask = np.zeros(len(P_all), dtype=bool)
        mask[np.flatnonzero(finite)[inl]] = True
        plane = SupportPlane(n, float(d), mask, float(inl.mean()), rms, tol, tilt, below)
        info = {
            "normal": [round(float(v), 6) for v in n],
            "offset": float(d),
            "inliers": int(inl.sum()),
            "inlier_share": round(float(inl.mean()), 4),
            "rms": rms,
            "tolerance": tol,
            "tilt_deg": round(tilt, 2),
            "below_share": round(below, 4),
            "spread": round(spread, 3),
            "points_own_noise": float(np.median(sig[inl])),
            "cameras_above": bool((C @ n + d > tau0).all()),
            "searched": "support" if gated else "rival",
        }
        avail &= ~(np.abs(h) < 3.0 * band_i)
        # the tests a support passes (a wall of a corner passes all but the tilt)
        if not info["cameras_above"]:
            info["role"] = "cameras on both sides"
        elif spread > MAX_SPREAD:
            info["role"] = f"not flat: it spreads more than {MAX_SPREAD:g} times its points' own noise"
        elif plane.inlier_share < min_share:
            info["role"] = f"holds less than {min_share:.0%} of the points"
        elif below * n_pts > inl.sum():
            info["role"] = "more points behind it than on it"
        elif n @ up < cos_tilt:
            info["role"] = tilted
        else:
            info["role"] = "qualifies"
        return info, plane

    # support candidates: planes within the tilt of the cameras' up, one after another
    candidates: list[tuple[dict, SupportPlane]] = []
    avail = np.ones(n_pts, dtype=bool)
    for _ in range(max_planes):
        c = candidate(avail, gated=True)
        if c is None:
            break
        candidates.append(c)
    qualified = [(i, pl) for i, (info, pl) in enumerate(candidates) if info["role"] == "qualifies"]
    if not qualified:
        return SupportSearch(
            None,
            "no plane",
            f"no plane of the {n_pts} points qualifies as a support "
            f"({len(candidates)} candidate plane(s), see candidates)",
            up,
            up_source,
            scale,
            [c[0] for c in candidates],
            tau0,
        )
    qualified.sort(key=lambda t: -t[1].inlier_share)
    best_i, best = qualified[0]
    candidates[best_i][0]["role"] = "support"
    for i, _ in qualified[1:]:
        candidates[i][0]["role"] = "qualifies (smaller)"
    alternatives = [pl for _, pl in qualified[1:]]
    # rivals, of any orientation, among the points no support candidate explains: a plane that would bound
    # the object as well (a corner's wall: flat, nothing seen behind it, the cameras on one side), of
    # comparable size and another orientation
    cos_parallel = np.cos(np.radians(0.5 * max_tilt_deg))
    for _ in range(2):
        c = candidate(avail, gated=False)
        if c is None:
            break
        candidates.append(c)
        info, pl = c
        if (
            info["role"] in ("qualifies", tilted)
            and abs(pl.normal @ best.normal) < cos_parallel
            and pl.inlier_share >= max(min_share, ambiguous_ratio * best.inlier_share)
        ):
            info["role"] = "rival"
            ang = float(np.degrees(np.arccos(np.clip(abs(pl.normal @ best.normal), 0.0, 1.0))))
            return SupportSearch(
                None,
                "two planes",
                f"two planes of comparable size ({best.inlier_share:.0%} and "
                f"{pl.inlier_share:.0%} of the points, {ang:.0f} deg apart): no single support "
                "plane",
                up,
                up_source,
                scale,
                [c[0] for c in candidates],
                tau0,
            )
    return SupportSearch(
        best,
        "plane",
        f"support plane through {int(best.inliers.sum())} of {n_pts} points "
        f"({best.inlier_share:.0%}), rms {best.rms:.3g}, tilted {best.tilt_deg:.1f} deg from the "
        "cameras' up",
        up,
        up_source,
        scale,
        [c[0] for c in candidates],
        tau0,
        alternatives,
    )


def fit_support_plane(
    points: np.ndarray, camera_centers: np.ndarray, camera_up: np.ndarray | None = None, *, seed: int = 0
) -> SupportPlane | None:
    """The support plane of ``points`` (N,3) under cameras at ``camera_centers`` (M,3) (up vectors
    ``camera_up`` (M,3) = minus each camera's y axis, if known), or None where no dominant plane with the
    cameras on one side exists (see :func:`find_support` for the reason)."""
    return find_support(points, camera_centers, camera_up, seed=seed).plane


__all__ = ["SupportPlane", "SupportSearch", "find_support", "fit_support_plane", "up_prior"]
