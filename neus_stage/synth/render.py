"""Cameras and the renderer of the synthetic scenes: views placed around the object, sphere tracing of the
SDF in numpy (vectorised over all pixels of a view), Lambertian shading under a key light with soft shadows
plus hemisphere ambient, over a light grey studio backdrop or the scene's textured floor, supersampling of
silhouettes and depth edges, and the 8-bit tone map.

Camera convention (the one the NeuS loader expects, see :mod:`neus_stage.geometry.cameras`): ``K [R | t]``
maps world points to pixels of the *upright* photo, OpenCV axes (x right, y down, z forward), and the ray
of pixel (u, v) goes through the integer pixel coordinate: direction ``R^T K^-1 [u, v, 1]``. The true mask
of a pixel is the majority vote of its samples (the centre ray and four rays at +-1/4 pixel on edges).
"""

from __future__ import annotations

import numpy as np

from .scenes import Scene
from .sdf import SDF

FOCAL_35MM = 36  # full-frame equivalent focal length in mm (an integer: that is how EXIF stores it)
FULL_FRAME_DIAGONAL_MM = 43.2666  # 36 x 24 mm film; COLMAP turns the tag into pixels through the diagonal
LIGHT_DIR = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])  # towards the key light


# ------------------------------------------------------------------------------------------ cameras
def look_at(center: np.ndarray, target: np.ndarray, roll_deg: float) -> np.ndarray:
    """World->camera rotation (rows: x right, y down, z forward) for a camera at ``center``, z up world."""
    fwd = target - center
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll @ R


