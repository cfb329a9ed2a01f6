"""Metric scale of a scene posed by SfM: an ArUco marker of known size, a known length, or a factor.

COLMAP's reconstruction has an arbitrary scale. Three ways give metres (in this order of precedence):

- **a marker**: an ArUco marker (OpenCV's aruco module) of known side lying in the scene. It is detected in
  the undistorted photos and its corners located without the bias of blur and tone curve (the square
  through the middle of its black border, from both edges of the border:
  :func:`neus_stage.geometry.markers.border_centreline_corners`);
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
from .geometry.markers import MAX_REPROJECTION_PX, border_centreline_corners, triangulate_marker

log = logging.getLogger(__name__)

MIN_MARKER_VIEWS = 3
"""A marker must be detected in at least this many photos to be triangulated (two views leave no check)."""
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


def _marker_record(
    i: int, detections: list[dict[int, np.ndarray]], P: np.ndarray, cells: int, names: list[str], length: float
) -> dict | str:
    """Marker ``i`` triangulated from the photos that detected it (``P``: their projections (N,3,4)) and
    its scale (``length``: its true side in metres), or why it gives none (a sentence)."""
    views = [k for k, d in enumerate(detections) if i in d]
    if len(views) < MIN_MARKER_VIEWS:
        return (
            f"id {i}: detected in {len(views)} photo(s) ({', '.join(names[k] for k in views)}), "
            f"fewer than {MIN_MARKER_VIEWS}"
        )
    m = triangulate_marker(P[views], np.stack([detections[k][i] for k in views]), views)
    side = float(m["edges"].mean()) * cells / (cells - 1)  # the border's middle square -> the marker
    spread = float((m["edges"].max() - m["edges"].min()) / max(side, 1e-30))
    if len(m["views"]) < MIN_MARKER_VIEWS:
        return (
            f"id {i}: only {len(m['views'])} photo(s) agree on its corners (reprojection within "
            f"{MAX_REPROJECTION_PX:g} px)"
        )
    if spread > MAX_EDGE_SPREAD:
        return f"id {i}: its triangulated edges differ by {spread:.1%} (not a flat square: a misdetection?)"
    return {
        "id": i,
        "photos": len(m["views"]),
        "dropped_photos": [names[k] for k in m["dropped_views"]],
        "side_sfm": side,
        "edge_spread": spread,
        "reprojection_px": m["reprojection_px"],
        "metres_per_sfm_unit": length / side,
        "border_middle_corners_sfm": m["corners"].tolist(),
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
        found = _marker_record(i, detections, P, cells, names, settings.marker_length)
        (markers if isinstance(found, dict) else refused).append(found)
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
    "detect_markers",
    "marker_cells",
    "known_length_scale",
    "marker_scale",
    "resolve_scale",
]
