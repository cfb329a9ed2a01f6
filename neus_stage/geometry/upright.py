"""The scene's upright world frame: z up as the photos show it, the object's base at z = 0, its centre on z.

COLMAP's frame is arbitrary (origin, rotation, scale). This module finds, from arrays only (cameras,
SfM points, the object's points and visual-hull voxels, all in the SfM frame), the similarity that makes
it upright:

- **up**: the cameras' up (:func:`neus_stage.geometry.support.up_prior`: the direction most perpendicular
  to every camera's x axis, which for a ring of cameras is the ring's normal, oriented by the cameras'
  own up vectors), replaced by the normal of the support plane where the SfM points hold one under the
  object (:func:`neus_stage.geometry.support.find_support`; at most ``MAX_BELOW_SHARE`` of the object's
  points below it): a table is level, while the cameras' x axes are only as level as the photographer's
  hand (a few degrees of roll each). A plane with more of the object below it is a face of the object.
- **azimuth**: camera 0 on the -y side of the object, so the first photo looks along +y (Blender's front
  view), whatever COLMAP's orientation was.
- **base**: the support plane, unless the object's lowest points reach below it (the plane is a base
  plate's top); then, as without a plane, the object's lowest points (the ``BASE_QUANTILE`` quantile of
  their heights, robust to a stray point).
- **centre**: the middle of the object's horizontal extent: its visual-hull voxels above the base (the
  hull's cone below the base is no part of the object), else its points.

The scale is the caller's (metres per SfM unit, or 1 for SfM units).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cameras import Similarity
from .support import SupportPlane, SupportSearch, find_support

BASE_QUANTILE = 0.01
"""Without a support plane under it, the object's base is this quantile of its points' heights."""
MAX_BELOW_SHARE = 0.05
"""A plane is under the object when at most this share of the object's points lie below it (by more than the
plane's tolerance); a plane with more below is a face of the object (a lid, a shelf) and gives neither up
nor base."""


@dataclass
class UprightFrame:
    """The similarity SfM -> upright world and how each part of it was found (``record``, for meta.json)."""

    similarity: Similarity
    up_sfm: np.ndarray  # the up direction in the SfM frame (unit)
    record: dict = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two directions in degrees."""
    return float(np.degrees(np.arccos(np.clip(_unit(a) @ _unit(b), -1.0, 1.0))))


