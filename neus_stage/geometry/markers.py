"""The geometry of a square (ArUco) marker, on arrays only: its corners located in a photo without the bias
of blur and tone curve, and triangulated from the photos that see it.

- :func:`border_centreline_corners`: the corners of the square through the middle of the marker's black
  border, from both edges of the border bar (blur, the tone curve and the threshold shift both towards the
  bar's dark side, so its middle stays put);
- :func:`triangulate_marker`: those corners triangulated (linear, :func:`triangulate`) from every photo that
  sees the marker, then again without the photos whose corners reproject worse than ``MAX_REPROJECTION_PX``.

Pixel positions are OpenCV's and NeuS's convention (the centre of pixel (col, row) at (col, row)).
"""

from __future__ import annotations

import numpy as np

from .cameras import project

MAX_REPROJECTION_PX = 2.0
"""A photo whose detected corners reproject worse than this (RMS, pixels) from the triangulated marker is a
false detection or a badly localised one, and is left out."""


def _sample(grey: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``grey`` (H,W float) at pixel positions ``xy`` (...,2); NaN outside."""
    h, w = grey.shape
    x, y = xy[..., 0], xy[..., 1]
    ok = (x >= 0) & (y >= 0) & (x <= w - 1.001) & (y <= h - 1.001)
    xc, yc = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(xc).astype(int), np.floor(yc).astype(int)
    fx, fy = xc - x0, yc - y0
    v = (1 - fy) * ((1 - fx) * grey[y0, x0] + fx * grey[y0, x0 + 1]) + fy * (
        (1 - fx) * grey[y0 + 1, x0] + fx * grey[y0 + 1, x0 + 1]
    )
    return np.where(ok, v, np.nan)


def _fit_line(pts: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Total-least-squares line n @ x = d through (N,2) points, after dropping those beyond 3 robust sigmas."""
    keep = np.ones(len(pts), dtype=bool)
    for _ in range(3):
        if keep.sum() < 5:
            return None
        mu = pts[keep].mean(0)
        _, _, Vt = np.linalg.svd(pts[keep] - mu)
        n = Vt[1]
        r = np.abs((pts - mu) @ n)
        sigma = 1.4826 * np.median(r[keep]) + 1e-6
        new = r < 3 * sigma
        if (new == keep).all():
            break
        keep = new
    return n, float(n @ mu)


def _bar_middle(p: np.ndarray, img: np.ndarray, across: np.ndarray) -> np.ndarray | None:
    """Where one profile across the border bar (grey levels ``p`` at image positions ``img`` (K,2), at
    ``across`` cells from the bar's outer edge) has the middle of the bar: halfway between its outer edge
    (against the white sheet) and its inner one (where the next cell inward is white), each at the grey level
    halfway between white and black. None without contrast or without an inner edge."""
    if np.isnan(p).any():
        return None
    white = np.median(p[across < -0.3])
    black = np.min(p[(across > 0.2) & (across < 0.8)])
    if white - black < 20:  # no contrast: blurred away or not the border
        return None
    thr = (white + black) / 2
    below = p < thr
    i_out = int(np.argmax(below))  # first sample inside the dark bar
    inner = np.flatnonzero(~below & (across > across[i_out] + 0.3))
    if i_out == 0 or not len(inner) or across[inner[0]] > 1.6:
        return None  # the next cell inward is black: no inner edge here
    i_in = int(inner[0])
    t_out = (p[i_out - 1] - thr) / (p[i_out - 1] - p[i_out])
    t_in = (thr - p[i_in - 1]) / (p[i_in] - p[i_in - 1])
    e_out = img[i_out - 1] + t_out * (img[i_out] - img[i_out - 1])
    e_in = img[i_in - 1] + t_in * (img[i_in] - img[i_in - 1])
    return (e_out + e_in) / 2


def _side_line(grey: np.ndarray, H: np.ndarray, side: int, cells: int) -> tuple[np.ndarray, float] | None:
    """The line (n, d: n @ x = d, pixels) through the middle of the border bar along one side of the marker
    (0 = top, then clockwise), from profiles across it; ``H``: the homography marker cells -> pixels."""
    along = np.arange(1.0, cells - 1.0 + 1e-9, 0.05)  # past the corner cells
    across = np.arange(-0.8, 1.9, 0.02)  # from the white sheet through the bar into the next cell
    # marker coordinates (x, y) of each profile sample
    a, b = np.meshgrid(along, across, indexing="ij")
    xy = {0: (a, b), 1: (cells - b, a), 2: (cells - a, cells - b), 3: (b, cells - a)}[side]
    m = np.stack([*xy, np.ones_like(a)], -1) @ H.T.astype(np.float64)
    img = m[..., :2] / m[..., 2:]
    prof = _sample(grey, img)
    pts = [q for k in range(len(along)) if (q := _bar_middle(prof[k], img[k], across)) is not None]
    return _fit_line(np.asarray(pts)) if len(pts) >= 5 else None


def border_centreline_corners(grey: np.ndarray, corners: np.ndarray, cells: int) -> np.ndarray | None:
    """Corners (4,2) of the square through the middle of the marker's black border, from the border's two
    edges: the outer one (against the white sheet) and the inner one (where the next cell inward is white).

    Blur, the tone curve and the threshold shift an edge towards its dark side, so corners located on the
    black square's outline come out too far inside it (here about a third of a pixel, a 1% smaller marker
    at 50 px); the two edges of the border bar shift by the same amount towards each other, so the bar's
    middle stays put. That square's side is (cells - 1) / cells of the marker's. ``corners``: the
    detector's (clockwise from top-left), which place the profiles; ``cells``: the marker's bits plus its
    two border cells. None where a side has too few edge pairs.
    """
    import cv2

    src = np.float32([[0, 0], [cells, 0], [cells, cells], [0, cells]])
    H = cv2.getPerspectiveTransform(src, np.float32(corners))
    lines = []
    for side in range(4):
        line = _side_line(grey, H, side, cells)
        if line is None:
            return None
        lines.append(line)
    out = []
    for i in range(4):  # corner i: the lines of the sides before and after it
        (n1, d1), (n2, d2) = lines[(i - 1) % 4], lines[i]
        A = np.stack([n1, n2])
        if abs(np.linalg.det(A)) < 1e-6:
            return None
        out.append(np.linalg.solve(A, [d1, d2]))
    return np.asarray(out)


def triangulate(projections: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of one point from (k,3,4) projections and its (k,2) pixels."""
    rows = []
    for P, (u, v) in zip(projections, uv):
        P = P / np.linalg.norm(P[2, :3])  # rows of comparable weight across views
        rows += [u * P[2] - P[0], v * P[2] - P[1]]
    _, _, Vt = np.linalg.svd(np.asarray(rows))
    X = Vt[-1]
    return X[:3] / X[3]


def _reprojection_px(projections: np.ndarray, X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Per view, the RMS pixel distance between the projections of ``X`` (4 points, (4,3)) by ``projections``
    (k,3,4) and ``uv`` (k,4,2)."""
    pix = np.stack([project(P, X)[0] for P in projections])
    return np.sqrt(((pix - uv) ** 2).sum(-1).mean(-1))


def triangulate_marker(projections: np.ndarray, corners: np.ndarray, views: list[int]) -> dict:
    """The marker's corners (4,3) from ``corners`` (k,4,2) seen by ``projections`` (k,3,4): triangulated,
    then again without the photos that reproject worse than MAX_REPROJECTION_PX. Returns the corners, its
    edges, the photos used and their reprojection errors."""
    keep = np.arange(len(views))
    X = np.stack([triangulate(projections, corners[:, j]) for j in range(4)])
    err = _reprojection_px(projections, X, corners)
    for _ in range(2):
        good = keep[err[keep] <= MAX_REPROJECTION_PX]
        if len(good) == len(keep) or len(good) < 2:
            break
        keep = good
        X = np.stack([triangulate(projections[keep], corners[keep, j]) for j in range(4)])
        err = _reprojection_px(projections, X, corners)
    edges = np.linalg.norm(X - np.roll(X, -1, axis=0), axis=1)
    return {
        "corners": X,
        "edges": edges,
        "views": [views[k] for k in keep],
        "dropped_views": [views[k] for k in range(len(views)) if k not in set(keep.tolist())],
        "reprojection_px": float(np.sqrt(np.mean(err[keep] ** 2))),
    }


__all__ = ["MAX_REPROJECTION_PX", "border_centreline_corners", "triangulate", "triangulate_marker"]
