"""The object box and visual hull of the visual-hull stage: ``bbox.json`` and ``hull.npz``.

``bbox.json`` holds the object box in NeuS's normalised frame (``normalized.min/max``) and in world units
(``world.min/max``), whether the hull was carved (``carved``: false for a scene without masks) and the
support-plane decision (``support``). ``hull.npz`` holds the occupancy grid (``occupancy``, bool R^3) over
``bounds_min .. bounds_max`` (normalised frame), the dataset's ``scale_mat`` and, where a support plane was
searched, the points searched (``support_points``, world), its inliers (``support_inliers``) and, for SfM
points, which dataset views observe each (``support_views``, bool (N, V), from the tracks).

The visual-hull stage writes both (atomically: a reader sees the old file or the new one); training, the
mesh, quality and report stages read them only through this module, so a malformed file is one error that
names it and says how to rebuild it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, write_text_atomic
from ..errors import StageError

REBUILD = "run the visual-hull stage again"


def _box(rec: object, key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo = np.asarray(rec[key]["min"], dtype=np.float64).reshape(3)  # type: ignore[index]
        hi = np.asarray(rec[key]["max"], dtype=np.float64).reshape(3)  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise StageError(f"{path}: not a bbox.json with {key}.min/max as 3 numbers each ({exc}); {REBUILD}") from exc
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
        raise StageError(f"{path}: the {key} box is empty or invalid (min {lo.tolist()}, max {hi.tolist()}); {REBUILD}")
    return lo, hi


def write_bbox(path: Path, record: dict) -> None:
    """Write a bbox.json record (it must hold a valid ``normalized`` box), atomically."""
    path = Path(path)
    _box(record, "normalized", path)
    write_text_atomic(path, json.dumps(record, indent=2))


def read_bbox_record(path: Path) -> dict:
    """The whole bbox.json record, its normalised box (and world box, where present) checked."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: bbox file not found; run the visual-hull stage first")
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: not readable as JSON ({exc}); {REBUILD}") from exc
    if not isinstance(rec, dict):
        raise StageError(f"{path}: not a bbox.json (a JSON object with normalized and world boxes); {REBUILD}")
    _box(rec, "normalized", path)
    if "world" in rec:
        _box(rec, "world", path)
    return rec


