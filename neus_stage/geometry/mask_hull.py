"""The voting visual hull of the masks stage's multi-view check, on arrays: where the cameras converge, the box
that holds the object, the votes of the views' masks on a voxel grid (:func:`neus_stage.geometry.carving.vote`),
which voxels are occupied, the hull's silhouette in one view, and the IoU of two masks.

Cameras are a :class:`~neus_stage.geometry.cameras.CameraSet` (NeuS pixel convention); masks are (H,W) bool
arrays by view name, each the size of its image.
"""

from __future__ import annotations

import numpy as np

from ..errors import StageError
from .cameras import CameraSet, pixel_index
from .carving import vote
from .halfspace import voxel_centers
from .silhouette import surface_cells

HULL_RESOLUTION = 128
# a voxel stays occupied while at most max(1, this share of the views that see it) call it background
HULL_BACKGROUND_SHARE = 0.05
# the looser vote that outliers are judged against (see neus_stage.masks_check.check_consistency)
HULL_OUTLIER_SHARE = 0.2


def convergence_point(cams: CameraSet, names: list[str] | None = None) -> np.ndarray | None:
    """The point nearest to every optical axis (least squares): where the cameras of an object capture
    converge. None where the axes are close to parallel (a frontal capture) or the point is behind cameras."""
    idx = [cams.index(s) for s in (cams.names if names is None else names)]
    axes = cams.R[idx, 2]  # the cameras' z axes (viewing directions) in the world
    centres = cams.centers[idx]
    M, b = np.zeros((3, 3)), np.zeros(3)
    for a, c in zip(axes, centres):
        P = np.eye(3) - np.outer(a, a)
        M += P
        b += P @ c
    w = np.linalg.eigvalsh(M)
    if w[0] < 0.05 * w[-1]:
        return None
    x = np.linalg.solve(M, b)
    in_front = np.einsum("ij,ij->i", x - centres, axes) > 0
    return x if in_front.mean() >= 0.8 else None