def _ring_placements(
    rings: tuple[tuple[float, float, float], ...], n_views: int, phase: float, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """(azimuth, elevation, distance factor) of views on rings at fixed elevations, interleaved in azimuth."""
    counts = np.floor(np.array([r[2] for r in rings]) * n_views).astype(int)
    counts[0] += n_views - counts.sum()
    placements = []
    for k, ((elev, factor, _), n_ring) in enumerate(zip(rings, counts)):
        for j in range(n_ring):
            az = phase + 360.0 * (j + 0.5 * k) / max(n_ring, 1) + rng.uniform(-2, 2)
            placements.append((az, elev + rng.uniform(-1.5, 1.5), factor * rng.uniform(0.98, 1.02)))
    return placements


def _sweep_placements(n_views: int, phase: float, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(azimuth, elevation, distance factor) of views all around, elevations 10-60 deg in three waves."""
    placements = []
    for i in range(n_views):
        az = phase + 360.0 * i / n_views + rng.uniform(-3, 3)
        # elevations sweep up and down three times around the circle, so neighbours differ a little
        el = 35.0 + 23.0 * np.sin(2 * np.pi * 3 * i / max(n_views, 1) + 0.3) + rng.uniform(-3, 3)
        placements.append((az, float(np.clip(el, 10.0, 60.0)), rng.uniform(0.95, 1.05)))
    return placements


def scene_cameras(
    scene: Scene,
    obj_center: np.ndarray,
    obj_radius: float,
    n_views: int,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K (3,3), R (N,3,3), t (N,3): views all around the object, elevations 10-60 deg, full azimuth (or, for
    a scene with ``rings``, rings of views at fixed elevations and distances, interleaved in azimuth).

    The focal length is a 36 mm full-frame equivalent (~0.83 x the image diagonal, ~51 deg across, like a
    phone camera; the photos carry it as EXIF FocalLengthIn35mmFilm, which COLMAP reads as a prior); the
    distance makes the object's bounding sphere span ~70 % of the image height (the object itself ~50 %).
    """
    f = FOCAL_35MM / FULL_FRAME_DIAGONAL_MM * np.hypot(width, height)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    dist0 = f * obj_radius / (0.35 * height) * scene.camera_distance
    phase = rng.uniform(0, 360)
    if scene.rings:
        placements = _ring_placements(scene.rings, n_views, phase, rng)
    else:
        placements = _sweep_placements(n_views, phase, rng)
    Rs, ts = [], []
    for az, el, factor in placements:
        dist = dist0 * factor
        a, e = np.radians(az), np.radians(el)
        center = obj_center + dist * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        target = obj_center + scene.aim_jitter * obj_radius * rng.uniform(-1, 1, 3)
        R = look_at(center, target, rng.uniform(-4, 4))
        Rs.append(R)
        ts.append(-R @ center)
    return K, np.stack(Rs), np.stack(ts)


# ---------------------------------------------------------------------------------------- rendering
def _ray_sphere(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Per ray from the point ``o`` along unit ``d`` (M,3): (near, far) distances of the sphere (c, r);
    near = inf, far = -inf where the ray misses it."""
    oc = o - c
    b = d @ oc
    cc = float(oc @ oc) - r * r
    disc = b * b - cc
    sq = np.sqrt(np.maximum(disc, 0.0))
    near, far = -b - sq, -b + sq
    near = np.where(disc > 0, np.maximum(near, 0.0), np.inf)
    far = np.where(disc > 0, far, -np.inf)
    return near.astype(np.float32), far.astype(np.float32)


def _sphere_trace(
    sdf: SDF,
    o: np.ndarray,
    d: np.ndarray,
    tmin: np.ndarray,
    tmax: np.ndarray,
    pix_angle: float,
    max_iter: int = 160,
) -> tuple[np.ndarray, np.ndarray]:
    """Per ray from the point ``o``: (hit, t). Converged when the distance is below a fraction of the pixel
    footprint."""
    n = len(d)
    t = tmin.copy()
    hit = np.zeros(n, dtype=bool)
    active = np.nonzero(tmin < tmax)[0]
    for _ in range(max_iter):
        if len(active) == 0:
            break
        p = o + d[active] * t[active, None]
        dist = sdf(p)
        done = dist < 0.25 * pix_angle * t[active]
        hit[active[done]] = True
        t[active[~done]] += 0.95 * dist[~done]
        keep = ~done & (t[active] < tmax[active])
        active = active[keep]
    return hit, t


def _normals(sdf: SDF, p: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Tetrahedral finite-difference gradient, normalised."""
    ks = np.float32([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]])
    g = sum(k[None, :] * sdf(p + eps * k)[:, None] for k in ks)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def _soft_shadow(sdf: SDF, p: np.ndarray, tmax: float, k: float = 10.0, iters: int = 48) -> np.ndarray:
    """Light visibility in [0, 1] towards LIGHT_DIR (the classic k * h / t penumbra estimate)."""
    ldir = LIGHT_DIR.astype(np.float32)
    res = np.ones(len(p), dtype=np.float32)
    t = np.full(len(p), 0.02, dtype=np.float32)
    active = np.arange(len(p))
    for _ in range(iters):
        if len(active) == 0:
            break
        h = sdf(p[active] + ldir * t[active, None])
        res[active] = np.minimum(res[active], k * h / t[active])
        t[active] += np.clip(h, 0.01, 0.2)
        active = active[(res[active] > 0.0) & (t[active] < tmax)]
    res = np.clip(res, 0.0, 1.0)
    return res * res * (3.0 - 2.0 * res)


def _backdrop(d: np.ndarray) -> np.ndarray:
    """A light grey studio sweep: brighter towards the top, a faint warm tint, no features."""
    up = np.clip(d[:, 2], -1.0, 1.0)
    g = 0.80 + 0.10 * up + 0.03 * np.cos(3.0 * np.arctan2(d[:, 1], d[:, 0]))
    return np.stack([g * 1.0, g * 0.99, g * 0.96], 1).astype(np.float32)


def _shade(scene: Scene, p: np.ndarray, n: np.ndarray, albedo: np.ndarray, shadow_len: float) -> np.ndarray:
    """Colour of surface points ``p`` with normals ``n``: key light (soft shadowed) plus hemisphere ambient."""
    vis = _soft_shadow(scene.sdf, p + 2e-3 * n, shadow_len)
    lam = np.clip(n @ LIGHT_DIR.astype(np.float32), 0.0, None) * vis
    ambient = 0.30 + 0.12 * n[:, 2]
    return albedo * (ambient + 0.85 * lam)[:, None]


# sample classes: 0 backdrop, 1 object, 2 floor
def _shade_floor(
    scene: Scene,
    o: np.ndarray,
    d: np.ndarray,
    shadow_len: float,
    colour: np.ndarray,
    cls: np.ndarray,
    depth: np.ndarray,
) -> None:
    """Where a ray meets the scene's floor before the object: its shaded colour, class 2 and depth (in place)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = (scene.floor_z - o[2]) / d[:, 2]
    pf = o + d * tf[:, None]
    half = scene.floor_half
    on_floor = (d[:, 2] < 0) & (tf > 0) & (np.abs(pf[:, 0]) < half) & (np.abs(pf[:, 1]) < half)
    floor = on_floor & (tf < depth)
    if floor.any():
        pfl = pf[floor].astype(np.float32)
        nfl = np.tile(np.float32([0.0, 0.0, 1.0]), (len(pfl), 1))
        colour[floor] = _shade(scene, pfl, nfl, scene.floor_albedo(pfl), shadow_len)
        cls[floor] = 2
        depth[floor] = tf[floor]


def _render_rays(
    scene: Scene, o: np.ndarray, d: np.ndarray, pix_angle: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour (M,3), class (M,), depth along the ray (M,) for rays from camera centre ``o``."""
    near, far = _ray_sphere(o, d, scene.bound_center.astype(np.float32), scene.bound_radius)
    hit, t = _sphere_trace(scene.sdf, o, d, near, far, pix_angle)
    cls = hit.astype(np.int8)
    depth = np.where(hit, t, np.inf).astype(np.float32)
    colour = _backdrop(d)
    shadow_len = 2.5 * scene.bound_radius
    if scene.floor_z is not None:
        _shade_floor(scene, o, d, shadow_len, colour, cls, depth)
    if hit.any():
        ph = (o + d[hit] * t[hit, None]).astype(np.float32)
        nh = _normals(scene.sdf, ph)
        colour[hit] = _shade(scene, ph, nh, scene.albedo(ph), shadow_len)
    return colour, cls, depth


def _edge_pixels(cls_img: np.ndarray, dep_img: np.ndarray) -> np.ndarray:
    """(H,W) bool: both pixels of every neighbour pair that differs in class or jumps in depth (> 3 %)."""
    edge = np.zeros(cls_img.shape, dtype=bool)
    for axis in (0, 1):
        dc = np.diff(cls_img, axis=axis) != 0
        dd = np.abs(np.diff(dep_img, axis=axis)) > 0.03 * np.minimum(
            np.delete(dep_img, -1, axis=axis), np.delete(dep_img, 0, axis=axis)
        )
        e = dc | dd
        if axis == 0:
            edge[:-1] |= e
            edge[1:] |= e
        else:
            edge[:, :-1] |= e
            edge[:, 1:] |= e
    return edge


def render_view(
    scene: Scene, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image float (H,W,3) linear-ish in [0,1], mask bool (H,W)) for one upright view."""
    center = (-R.T @ t).astype(np.float32)
    Kinv = np.linalg.inv(K)
    pix_angle = 1.0 / K[0, 0]

    def dirs(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        pix = np.stack([u, v, np.ones_like(u)], 1)
        d = pix @ (R.T @ Kinv).T  # world direction of K^-1 [u, v, 1]
        return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)

    vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = uu.ravel(), vv.ravel()
    colour, cls, depth = _render_rays(scene, center, dirs(u, v), pix_angle)
    dep_img = np.where(np.isfinite(depth), depth, 1e6).reshape(height, width)
    # supersample pixels on class edges and depth jumps (silhouettes, the handle over the body)
    idx = np.nonzero(_edge_pixels(cls.reshape(height, width), dep_img).ravel())[0]
    obj_frac = (cls == 1).astype(np.float32)
    if len(idx):
        offs = np.array([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]])
        su = (u[idx, None] + offs[:, 0]).ravel()
        sv = (v[idx, None] + offs[:, 1]).ravel()
        c2, k2, _ = _render_rays(scene, center, dirs(su, sv), pix_angle)
        c2 = c2.reshape(len(idx), 4, 3)
        k2 = (k2.reshape(len(idx), 4) == 1).astype(np.float32)
        colour[idx] = (colour[idx] + c2.sum(1)) / 5.0
        obj_frac[idx] = (obj_frac[idx] + k2.sum(1)) / 5.0
    image = colour.reshape(height, width, 3)
    mask = obj_frac.reshape(height, width) >= 0.5
    return image, mask


def to_srgb8(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tone map to 8 bit with a gentle gamma and a little sensor noise."""
    img = np.clip(image, 0.0, 1.0) ** (1 / 1.15)
    img = img + rng.normal(0.0, 0.006, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