def rotation_z_up(up: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Rotation (3,3) whose rows are the new axes in the old frame: ``up`` becomes +z, the horizontal part of
    ``forward`` becomes +y (any horizontal direction where ``forward`` is vertical)."""
    z = _unit(up)
    f = np.asarray(forward, dtype=np.float64) - (np.asarray(forward, dtype=np.float64) @ z) * z
    if np.linalg.norm(f) < 1e-9:
        f = np.eye(3)[int(np.argmin(np.abs(z)))]
        f = f - (f @ z) * z
    y = _unit(f)
    x = np.cross(y, z)
    return np.stack([x, y, z])


def cameras_up(camera_x: np.ndarray, camera_up: np.ndarray) -> tuple[np.ndarray, str] | None:
    """The direction most perpendicular to every camera's own x axis (image right; photos are taken with the
    horizon level, up to the hand's roll), oriented by the cameras' up vectors; None where the x axes do not
    span a plane (every camera at one azimuth), which leaves the direction undetermined."""
    X = np.asarray(camera_x, dtype=np.float64).reshape(-1, 3)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if len(X) < 3:
        return None
    w, V = np.linalg.eigh(X.T @ X)
    if w[0] > 0.2 * w[1]:
        return None
    v = V[:, 0]
    return (
        v if v @ np.asarray(camera_up, dtype=np.float64).sum(0) >= 0 else -v
    ), "perpendicular to the cameras' x axes"


def _object_body(O: np.ndarray, Vx: np.ndarray | None, P: np.ndarray) -> tuple[np.ndarray, str]:
    """The object: its points, else its hull voxels, else the SfM points where the cameras look; and what
    they are."""
    if len(O):
        return O, "points"
    if Vx is not None and len(Vx):
        return Vx, "visual-hull voxels"
    return P, "SfM points"


def _plane_under(search: SupportSearch, body: np.ndarray, what: str) -> tuple[SupportPlane | None, list[str]]:
    """The largest qualifying plane that the object stands on (hardly any of its points below), and why
    each larger one was refused."""
    refused = []
    for cand in [search.plane, *search.alternatives] if search.plane is not None else []:
        h = body @ cand.normal + cand.offset
        below = float(np.mean(h < -cand.tolerance))
        if below <= MAX_BELOW_SHARE:
            return cand, refused
        refused.append(f"a plane with {below:.0%} of the object's {what} below it (a face of the object)")
    return None, refused


def _up(
    plane: SupportPlane | None, cam_up: np.ndarray, cam_how: str, refused: list[str], search: SupportSearch
) -> tuple[np.ndarray, dict]:
    """The up direction (the support plane's normal, else the cameras' up) and its record."""
    if plane is not None:
        up = _unit(plane.normal)
        rec = {
            "from": "support plane",
            "how": f"the normal of the support plane under the object (through "
            f"{int(np.count_nonzero(plane.inliers))} of the SfM points, {plane.inlier_share:.0%}, "
            f"rms {plane.rms:.3g}); the cameras' up ({cam_how}) is "
            f"{angle_deg(up, cam_up):.2f} deg from it",
            "angle_to_camera_up_deg": angle_deg(up, cam_up),
        }
    else:
        up = cam_up
        why = "; ".join(refused) if refused else search.message
        rec = {"from": "cameras", "how": f"the cameras' up ({cam_how}); no support plane under the object: {why}"}
    rec["direction_sfm"] = up.tolist()
    return up, rec


def _base(plane: SupportPlane | None, body: np.ndarray, up: np.ndarray, what: str) -> tuple[float, dict]:
    """The base's height along ``up`` (the support plane, unless the object reaches below it: then its
    lowest points) and its record."""
    low = float(np.quantile(body @ up, BASE_QUANTILE))
    if plane is not None and low >= -float(plane.offset) - plane.tolerance:
        # the height of the plane along ``up`` (normal @ x + offset = 0)
        return -float(plane.offset), {"from": "support plane", "how": "the support plane (the object stands on it)"}
    how = f"the object's lowest {what} ({BASE_QUANTILE:.0%} quantile of their heights)"
    if plane is not None:
        how += (
            f", {-float(plane.offset) - low:.3g} SfM units below the support plane (the plane is "
            "the top of a base plate)"
        )
    return low, {"from": f"object {what}", "how": how}


def _centre(
    Vx: np.ndarray | None, body: np.ndarray, what: str, up: np.ndarray, R: np.ndarray, base_h: float
) -> tuple[np.ndarray, dict]:
    """The middle of the object's horizontal extent (in the upright rotation ``R``'s x, y) and its record:
    the hull above the base (its cone below is no part of the object), else the points."""
    if Vx is not None and len(Vx) and (Vx @ up >= base_h).any():
        xy = (Vx[Vx @ up >= base_h] @ R.T)[:, :2]
        lo, hi = xy.min(0), xy.max(0)
        rec = {"from": "visual hull", "how": "the middle of the visual hull's horizontal extent above the base"}
    else:
        xy = (body @ R.T)[:, :2]
        lo, hi = np.quantile(xy, 0.01, axis=0), np.quantile(xy, 0.99, axis=0)
        rec = {"from": f"object {what}", "how": f"the middle of the object {what}' horizontal extent (1-99% quantiles)"}
    return (lo + hi) / 2, rec


def upright_frame(
    camera_centers: np.ndarray,
    camera_up: np.ndarray | None,
    points: np.ndarray,
    object_points: np.ndarray,
    object_voxels: np.ndarray | None = None,
    *,
    scale: float = 1.0,
    camera_x: np.ndarray | None = None,
    seed: int = 0,
) -> UprightFrame:
    """The upright frame of a scene (see the module docstring).

    ``camera_centers`` (M,3) and ``camera_up`` (M,3: minus each camera's y axis, or None) in the SfM frame;
    ``points`` (N,3): all SfM points (where a support plane is searched); ``object_points`` (K,3): the SfM
    points of the object (inside the masks); ``object_voxels`` (V,3): centres of the object's visual-hull
    voxels, or None; ``scale``: world units per SfM unit; ``camera_x`` (M,3): the cameras' x axes where
    known (the cameras' up is then perpendicular to them, :func:`cameras_up`; else
    :func:`neus_stage.geometry.support.up_prior` rebuilds them from the directions to the points). Camera 0
    defines the azimuth.
    """
    C = np.asarray(camera_centers, dtype=np.float64).reshape(-1, 3)
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    O = np.asarray(object_points, dtype=np.float64).reshape(-1, 3)
    Vx = None if object_voxels is None else np.asarray(object_voxels, dtype=np.float64).reshape(-1, 3)
    search = find_support(P, C, camera_up, seed=seed)
    own = cameras_up(camera_x, camera_up) if camera_x is not None and camera_up is not None else None
    cam_up, cam_how = own if own is not None else (search.up, search.up_source)
    cam_up = _unit(cam_up)
    rec: dict = {
        "camera_up": {"direction_sfm": cam_up.tolist(), "how": cam_how},
        "support_search": {"reason": search.reason, "message": search.message},
    }
    body, what = _object_body(O, Vx, P)
    plane, refused = _plane_under(search, body, what)
    up, rec["up"] = _up(plane, cam_up, cam_how, refused, search)
    R = rotation_z_up(up, np.median(body, axis=0) - C[0])
    base_h, rec["base"] = _base(plane, body, up, what)
    c_xy, rec["centre"] = _centre(Vx, body, what, up, R, base_h)
    origin = R.T @ np.array([c_xy[0], c_xy[1], base_h])  # the SfM point that becomes the world origin
    s = float(scale)
    sim = Similarity(s, R, -s * R @ origin, 0.0)
    rec["azimuth"] = "camera 0 on the -y side of the object (the first photo looks along +y)"
    rec["origin_sfm"] = origin.tolist()
    return UprightFrame(sim, up, rec)


__all__ = [
    "BASE_QUANTILE",
    "MAX_BELOW_SHARE",
    "UprightFrame",
    "angle_deg",
    "cameras_up",
    "rotation_z_up",
    "upright_frame",
]
