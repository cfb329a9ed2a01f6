"""The plane fits of the support search (:mod:`neus_stage.geometry.support`), on arrays only.

- :func:`local_noise`: each point's own noise, the spread of its nearest neighbours about their local plane;
- :func:`ransac_plane`: the plane that best explains points within three of their own noise (MSAC), among
  the planes with every camera on one side (and, optionally, within a tilt of the cameras' up);
- :func:`refine_plane`: its robust (biweight) weighted least-squares refit and how flat it is.
"""

from __future__ import annotations

import numpy as np


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


def fit_plane_lsq(P: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Plane through ``P`` minimising the (``w``-weighted) squared distances: (unit normal, offset)."""
    w = np.ones(len(P)) if w is None else w
    mu = (w[:, None] * P).sum(0) / w.sum()
    X = (P - mu) * np.sqrt(w)[:, None]
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    n = Vt[2]
    return n, float(-n @ mu)


def _hypotheses(P: np.ndarray, C: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """500 planes through random triples of ``P`` (degenerate triples left out): (normals towards camera 0,
    offsets, camera heights (M,K))."""
    idx = rng.integers(0, len(P), size=(500, 3))
    a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    nrm = np.cross(b - a, c - a)
    ln = np.linalg.norm(nrm, axis=1)
    ok = ln > 1e-12 * max(1.0, float(np.abs(P).max()) ** 2)
    nrm, a = nrm[ok] / ln[ok, None], a[ok]
    d = -np.einsum("ij,ij->i", nrm, a)
    hc = C @ nrm.T + d  # (M,K) camera heights
    side = np.where(hc[0] >= 0, 1.0, -1.0)
    return nrm * side[:, None], d * side, hc * side


def ransac_plane(
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
        nrm, d, hc = _hypotheses(P, C, rng)
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


def refine_plane(
    P: np.ndarray, sig: np.ndarray, n: np.ndarray, d: float
) -> tuple[np.ndarray, float, np.ndarray, float]:
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
        n_new, d_new = fit_plane_lsq(P[inl], w)
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


__all__ = ["fit_plane_lsq", "local_noise", "ransac_plane", "refine_plane"]
