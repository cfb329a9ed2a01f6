"""Metric scale of a scene posed by SfM: an ArUco marker of known size, a known length, or a factor.

COLMAP's reconstruction has an arbitrary scale. Three ways give metres (in this order of precedence):

- **a marker**: an ArUco marker (OpenCV's aruco module) of known side lying in the scene. It is detected in
  the undistorted photos and its corners located without the bias of blur and tone curve (the square
  through the middle of its black border, from both edges of the border: :func:`border_centreline_corners`);
  each corner is triangulated from every photo that sees the marker with the SfM cameras (linear
  triangulation, then the photos whose corners reproject worse than ``MAX_REPROJECTION_PX`` are dropped and
  the rest triangulated again), and the marker's side in SfM units (from the mean of its four triangulated
  edges) against its true side gives metres per SfM unit.
  Several markers (of the configured ids, or any id of the dictionary) give the median of their scales.
  A marker seen in fewer than ``MIN_MARKER_VIEWS`` photos (too small to detect, mostly hidden) gives no
  scale: the run goes on and says so.
- **a known length**: the distance in metres between two SfM points (their ids in the sparse model).
- **a factor**: metres per SfM unit, given.

Without any of them the scene stays in SfM units, and every output says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StageError
from .geometry.cameras import project

log = logging.getLogger(__name__)

MIN_MARKER_VIEWS = 3
"""A marker must be detected in at least this many photos to be triangulated (two views leave no check)."""
MAX_REPROJECTION_PX = 2.0
"""A photo whose detected corners reproject worse than this (RMS, pixels) from the triangulated marker is a
false detection or a badly localised one, and is left out."""
MAX_EDGE_SPREAD = 0.05
"""The four triangulated edges of a square marker agree within this share, or the marker is not used (a
misdetection, or a marker that is not flat)."""


@dataclass
class ScaleSettings:
    """What the user told about the scene's size (see config/README.md, keys ``scale.*``)."""

    marker_length: float = 0.0  # side of the marker's black square in metres; 0: no marker
    marker_dictionary: str = "DICT_4X4_50"
    marker_ids: tuple[int, ...] = ()  # only these ids; empty: any id of the dictionary
    factor: float = 0.0  # metres per SfM unit; 0: none
    known_length: tuple[int, int, float] | None = None  # (SfM point id, SfM point id, metres)

    def any(self) -> bool:
        return self.marker_length > 0 or self.factor > 0 or self.known_length is not None


@dataclass
class ScaleResult:
    """Metres per SfM unit (``factor``, 1.0 where there is no scale) and how it was found."""

    factor: float
    units: str  # "metres" or "SfM units"
    method: str  # "marker", "known_length", "factor" or "none"
    message: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "units": self.units,
            "metres_per_sfm_unit": self.factor if self.method != "none" else None,
            "message": self.message,
            **self.details,
        }


# ------------------------------------------------------------------------------------------- marker
def aruco_dictionary(name: str):
    """OpenCV's predefined ArUco dictionary ``name`` (e.g. DICT_4X4_50); StageError naming the setting."""
    import cv2

    names = sorted(k for k in dir(cv2.aruco) if k.startswith("DICT_"))
    if name not in names:
        raise StageError(
            f"scale.marker_dictionary: unknown ArUco dictionary {name!r}; choose one of "
            f"{', '.join(names)} (the dictionary the marker was generated from)"
        )
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


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
    along = np.arange(1.0, cells - 1.0 + 1e-9, 0.05)  # past the corner cells
    across = np.arange(-0.8, 1.9, 0.02)  # from the white sheet through the bar into the next cell
    lines = []
    for side in range(4):
        # marker coordinates (x, y) of each profile sample: side 0 = top (y = 0), then clockwise
        a, b = np.meshgrid(along, across, indexing="ij")
        xy = {0: (a, b), 1: (cells - b, a), 2: (cells - a, cells - b), 3: (b, cells - a)}[side]
        m = np.stack([*xy, np.ones_like(a)], -1) @ H.T.astype(np.float64)
        img = m[..., :2] / m[..., 2:]
        prof = _sample(grey, img)
        pts = []
        for k in range(len(along)):
            p = prof[k]
            if np.isnan(p).any():
                continue
            white = np.median(p[across < -0.3])
            black = np.min(p[(across > 0.2) & (across < 0.8)])
            if white - black < 20:  # no contrast: blurred away or not the border
                continue
            thr = (white + black) / 2
            below = p < thr
            i_out = int(np.argmax(below))  # first sample inside the dark bar
            inner = np.flatnonzero(~below & (across > across[i_out] + 0.3))
            if i_out == 0 or not len(inner) or across[inner[0]] > 1.6:
                continue  # the next cell inward is black: no inner edge here
            i_in = int(inner[0])
            t_out = (p[i_out - 1] - thr) / (p[i_out - 1] - p[i_out])
            t_in = (thr - p[i_in - 1]) / (p[i_in] - p[i_in - 1])
            e_out = img[k, i_out - 1] + t_out * (img[k, i_out] - img[k, i_out - 1])
            e_in = img[k, i_in - 1] + t_in * (img[k, i_in] - img[k, i_in - 1])
            pts.append((e_out + e_in) / 2)
        line = _fit_line(np.asarray(pts)) if len(pts) >= 5 else None
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