def well_seen(voters: list[str]) -> int:
    """Views a voxel must be seen by to count in a hull that masks are compared with: a quarter of them (as
    the visual-hull stage), at least 3. Voxels that few views see are barely carved (the space between a
    frame-filling object and the cameras): with them the hull of DTU scan 24's reference masks projects to a
    median IoU of 0.80 with those masks, without them 0.89."""
    return max(3, len(voters) // 4)


def hull_occupancy(
    seen: np.ndarray, background: np.ndarray, background_share: float = HULL_BACKGROUND_SHARE, min_views: int = 3
) -> np.ndarray:
    """Occupied voxels: seen by >= min_views voters, at most max(1, background_share x seen) of which say
    background, but never a quarter of them (a voxel seen by only 3 views, at the grid's corners, must be
    foreground in all of them)."""
    allowed = np.minimum(np.maximum(1, np.floor(background_share * seen)), np.floor((seen - 1) / 4))
    return (seen >= min_views) & (background <= allowed)


def _mask_view(cams: CameraSet, name: str, mask: np.ndarray):
    """One view of the carver: which points it sees (in front, inside the mask) and which its mask holds."""
    i = cams.index(name)

    def look(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv, z = cams.project(i, points)
        col, row, inside = pixel_index(uv, mask.shape[1], mask.shape[0])
        inside &= z > 0
        fg = np.zeros(len(points), bool)
        fg[inside] = mask[row[inside], col[inside]]
        return inside, fg

    return look


def hull_votes(
    cams: CameraSet,
    masks: dict[str, np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    resolution: int = HULL_RESOLUTION,
    voters: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Votes on a voxel grid over [lo, hi]: (seen, background) counts (nx,ny,nz) of the voters that see each
    voxel and of those whose mask calls it background, the voxel centres (N,3) and the voxel size.

    A voxel that more voters call background than :func:`hull_occupancy` ever allows is carved whatever the
    rest say, so it is not projected into the remaining views (its counts stop there)."""
    voters = cams.names if voters is None else voters
    # ``resolution`` voxels along the box's middle side (a hull that is long in depth, as from a narrow arc of
    # views, keeps its resolution across), at most ``resolution``^3 voxels
    extent = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    size = max(float(np.median(extent)) / resolution, float(np.prod(extent)) ** (1 / 3) / resolution)
    n = np.maximum(np.ceil(extent / size).astype(int), 1)
    X = voxel_centers(lo, lo + n * size, tuple(n)).reshape(-1, 3)
    looks = (_mask_view(cams, s, masks[s]) for s in voters)
    seen, background = vote(X, looks, max(0, (len(voters) - 1) // 4), dtype=np.int16)
    return seen.reshape(n), background.reshape(n), X, size


def _silhouette_radius(cams: CameraSet, masks: dict[str, np.ndarray], voters: list[str], c0: np.ndarray) -> float:
    """How far from ``c0`` the object can reach across the views: the farthest mask pixel edge from c0's image,
    at c0's depth, over the voters."""
    radius = 0.0
    for s in voters:
        ys, xs = np.nonzero(masks[s])
        if len(xs) == 0:
            continue
        uv, z = cams.project(s, c0[None])
        if z[0] <= 0:
            continue
        u, v = uv[0]
        # to the outer edges of the outermost pixels: pixel (col, row) covers [col - 0.5, col + 0.5)
        px = np.sqrt(
            ((np.array([xs.min() - 0.5, xs.max() + 0.5]) - u) ** 2).max()
            + ((np.array([ys.min() - 0.5, ys.max() + 0.5]) - v) ** 2).max()
        )
        radius = max(radius, float(px / cams.K[cams.index(s)][0, 0] * z[0]))
    return radius


def _occupied_bounds(occ: np.ndarray, lo: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(occ)
    return lo + idx.min(0) * voxel, lo + (idx.max(0) + 1) * voxel


def _shrink_to_hull(
    cams: CameraSet,
    masks: dict[str, np.ndarray],
    voters: list[str],
    lo: np.ndarray,
    hi: np.ndarray,
    resolution: int,
    max_rounds: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The box (lo, hi) carved again in the padded box of the loose hull it kept, until it stops shrinking."""
    min_views = well_seen(voters)
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        seen, background, _, voxel = hull_votes(cams, masks, lo, hi, resolution, voters=voters)
        occ = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=min_views)
        if not occ.any():
            raise StageError(
                f"the masks' visual hull is empty: no region is foreground in {min_views} or more of the "
                f"{len(voters)} views that see it; the masks and the camera poses disagree (check the masks, "
                "overlay.jpg, and sfm/report.json)"
            )
        olo, ohi = _occupied_bounds(occ, lo, voxel)
        pad = 2 * voxel + 0.05 * (ohi - olo)
        new_lo, new_hi = np.maximum(olo - pad, lo), np.minimum(ohi + pad, hi)
        shrunk = np.prod(new_hi - new_lo) < 0.7 * np.prod(hi - lo)
        lo, hi = new_lo, new_hi
        if not shrunk:
            break
    return lo, hi, rounds


def object_region(
    cams: CameraSet,
    masks: dict[str, np.ndarray],
    voters: list[str],
    points: np.ndarray,
    resolution: int = 48,
    max_rounds: int = 5,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Box (lo, hi) holding the object, found from the silhouettes themselves: a coarse loose voting hull of
    the well-seen voxels is carved in a cube around the cameras' convergence point (or, where they do not
    converge, the median of the scene's ``points`` (K,3)) reaching 80% of the way to the nearest camera (the
    object lies between the cameras), then again in the padded box of what it kept, until the box stops
    shrinking.

    The SfM points do not bound the object: on a textured floor most points lie on the floor, and the few on
    the object may cover only a textured band of it (boxing them cut the object's hull in half)."""
    centres = cams.centers[[cams.index(s) for s in voters]]
    c0 = convergence_point(cams, voters)
    how = "camera convergence"
    if c0 is None:
        if len(points) == 0:
            raise StageError(
                "the cameras do not converge on one region and there are no SfM points to place the "
                "object; photograph the object from all around it"
            )
        c0, how = np.median(points, axis=0), "median of the SfM points"
    distances = np.linalg.norm(centres - c0, axis=1)
    reach = float(np.median(distances))
    # In every view the object lies inside its silhouette, which bounds it across the view; along the view only
    # other views bound it, and a hull from a narrow arc of views is long in depth. Objects are about as deep as
    # they are wide: the box is a cube of 1.25 x the widest silhouette radius, and never reaches 80% of the
    # way to the nearest camera (the object lies between the cameras).
    radius = _silhouette_radius(cams, masks, voters, c0)
    half = min(0.8 * distances.min(), 1.25 * radius) if radius > 0 else 0.8 * distances.min()
    lo, hi, rounds = _shrink_to_hull(cams, masks, voters, c0 - half, c0 + half, resolution, max_rounds)
    return lo, hi, {"centre_from": how, "reach": reach, "silhouette_radius": radius, "rounds": rounds}


def hull_surface(occ: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Centres (K,3) of the occupied voxels (grid ``occ`` of centres ``X``) on the hull's surface: all a
    silhouette needs. Computed once per hull for :func:`project_surface` in every view."""
    return X[surface_cells(occ).reshape(-1)]


def project_surface(cams: CameraSet, name: str, P: np.ndarray, voxel: float, shape: tuple[int, int]) -> np.ndarray:
    """Silhouette in view ``name`` of a hull whose surface voxels (of side ``voxel``) have centres ``P`` (K,3),
    drawn at the voxels' own resolution.

    The surface voxels' centres are splatted into a grid whose cells are as large as the largest voxel
    footprint in this view (so neighbouring voxels leave no gap), closed over diagonal gaps, and the grid is
    upsampled bilinearly and thresholded at one half, which puts the silhouette's edge half a cell outside
    the outermost voxel centres, where the voxels' own edges are. The cost is one projection per surface
    voxel, whatever the image size (splatting a square of the footprint's side per voxel, as before, took
    minutes a view on 2 MP photos of a frame-filling object)."""
    import cv2

    h, w = shape
    if len(P) == 0:
        return np.zeros(shape, bool)
    uv, z = cams.project(name, P)
    ok = z > 0
    # image-plane coordinates from the image's top-left corner (pixel (col, row) covers [col, col + 1) there)
    u, v, z = uv[ok, 0] + 0.5, uv[ok, 1] + 0.5, z[ok]
    if len(u) == 0:
        return np.zeros(shape, bool)
    K = cams.K[cams.index(name)]
    cell = float(max(1.0, voxel * max(K[0, 0], K[1, 1]) / np.percentile(z, 2)))
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2  # one spare cell on every side
    gi = np.floor(v / cell).astype(np.int64) + 1
    gj = np.floor(u / cell).astype(np.int64) + 1
    keep = (gi >= 0) & (gi < gh) & (gj >= 0) & (gj < gw)
    grid = np.zeros((gh, gw), np.uint8)
    grid[gi[keep], gj[keep]] = 1
    grid = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    grid = grid.astype(bool)
    # pixel (x, y) (centre at x + 0.5 from the corner) lies at grid coordinate (x + 0.5) / cell + 1 - 0.5 in
    # cell centre units: sample the grid there bilinearly
    xs = (np.arange(w) + 0.5) / cell + 0.5
    ys = (np.arange(h) + 0.5) / cell + 0.5
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    map_y = np.broadcast_to(ys[:, None], (h, w)).astype(np.float32)
    up = cv2.remap(grid.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return up >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (1 where both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def footprint_px(cams: CameraSet, name: str, voxel: float, centre: np.ndarray) -> int:
    """The side in pixels (at least 1) of a voxel of size ``voxel`` at ``centre``, seen in view ``name``."""
    _, z = cams.project(name, centre[None])
    K = cams.K[cams.index(name)]
    return max(1, int(round(voxel * K[0, 0] / max(float(z[0]), 1e-9))))