def read_bbox(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The normalised object box (min (3,), max (3,))."""
    return _box(read_bbox_record(path), "normalized", Path(path))


def read_world_box(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The object box in world units (min (3,), max (3,))."""
    return _box(read_bbox_record(path), "world", Path(path))


def read_support(path: Path) -> dict:
    """The support decision of a bbox.json: ``method`` ("plane": the support plane in the normalised frame
    is ``plane``, with the fit's ``margin``; "visibility": none was found, cull what no camera observes;
    "none": not searched, as in a bbox.json written before the support search existed) and ``message``."""
    from ..geometry.support import SupportPlane

    rec = read_bbox_record(path).get("support")
    if not isinstance(rec, dict) or "method" not in rec:
        return {
            "method": "none",
            "plane": None,
            "margin": 0.0,
            "message": f"{path} records no support search (written by an older visual-hull stage)",
        }
    plane = None
    if rec["method"] == "plane":
        try:
            p = rec["plane"]["normalized"]
            n = np.asarray(p["normal"], dtype=np.float64).reshape(3)
            plane = SupportPlane(
                n / np.linalg.norm(n),
                float(p["offset"]),
                np.zeros(0, dtype=bool),
                float(p.get("inlier_share", 0.0)),
                float(p.get("rms", 0.0)),
                float(p.get("tolerance", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(
                f"{path}: support.method is 'plane' but support.plane.normalized is not a plane "
                f"with a normal and an offset ({exc}); {REBUILD}"
            ) from exc
    margin = float((rec.get("margin") or {}).get("normalized", 0.0))
    return {
        "method": rec["method"],
        "plane": plane,
        "margin": margin,
        "message": rec.get("message", ""),
        "reason": rec.get("reason"),
    }


@dataclass
class Hull:
    """A hull.npz: the occupancy grid over its box (normalised frame) and what was stored beside it."""

    occupancy: np.ndarray  # bool (R, R, R)
    bounds_min: np.ndarray  # (3,)
    bounds_max: np.ndarray  # (3,)
    scale_mat: np.ndarray | None = None  # (4, 4): normalised -> world
    support_points: np.ndarray | None = None  # (N, 3) world: the points the support search used
    support_inliers: np.ndarray | None = None  # (N,) bool: the support plane's inliers among them
    support_views: np.ndarray | None = None  # (N, V) bool: which dataset views observe each point (SfM tracks)

    def voxel(self) -> np.ndarray:
        return (self.bounds_max - self.bounds_min) / np.array(self.occupancy.shape)


def write_hull(
    path: Path,
    occupancy: np.ndarray,
    bounds_min: np.ndarray,
    bounds_max: np.ndarray,
    scale_mat: np.ndarray,
    **extra: np.ndarray,
) -> None:
    """Write a hull.npz atomically (all or nothing: training and meshing read it). ``extra``: further arrays
    (``background_votes``, ``support_points``, ``support_inliers``, ``support_views``, ``carved``)."""
    occupancy = np.asarray(occupancy, dtype=bool)
    if occupancy.ndim != 3:
        raise ValueError(f"hull occupancy must be a 3-D grid, got shape {occupancy.shape}")
    with atomic_write(Path(path)) as fh:
        np.savez_compressed(
            fh,
            occupancy=occupancy,
            bounds_min=np.asarray(bounds_min, dtype=np.float64),
            bounds_max=np.asarray(bounds_max, dtype=np.float64),
            scale_mat=scale_mat,
            **extra,
        )


def read_hull_file(path: Path) -> Hull:
    """The hull.npz at ``path``, checked (a 3-D grid over a valid box)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: hull file not found; run the visual-hull stage or leave out --hull")
    try:
        with np.load(path) as data:
            occ = data["occupancy"].astype(bool)
            lo = data["bounds_min"].astype(np.float64).reshape(3)
            hi = data["bounds_max"].astype(np.float64).reshape(3)
            scale = data["scale_mat"].astype(np.float64) if "scale_mat" in data.files else None
            pts = data["support_points"].astype(np.float64) if "support_points" in data.files else None
            inl = data["support_inliers"].astype(bool) if "support_inliers" in data.files else None
            views = data["support_views"].astype(bool) if "support_views" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise StageError(f"{path}: not a hull.npz with occupancy, bounds_min, bounds_max ({exc}); {REBUILD}") from exc
    if occ.ndim != 3 or not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
        raise StageError(
            f"{path}: occupancy must be a 3-D grid over a valid box (shape {occ.shape}, box "
            f"{lo.tolist()} .. {hi.tolist()}); {REBUILD}"
        )
    if views is not None and (pts is None or views.ndim != 2 or len(views) != len(pts)):
        raise StageError(f"{path}: support_views does not match support_points; {REBUILD}")
    return Hull(occ, lo, hi, scale, pts, inl, views)


def held_out_points(n: int, every: int) -> np.ndarray:
    """Which of a hull's ``n`` scene points (``support_points``, in their order) training leaves out of its
    surface-point term when it holds out every ``every``-th view: every ``every``-th point, so the quality
    check can measure the mesh on points the training never fitted (all False for ``every`` <= 0)."""
    out = np.zeros(n, dtype=bool)
    if every > 0:
        out[::every] = True
    return out


def read_hull(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(occupancy bool (R,R,R), bounds_min, bounds_max) of a hull.npz."""
    h = read_hull_file(path)
    return h.occupancy, h.bounds_min, h.bounds_max


__all__ = [
    "Hull",
    "held_out_points",
    "read_bbox",
    "read_bbox_record",
    "read_hull",
    "read_hull_file",
    "read_support",
    "read_world_box",
    "write_bbox",
    "write_hull",
]