def detect_markers(image_paths: list[Path], dictionary_name: str) -> list[dict[int, np.ndarray]]:
    """Per image, {marker id: corners (4,2) in pixels (integer pixel centres, OpenCV's and NeuS's
    convention), clockwise from the marker's top-left}: the corners of the square through the middle of the
    marker's black border (:func:`border_centreline_corners`; its side is (cells - 1) / cells of the
    marker's), for the markers whose border shows both its edges."""
    import cv2

    from .progress import track

    dictionary = aruco_dictionary(dictionary_name)
    cells = int(dictionary.markerSize) + 2
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(dictionary, params)
    out: list[dict[int, np.ndarray]] = []
    for path in track(image_paths, "scale: ArUco markers", unit="photo"):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise StageError(f"{path}: cannot read this image for marker detection; re-run the sfm stage")
        corners, ids, _ = detector.detectMarkers(grey)
        found: dict[int, np.ndarray] = {}
        if ids is not None:
            g = grey.astype(np.float64)
            for c, i in zip(corners, ids.ravel()):
                mid = border_centreline_corners(g, np.asarray(c, dtype=np.float64).reshape(4, 2), cells)
                if mid is not None:
                    found.setdefault(int(i), mid)
        out.append(found)
    return out


def marker_cells(dictionary_name: str) -> int:
    """Cells along a marker's side: its bits and the two border cells."""
    return int(aruco_dictionary(dictionary_name).markerSize) + 2


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


def marker_scale(
    image_paths: list[Path], names: list[str], world_mats: np.ndarray, settings: ScaleSettings
) -> ScaleResult | str:
    """Metres per SfM unit from the markers in ``image_paths`` (posed by ``world_mats`` (N,4,4) in the SfM
    frame), or the reason there is none (a sentence)."""
    detections = detect_markers(image_paths, settings.marker_dictionary)
    wanted = set(settings.marker_ids)
    ids = sorted({i for d in detections for i in d if not wanted or i in wanted})
    what = f"an ArUco marker ({settings.marker_dictionary}" + (f", id {sorted(wanted)}" if wanted else "") + ")"
    if not ids:
        return (
            f"{what} was not detected in any of the {len(image_paths)} photos (too small, blurred or hidden, "
            "or another dictionary)"
        )
    P = np.asarray(world_mats, dtype=np.float64)[:, :3, :4]
    cells = marker_cells(settings.marker_dictionary)
    markers, refused = [], []
    for i in ids:
        views = [k for k, d in enumerate(detections) if i in d]
        if len(views) < MIN_MARKER_VIEWS:
            refused.append(
                f"id {i}: detected in {len(views)} photo(s) ({', '.join(names[k] for k in views)}), "
                f"fewer than {MIN_MARKER_VIEWS}"
            )
            continue
        m = triangulate_marker(P[views], np.stack([detections[k][i] for k in views]), views)
        side = float(m["edges"].mean()) * cells / (cells - 1)  # the border's middle square -> the marker
        spread = float((m["edges"].max() - m["edges"].min()) / max(side, 1e-30))
        if len(m["views"]) < MIN_MARKER_VIEWS:
            refused.append(
                f"id {i}: only {len(m['views'])} photo(s) agree on its corners (reprojection within "
                f"{MAX_REPROJECTION_PX:g} px)"
            )
            continue
        if spread > MAX_EDGE_SPREAD:
            refused.append(
                f"id {i}: its triangulated edges differ by {spread:.1%} (not a flat square: a misdetection?)"
            )
            continue
        markers.append(
            {
                "id": i,
                "photos": len(m["views"]),
                "dropped_photos": [names[k] for k in m["dropped_views"]],
                "side_sfm": side,
                "edge_spread": spread,
                "reprojection_px": m["reprojection_px"],
                "metres_per_sfm_unit": settings.marker_length / side,
                "border_middle_corners_sfm": m["corners"].tolist(),
            }
        )
    if not markers:
        return f"{what} gives no scale: " + "; ".join(refused)
    factor = float(np.median([m["metres_per_sfm_unit"] for m in markers]))
    best = max(markers, key=lambda m: m["photos"])
    msg = (
        f"metres from {len(markers)} ArUco marker(s) of side {settings.marker_length:g} m "
        f"({settings.marker_dictionary}; id {best['id']} in {best['photos']} photos, corners reprojected within "
        f"{best['reprojection_px']:.2f} px RMS): {factor:.6g} m per SfM unit"
    )
    details = {
        "marker": {
            "dictionary": settings.marker_dictionary,
            "length_m": settings.marker_length,
            "markers": markers,
            "refused": refused,
            "detected_in": {str(i): sum(i in d for d in detections) for i in ids},
        }
    }
    return ScaleResult(factor, "metres", "marker", msg, details)


# ---------------------------------------------------------------------------------------- top level
def known_length_scale(points: dict[int, np.ndarray], a: int, b: int, length: float) -> ScaleResult:
    """Metres per SfM unit from the distance ``length`` (metres) between SfM points ``a`` and ``b``."""
    missing = [i for i in (a, b) if i not in points]
    if missing:
        raise StageError(
            f"scale.known_length: SfM point id(s) {missing} not in the sparse model "
            f"(sfm/undistorted/sparse holds {len(points)} points); give two ids of its points3D"
        )
    if not length > 0:
        raise StageError(f"scale.known_length: the length must be positive (metres), got {length}")
    d = float(np.linalg.norm(points[a] - points[b]))
    if not d > 0:
        raise StageError(f"scale.known_length: SfM points {a} and {b} coincide; choose two points apart")
    return ScaleResult(
        length / d,
        "metres",
        "known_length",
        f"metres from the known length {length:g} m between SfM points {a} and {b} "
        f"({d:.6g} SfM units apart): {length / d:.6g} m per SfM unit",
        {"known_length": {"points": [a, b], "length_m": length, "sfm_distance": d}},
    )


def resolve_scale(
    settings: ScaleSettings,
    image_paths: list[Path],
    names: list[str],
    world_mats: np.ndarray,
    points: dict[int, np.ndarray],
) -> ScaleResult:
    """The scene's scale (metres per SfM unit) from ``settings``: a detected marker, else the known length,
    else the factor; else none (SfM units), with the reason in the message (logged as a warning where a
    marker was asked for but gave none)."""
    if settings.factor < 0 or settings.marker_length < 0:
        raise StageError("scale.factor and scale.marker_length must be positive (or 0 for none)")
    reasons = []
    if settings.marker_length > 0:
        found = marker_scale(image_paths, names, world_mats, settings)
        if isinstance(found, ScaleResult):
            log.info("scale: %s", found.message)
            return found
        reasons.append(found)
        log.warning("scale: %s", found)
    if settings.known_length is not None:
        a, b, length = settings.known_length
        res = known_length_scale(points, int(a), int(b), float(length))
    elif settings.factor > 0:
        res = ScaleResult(
            float(settings.factor),
            "metres",
            "factor",
            f"metres from the given factor scale.factor = {settings.factor:g} m per SfM unit",
        )
    else:
        why = "; ".join(reasons) if reasons else "no marker, scale.factor or scale.known_length given"
        res = ScaleResult(1.0, "SfM units", "none", f"SfM units (arbitrary scale): {why}")
        (log.warning if reasons else log.info)("scale: %s", res.message)
        return res
    if reasons:
        res.message += f" ({reasons[0]})"
    log.info("scale: %s", res.message)
    return res


__all__ = [
    "MIN_MARKER_VIEWS",
    "ScaleResult",
    "ScaleSettings",
    "aruco_dictionary",
    "border_centreline_corners",
    "detect_markers",
    "marker_cells",
    "known_length_scale",
    "marker_scale",
    "resolve_scale",
    "triangulate",
    "triangulate_marker",
]
