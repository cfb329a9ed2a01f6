"""Synthetic test scenes with known geometry and cameras: photos, true masks, NeuS cameras, ground-truth mesh.

A scene is an analytic signed distance function (negative inside, world units) with a solid 3D albedo.
Photos are rendered by sphere tracing the SDF in numpy (vectorised over all pixels of a view), with
Lambertian shading under a key light with soft shadows plus hemisphere ambient, over a light grey studio
backdrop (or a textured table top for the ``floor`` scene). Pixels on silhouettes and depth edges are
supersampled so the photos look like real, antialiased camera images.

Camera convention (the one the NeuS loader expects, see :mod:`neus_stage.geometry.cameras`): ``world_mat = K [R | t]``
maps world points to pixels of the *upright* photo, OpenCV axes (x right, y down, z forward), and the ray
of pixel (u, v) goes through the integer pixel coordinate: direction ``R^T K^-1 [u, v, 1]``. The true mask
of a pixel is the majority vote of its samples (the centre ray and four rays at +-1/4 pixel on edges).

World units: the mug is 1.0 unit tall (think decimetres), the scene sits near, not at, the origin and is
turned about the vertical, so that every stage has to find the object's frame rather than assume it.
``z`` is up in the world.

Scenes (``SCENES``):
- ``mug``: the demo. A hollow cup (concavity), a thin wall and a thin handle, and a through hole (the
  handle loop); rich non-repeating solid texture so COLMAP and rembg work unassisted.
- ``cut``: the mug seen by close cameras that aim off-centre: the object leaves the frame in many views.
- ``parts``: three separate objects (a rounded box, a bumpy ball, a standing ring).
- ``floor``: the mug standing on a textured table top; the table is neither in the masks nor in gt.ply.
- ``teapot``: a body with a spout and a ring handle on a large textured floor, seen from two camera rings
  (25 and 50 deg elevation at slightly different distances): the floor fills much of every view, so most
  SfM points lie on it, not on the object.
- ``pot``: a deep pot (outer radius 0.9, 1.5 tall, wall 0.08) on a textured floor at z = 0, two rings at 35
  and 60 deg: a concavity no silhouette shows, and a visual hull that continues under the floor as a cone.
- ``house``: a model town (blocks with roofs, a tower) on a textured base plate that is part of the object,
  photographed from close so that it fills most of every frame (as DTU scan 24): single-image saliency
  fails there.
- ``vase``: a hollow vase (a surface of revolution 1.4 tall) on a textured floor, two rings at 30 and 55 deg.
- ``box``: a rounded box 0.55 tall on a textured floor, two rings: its flat top is parallel to the floor.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .artifacts.dataset import write_cameras_sphere
from .artifacts.meshes import write_mesh
from .errors import StageError
from .geometry.cameras import scale_mat_from_sphere

log = logging.getLogger(__name__)

SDF = Callable[[np.ndarray], np.ndarray]
Albedo = Callable[[np.ndarray], np.ndarray]

# EXIF Orientation values and the PIL transpose that turns the upright image into the stored one
# (ImageOps.exif_transpose applies the inverse when reading).
_EXIF_STORE = {
    6: Image.Transpose.ROTATE_90,  # stored turned 90 deg counter-clockwise; viewers turn it clockwise
    8: Image.Transpose.ROTATE_270,
    3: Image.Transpose.ROTATE_180,
}


# ----------------------------------------------------------------------------------------- SDF toolkit
def _length(*xs: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(x * x for x in xs))


def sd_capped_cylinder_z(p: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    """Exact SDF of a solid cylinder about the z axis, centred at the origin."""
    dx = _length(p[:, 0], p[:, 1]) - radius
    dz = np.abs(p[:, 2]) - half_height
    outside = _length(np.maximum(dx, 0.0), np.maximum(dz, 0.0))
    return np.minimum(np.maximum(dx, dz), 0.0) + outside


def sd_rounded_cylinder_z(p: np.ndarray, radius: float, half_height: float, rounding: float) -> np.ndarray:
    return sd_capped_cylinder_z(p, radius - rounding, half_height - rounding) - rounding


def sd_torus_y(p: np.ndarray, major: float, minor: float) -> np.ndarray:
    """Torus whose ring lies in the xz plane (axis along y)."""
    q = _length(p[:, 0], p[:, 2]) - major
    return _length(q, p[:, 1]) - minor


def sd_torus_z(p: np.ndarray, major: float, minor: float) -> np.ndarray:
    q = _length(p[:, 0], p[:, 1]) - major
    return _length(q, p[:, 2]) - minor


def sd_round_box(p: np.ndarray, half: np.ndarray, rounding: float) -> np.ndarray:
    q = np.abs(p) - (np.asarray(half) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    return outside + np.minimum(q.max(axis=1), 0.0) - rounding


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (a lower bound of min, so sphere tracing stays safe)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smin(-a, -b, k)


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _placed(local: SDF, rotation: np.ndarray, offset: np.ndarray) -> SDF:
    """World SDF of a local-frame SDF placed by x_world = rotation @ x_local + offset (rigid: exact)."""
    rot = np.asarray(rotation, dtype=np.float32)
    off = np.asarray(offset, dtype=np.float32)

    def sdf(p: np.ndarray) -> np.ndarray:
        return local((p - off) @ rot)  # rows: R^T (p - off)

    return sdf


# ------------------------------------------------------------------------------------ solid textures
class _Noise:
    """Value noise on a hashed integer lattice (period 256 lattice cells: non-repeating on the object)."""

    def __init__(self, rng: np.random.Generator):
        self.perm = np.concatenate([rng.permutation(256)] * 2).astype(np.int64)
        self.values = rng.random(256).astype(np.float32)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        f = np.floor(p)
        i = f.astype(np.int64) & 255
        w = p - f
        w = w * w * (3.0 - 2.0 * w)  # smoothstep fade
        perm, vals = self.perm, self.values
        out = np.zeros(len(p), dtype=np.float32)
        for dx in (0, 1):
            wx = w[:, 0] if dx else 1.0 - w[:, 0]
            hx = perm[i[:, 0] + dx]
            for dy in (0, 1):
                wy = w[:, 1] if dy else 1.0 - w[:, 1]
                hy = perm[hx + i[:, 1] + dy]
                for dz in (0, 1):
                    wz = w[:, 2] if dz else 1.0 - w[:, 2]
                    out += wx * wy * wz * vals[perm[hy + i[:, 2] + dz]]
        return out

    def fbm(self, p: np.ndarray, octaves: int = 4) -> np.ndarray:
        total = np.zeros(len(p), dtype=np.float32)
        amp, norm = 1.0, 0.0
        for o in range(octaves):
            total += amp * self(p * (2.0**o) + 17.3 * o)
            norm += amp
            amp *= 0.5
        return total / norm


def _palette_albedo(rng: np.random.Generator, palette: np.ndarray, scale: float = 1.0) -> Albedo:
    """Rich, non-repeating solid texture: colour regions, high-contrast spots and fine grain.

    Low-frequency fBm picks smoothly blended palette colours; mid-frequency noise thresholded into blobs
    gives dark and cream spots (strong, well-localised SIFT blobs); high-frequency noise adds grain.
    ``scale`` is the object size the texture frequencies are tuned for (1 = the mug).
    """
    noise = _Noise(rng)
    palette = np.asarray(palette, dtype=np.float32)
    shifts = rng.uniform(-50, 50, size=(4, 3)).astype(np.float32)

    def albedo(p: np.ndarray) -> np.ndarray:
        q = p / scale
        base_t = noise.fbm(q * 2.2 + shifts[0], 3)
        base_t = np.clip((base_t - 0.25) / 0.5, 0.0, 0.999) * (len(palette) - 1)
        k = np.floor(base_t).astype(np.int64)
        frac = base_t - k
        frac = np.clip((frac - 0.3) / 0.4, 0.0, 1.0)[:, None]  # mostly flat colours, short blends
        col = palette[k] * (1.0 - frac) + palette[np.minimum(k + 1, len(palette) - 1)] * frac
        kind = noise(q * 3.0 + shifts[2])
        dark_col = np.where((kind > 0.5)[:, None], [0.06, 0.05, 0.08], [0.30, 0.04, 0.04]).astype(np.float32)
        light_col = np.float32([0.95, 0.90, 0.70])
        # spots at three scales (blob diameters ~0.09, ~0.045, ~0.025 units): dark and cream
        for j, freq in enumerate((8.0, 16.0, 30.0)):
            spots = noise(q * freq + shifts[1] + 31.7 * j)
            dark = np.clip((spots - 0.70) / 0.05, 0.0, 1.0)[:, None]
            light = np.clip((0.28 - spots) / 0.05, 0.0, 1.0)[:, None]
            col = col * (1.0 - dark) + dark_col * dark
            col = col * (1.0 - light) + light_col * light
        grain = noise.fbm(q * 28.0 + shifts[3], 2)
        return np.clip(col * (0.7 + 0.6 * grain[:, None]), 0.0, 1.0)

    return albedo


MUG_PALETTE = [
    [0.62, 0.16, 0.10],  # terracotta
    [0.10, 0.22, 0.55],  # deep blue
    [0.78, 0.55, 0.10],  # ochre
    [0.08, 0.45, 0.42],  # teal
    [0.36, 0.20, 0.45],  # plum
]


# ------------------------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    """An object in world units: SDF, albedo, a loose bounding sphere, and camera placement hints."""

    name: str
    sdf: SDF
    albedo: Albedo
    bound_center: np.ndarray  # a sphere that surely contains the object (for ray starts and the gt grid)
    bound_radius: float
    floor_z: float | None = None  # a textured table top at this height (not part of the object)
    floor_albedo: Albedo | None = None
    camera_distance: float = 1.0  # in units of the (tight) bounding radius at fill_scale; see _cameras
    aim_jitter: float = 0.03  # look-at jitter, in units of the bounding radius
    floor_half: float = 4.0  # half the side of the square table top, centred on the world origin
    # camera rings (elevation deg, distance factor, share of the views); None: the default sweep of
    # elevations 10-60 deg (three waves around the circle)
    rings: tuple[tuple[float, float, float], ...] | None = None


def _mug_local(p: np.ndarray) -> np.ndarray:
    """A mug 1.0 tall, radius 0.45, 0.05 thick wall, 0.08 thick bottom, a ring handle; base at z = 0."""
    body = sd_rounded_cylinder_z(p - np.float32([0.0, 0.0, 0.5]), 0.45, 0.5, 0.03)
    cavity = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.6]), 0.40, 0.52)  # from z = 0.08 up
    cup = smax(body, -cavity, 0.012)
    handle = sd_torus_y(p - np.float32([0.62, 0.0, 0.52]), 0.22, 0.05)
    handle = np.maximum(handle, 0.43 - p[:, 0])  # keep what lies outside the wall
    return smin(cup, handle, 0.03)


MUG_LOCAL_BOX = np.array([[-0.45, -0.45, 0.0], [0.89, 0.45, 1.0]])


def _mug_placement() -> tuple[np.ndarray, np.ndarray]:
    """The mug's pose in the world: turned 35 deg about z, base centre at (0.13, -0.08, -0.37)."""
    return _rot_z(35.0), np.array([0.13, -0.08, -0.37])


def _mug(rng: np.random.Generator) -> Scene:
    rot, off = _mug_placement()
    centre_local = MUG_LOCAL_BOX.mean(0)
    radius = 0.5 * np.linalg.norm(MUG_LOCAL_BOX[1] - MUG_LOCAL_BOX[0]) + 0.02
    return Scene(
        name="mug",
        sdf=_placed(_mug_local, rot, off),
        albedo=_palette_albedo(rng, MUG_PALETTE),
        bound_center=rot @ centre_local + off,
        bound_radius=float(radius),
    )


def _cut(rng: np.random.Generator) -> Scene:
    scene = _mug(rng)
    scene.name = "cut"
    scene.camera_distance = 0.55  # close: the object overfills the frame
    scene.aim_jitter = 0.45  # and the cameras aim off-centre
    return scene


def _wood_albedo(rng: np.random.Generator, board: float = 0.35) -> Albedo:
    """A textured table top: boards of ``board`` units with grain and a slight checker."""
    noise = _Noise(rng)

    def wood(p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0] / (board / 0.35), p[:, 1] / (board / 0.35)
        plank = np.floor(x / 0.35)
        grain = noise(np.stack([x * 2.0, y * 14.0 + plank * 7.1, plank * 3.3], 1))
        checker = ((np.floor(x / 0.35) + np.floor(y / 0.7 + 0.5 * plank)) % 2).astype(np.float32)
        base = np.float32([0.62, 0.47, 0.30]) * (0.8 + 0.25 * checker)[:, None]
        return np.clip(base * (0.7 + 0.6 * grain[:, None]), 0.0, 1.0)

    return wood


def _floor(rng: np.random.Generator) -> Scene:
    scene = _mug(rng)
    scene.name = "floor"
    rot, off = _mug_placement()
    scene.floor_z = float(off[2])  # the mug's base stands on the table
    scene.floor_albedo = _wood_albedo(rng)
    return scene


def _glazed_albedo(rng: np.random.Generator, base: tuple[float, float, float], scale: float = 1.0) -> Albedo:
    """A plain glaze: a slow colour variation and a faint grain, too smooth for many SIFT features."""
    noise = _Noise(rng)
    col = np.float32(base)

    def albedo(p: np.ndarray) -> np.ndarray:
        q = p / scale
        t = noise.fbm(q * 1.5, 3)[:, None]
        g = noise(q * 12.0)[:, None]
        return np.clip(col * (0.75 + 0.5 * t) + 0.04 * (g - 0.5), 0.0, 1.0)

    return albedo


def _teapot(rng: np.random.Generator) -> Scene:
    """A squat body with a spout and a ring handle, base at z = 0 near the origin, on a large floor. A plain
    glaze with one decorated band round the belly: nearly all of the object's SfM points lie in the band
    (and most of the scene's on the floor), the case where boxing the object by its SfM points cuts it."""
    rot, off = _rot_z(-20.0), np.array([0.21, 0.12, 0.0])
    glaze = _glazed_albedo(rng, (0.22, 0.42, 0.58))
    pattern = _palette_albedo(rng, MUG_PALETTE[1:])

    def albedo(p: np.ndarray) -> np.ndarray:
        band = (np.abs(p[:, 2] - 0.36) < 0.07)[:, None]
        return np.where(band, pattern(p), glaze(p))

    def local(p: np.ndarray) -> np.ndarray:
        q = p - np.float32([0.0, 0.0, 0.38])
        body = _length(q[:, 0], q[:, 1], 1.25 * q[:, 2]) - 0.45  # an oblate ellipsoid, flattened below
        body = smax(body, -p[:, 2], 0.02)  # cut flat at z = 0 (it stands on the floor)
        lid = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.74]), 0.16, 0.04)
        knob = _length(p[:, 0], p[:, 1], p[:, 2] - 0.82) - 0.06
        # a spout: a capsule leaning forward and up from the body's side
        a, b = np.float32([0.33, 0.0, 0.28]), np.float32([0.72, 0.0, 0.62])
        ab = b - a
        h = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
        spout = np.linalg.norm(p - (a + h[:, None] * ab), axis=1) - (0.09 - 0.04 * h)
        handle = sd_torus_y(p - np.float32([-0.5, 0.0, 0.42]), 0.2, 0.045)
        handle = np.maximum(handle, p[:, 0] + 0.38)  # only the part outside the body
        return smin(smin(smin(body, lid, 0.02), knob, 0.02), smin(spout, handle, 0.001), 0.03)

    box = np.array([[-0.75, -0.45, 0.0], [0.82, 0.45, 0.88]])
    return Scene(
        name="teapot",
        sdf=_placed(local, rot, off),
        albedo=albedo,
        bound_center=rot @ box.mean(0) + off,
        bound_radius=float(0.5 * np.linalg.norm(box[1] - box[0]) + 0.03),
        floor_z=0.0,
        floor_albedo=_wood_albedo(rng),
        floor_half=8.0,
        rings=((25.0, 1.0, 0.5), (50.0, 1.12, 0.5)),
    )


def _pot(rng: np.random.Generator) -> Scene:
    """A deep pot: outer radius 0.9, 1.5 tall, wall 0.08, bottom 0.1 thick, base at z = 0 (on the floor)."""

    def sdf(p: np.ndarray) -> np.ndarray:
        outer = sd_rounded_cylinder_z(p - np.float32([0.0, 0.0, 0.75]), 0.9, 0.75, 0.04)
        inner = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.85 + 0.1]), 0.82, 0.85)  # from z = 0.1 up
        return smax(outer, -inner, 0.015)

    return Scene(
        name="pot",
        sdf=sdf,
        albedo=_palette_albedo(rng, MUG_PALETTE, scale=1.5),
        bound_center=np.array([0.0, 0.0, 0.75]),
        bound_radius=float(np.hypot(0.9, 0.75) + 0.05),
        floor_z=0.0,
        floor_albedo=_wood_albedo(rng, board=0.6),
        floor_half=6.0,
        rings=((35.0, 1.0, 0.5), (60.0, 1.05, 0.5)),
    )


def _house(rng: np.random.Generator) -> Scene:
    """Blocks with pitched roofs and a round tower on a 2.0 x 1.6 base plate (all one object), seen from close
    over a plain pale table: the object fills most of the frame and is cut by it in many views."""
    noise = _Noise(rng)

    def block(p, c, half, roof):
        q = p - np.float32(c)
        walls = sd_round_box(q - np.float32([0, 0, half[2]]), np.float32(half), 0.01)
        # a pitched roof: a prism along x over the block
        top = q[:, 2] - 2 * half[2]
        prism = np.maximum(np.abs(q[:, 1]) * roof / half[1] + top - roof, -top)
        prism = np.maximum(prism, np.abs(q[:, 0]) - half[0])
        return np.minimum(walls, prism)

    def sdf(p: np.ndarray) -> np.ndarray:
        base = sd_round_box(p - np.float32([0.0, 0.0, 0.04]), np.float32([1.0, 0.8, 0.04]), 0.01)
        a = block(p, [-0.45, 0.25, 0.08], [0.45, 0.22, 0.3], 0.18)
        b = block(p @ _rot_z(90).astype(np.float32), [-0.1, -0.55, 0.08], [0.35, 0.2, 0.22], 0.15)
        c = block(p, [0.35, -0.4, 0.08], [0.3, 0.25, 0.4], 0.2)
        tower = sd_capped_cylinder_z(p - np.float32([0.7, 0.45, 0.58]), 0.14, 0.5)
        cone = np.maximum(_length(p[:, 0] - 0.7, p[:, 1] - 0.45) - 0.16 * (1.36 - p[:, 2]) / 0.28,
                          np.abs(p[:, 2] - 1.22) - 0.14)
        return np.minimum.reduce([base, a, b, c, tower, cone])

    brick = _palette_albedo(rng, [[0.55, 0.18, 0.12], [0.62, 0.25, 0.16], [0.45, 0.14, 0.10]], scale=0.6)
    roof_alb = _palette_albedo(rng, [[0.45, 0.47, 0.50], [0.35, 0.37, 0.40], [0.20, 0.42, 0.30]], scale=0.6)

    def albedo(p: np.ndarray) -> np.ndarray:
        out = brick(p)
        high = (p[:, 2] > 0.5).astype(np.float32)[:, None]
        plate = p[:, 2] < 0.085
        out = out * (1 - high) + roof_alb(p) * high
        if plate.any():  # the base plate: grey paving with dark joints
            tiles = noise(p[plate] * 25.0)
            out[plate] = np.float32([0.55, 0.55, 0.52]) * (0.6 + 0.6 * tiles[:, None])
        return np.clip(out, 0.0, 1.0)

    def table(p: np.ndarray) -> np.ndarray:
        return np.tile(np.float32([0.93, 0.93, 0.92]), (len(p), 1)) * (
            0.97 + 0.03 * noise(p * 3.0)[:, None])

    return Scene(
        name="house",
        sdf=sdf,
        albedo=albedo,
        bound_center=np.array([0.0, 0.0, 0.7]),
        bound_radius=1.45,
        floor_z=0.0,
        floor_albedo=table,
        floor_half=5.0,
        camera_distance=0.42,
        aim_jitter=0.3,
        rings=((30.0, 1.0, 0.5), (55.0, 1.05, 0.5)),
    )


def _parts(rng: np.random.Generator) -> Scene:
    palettes = [MUG_PALETTE[:3], MUG_PALETTE[2:], [MUG_PALETTE[0], MUG_PALETTE[3], MUG_PALETTE[4]]]
    albedos = [_palette_albedo(rng, pal, scale=0.8) for pal in palettes]
    offset = np.float32([-0.12, 0.21, 0.15])
    box_c = np.float32([-0.55, -0.35, 0.0])  # gaps between the parts: 0.3 to 0.45 units
    ball_c = np.float32([0.55, -0.25, 0.05])
    ring_c = np.float32([0.0, 0.55, 0.05])
    noise = _Noise(rng)

    def parts_local(p: np.ndarray) -> np.ndarray:
        box = sd_round_box((p - box_c) @ _rot_z(20).astype(np.float32), np.float32([0.3, 0.22, 0.3]), 0.05)
        q = p - ball_c
        ball = _length(q[:, 0], q[:, 1], q[:, 2]) - 0.3
        ball = ball + 0.03 * (noise(q * 4.0) - 0.5)  # bumpy (still a valid bound with the 0.9 step)
        ring = sd_torus_y(p - ring_c, 0.26, 0.07)
        return np.minimum(np.minimum(box, ball), ring)

    def sdf(p: np.ndarray) -> np.ndarray:
        return parts_local(p - offset)

    def albedo(p: np.ndarray) -> np.ndarray:
        q = p - offset
        d = np.stack(
            [
                np.linalg.norm(q - box_c, axis=1) - 0.35,
                np.linalg.norm(q - ball_c, axis=1) - 0.3,
                np.linalg.norm(q - ring_c, axis=1) - 0.3,
            ]
        )
        which = d.argmin(0)
        out = np.empty((len(p), 3), dtype=np.float32)
        for k, alb in enumerate(albedos):
            sel = which == k
            if sel.any():
                out[sel] = alb(p[sel])
        return out

    return Scene(
        name="parts",
        sdf=sdf,
        albedo=albedo,
        bound_center=offset.astype(np.float64),
        bound_radius=1.05,
    )


def _bowl(rng: np.random.Generator) -> Scene:
    """A wide bowl: a spherical shell (outer radius 0.8, wall 0.06) below its rim at z = 0.8, on a ring foot
    (base at z = 0). Its inside, open to every camera above the rim, is the concavity a silhouette fills."""

    def sdf(p: np.ndarray) -> np.ndarray:
        c = np.float32([0.0, 0.0, 0.82])
        shell = np.abs(np.linalg.norm(p - c, axis=1) - 0.77) - 0.03
        shell = smax(shell, p[:, 2] - 0.8, 0.01)  # only below the rim
        foot = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.05]), 0.32, 0.05)
        foot = smax(foot, -sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.05]), 0.26, 0.06), 0.005)
        return smin(shell, foot, 0.02)

    return Scene(
        name="bowl",
        sdf=sdf,
        albedo=_palette_albedo(rng, MUG_PALETTE[::-1]),
        bound_center=np.array([0.0, 0.0, 0.42]),
        bound_radius=float(np.hypot(0.8, 0.42) + 0.05),
    )


def _slot(rng: np.random.Generator) -> Scene:
    """A block (1.2 x 0.8, 0.9 tall) with a deep slot cut from the top (0.9 long, 0.24 wide, 0.7 deep),
    turned 20 deg about z: a narrow concavity whose floor only views along the slot can see."""

    def local(p: np.ndarray) -> np.ndarray:
        block = sd_round_box(p - np.float32([0.0, 0.0, 0.45]), np.float32([0.6, 0.4, 0.45]), 0.02)
        cut = sd_round_box(p - np.float32([0.0, 0.0, 0.9]), np.float32([0.45, 0.12, 0.7]), 0.005)
        return smax(block, -cut, 0.01)

    return Scene(
        name="slot",
        sdf=_placed(local, _rot_z(20.0), np.zeros(3)),
        albedo=_palette_albedo(rng, MUG_PALETTE, scale=0.7),
        bound_center=np.array([0.0, 0.0, 0.45]),
        bound_radius=float(np.linalg.norm([0.62, 0.42, 0.47]) + 0.05),
    )


def _vase(rng: np.random.Generator) -> Scene:
    """A vase on a textured floor: a surface of revolution 1.4 tall (belly radius 0.5, neck 0.22, a flared
    lip), hollow (wall 0.04, bottom 0.08 thick), base at z = 0, seen from two rings: a curved body on a
    small footprint, the hull's cone under it reaching far below the floor."""

    def radius(z: np.ndarray) -> np.ndarray:
        t = np.clip(z / 1.4, 0.0, 1.0)
        return 0.3 + 0.2 * np.sin(np.pi * np.clip(t / 0.7, 0.0, 1.0)) + 0.1 * np.clip((t - 0.75) / 0.25, 0.0, 1.0) ** 2

    def sdf(p: np.ndarray) -> np.ndarray:
        rho = _length(p[:, 0], p[:, 1])
        z = p[:, 2]
        r = radius(z)
        # |dr/dz| < 0.6 here: dividing by sqrt(1 + 0.6^2) keeps the radial distance a lower bound
        outer = np.maximum((rho - r) / 1.17, np.maximum(-z, z - 1.4))
        inner = np.maximum((rho - (r - 0.04)) / 1.17, 0.08 - z)
        return smax(outer, -inner, 0.01)

    return Scene(
        name="vase",
        sdf=sdf,
        albedo=_palette_albedo(rng, MUG_PALETTE[1:] + MUG_PALETTE[:1], scale=1.2),
        bound_center=np.array([0.0, 0.0, 0.7]),
        bound_radius=float(np.hypot(0.5, 0.7) + 0.05),
        floor_z=0.0,
        floor_albedo=_wood_albedo(rng, board=0.5),
        floor_half=6.0,
        rings=((30.0, 1.0, 0.5), (55.0, 1.05, 0.5)),
    )


def _box(rng: np.random.Generator) -> Scene:
    """A box (1.0 x 0.7, 0.55 tall, edges rounded by 0.03) on a textured floor at z = 0, turned 25 deg about
    z, seen from two rings: flat faces whose top is a plane parallel to the floor (not a support)."""
    rot, off = _rot_z(25.0), np.array([0.1, -0.05, 0.0])

    def local(p: np.ndarray) -> np.ndarray:
        return sd_round_box(p - np.float32([0.0, 0.0, 0.275]), np.float32([0.5, 0.35, 0.275]), 0.03)

    return Scene(
        name="box",
        sdf=_placed(local, rot, off),
        albedo=_palette_albedo(rng, MUG_PALETTE[::-1], scale=0.9),
        bound_center=off + np.array([0.0, 0.0, 0.275]),
        bound_radius=float(np.linalg.norm([0.5, 0.35, 0.275]) + 0.05),
        floor_z=0.0,
        floor_albedo=_wood_albedo(rng, board=0.45),
        floor_half=6.0,
        rings=((30.0, 1.0, 0.5), (55.0, 1.05, 0.5)),
    )


SCENES: dict[str, Callable[[np.random.Generator], Scene]] = {
    "mug": _mug,
    "cut": _cut,
    "parts": _parts,
    "floor": _floor,
    "teapot": _teapot,
    "pot": _pot,
    "house": _house,
    "bowl": _bowl,
    "slot": _slot,
    "vase": _vase,
    "box": _box,
}


# ------------------------------------------------------------------------------------------ cameras
FOCAL_35MM = 36  # full-frame equivalent focal length in mm (an integer: that is how EXIF stores it)
FULL_FRAME_DIAGONAL_MM = 43.2666  # 36 x 24 mm film; COLMAP turns the tag into pixels through the diagonal


def _look_at(center: np.ndarray, target: np.ndarray, roll_deg: float) -> np.ndarray:
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


def _cameras(
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
    Rs, ts = [], []
    phase = rng.uniform(0, 360)
    placements = []  # (azimuth, elevation, distance factor)
    if scene.rings:
        counts = np.floor(np.array([r[2] for r in scene.rings]) * n_views).astype(int)
        counts[0] += n_views - counts.sum()
        for k, ((elev, factor, _), n_ring) in enumerate(zip(scene.rings, counts)):
            for j in range(n_ring):
                az = phase + 360.0 * (j + 0.5 * k) / max(n_ring, 1) + rng.uniform(-2, 2)
                placements.append((az, elev + rng.uniform(-1.5, 1.5), factor * rng.uniform(0.98, 1.02)))
    else:
        for i in range(n_views):
            az = phase + 360.0 * i / n_views + rng.uniform(-3, 3)
            # elevations sweep up and down three times around the circle, so neighbours differ a little
            el = 35.0 + 23.0 * np.sin(2 * np.pi * 3 * i / max(n_views, 1) + 0.3) + rng.uniform(-3, 3)
            placements.append((az, float(np.clip(el, 10.0, 60.0)), rng.uniform(0.95, 1.05)))
    for az, el, factor in placements:
        dist = dist0 * factor
        a, e = np.radians(az), np.radians(el)
        center = obj_center + dist * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        target = obj_center + scene.aim_jitter * obj_radius * rng.uniform(-1, 1, 3)
        R = _look_at(center, target, rng.uniform(-4, 4))
        Rs.append(R)
        ts.append(-R @ center)
    return K, np.stack(Rs), np.stack(ts)


# ---------------------------------------------------------------------------------------- rendering
LIGHT_DIR = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])  # towards the key light


def _ray_sphere(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    oc = o - c
    b = d @ oc if o.ndim == 1 else np.einsum("ij,ij->i", d, oc)
    cc = float(oc @ oc) - r * r if o.ndim == 1 else np.einsum("ij,ij->i", oc, oc) - r * r
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
    """Per ray: (hit, t). Converged when the distance is below a fraction of the pixel footprint."""
    n = len(d)
    t = tmin.copy()
    hit = np.zeros(n, dtype=bool)
    active = np.nonzero(tmin < tmax)[0]
    for _ in range(max_iter):
        if len(active) == 0:
            break
        p = o + d[active] * t[active, None] if o.ndim == 1 else o[active] + d[active] * t[active, None]
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
    vis = _soft_shadow(scene.sdf, p + 2e-3 * n, shadow_len)
    lam = np.clip(n @ LIGHT_DIR.astype(np.float32), 0.0, None) * vis
    ambient = 0.30 + 0.12 * n[:, 2]
    return albedo * (ambient + 0.85 * lam)[:, None]


# sample classes: 0 backdrop, 1 object, 2 floor
def _render_rays(
    scene: Scene, o: np.ndarray, d: np.ndarray, pix_angle: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour (M,3), class (M,), depth along the ray (M,) for rays from camera centre ``o``."""
    m = len(d)
    near, far = _ray_sphere(o, d, scene.bound_center.astype(np.float32), scene.bound_radius)
    hit, t = _sphere_trace(scene.sdf, o, d, near, far, pix_angle)
    cls = hit.astype(np.int8)
    depth = np.where(hit, t, np.inf).astype(np.float32)
    colour = _backdrop(d)
    shadow_len = 2.5 * scene.bound_radius
    if scene.floor_z is not None:
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
    if hit.any():
        ph = (o + d[hit] * t[hit, None]).astype(np.float32)
        nh = _normals(scene.sdf, ph)
        colour[hit] = _shade(scene, ph, nh, scene.albedo(ph), shadow_len)
    assert colour.shape == (m, 3)
    return colour, cls, depth


def _render_view(scene: Scene, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int):
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
    cls_img = cls.reshape(height, width)
    dep_img = np.where(np.isfinite(depth), depth, 1e6).reshape(height, width)
    # supersample pixels on class edges and depth jumps (silhouettes, the handle over the body)
    edge = np.zeros((height, width), dtype=bool)
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
    idx = np.nonzero(edge.ravel())[0]
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


def _to_srgb8(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tone map to 8 bit with a gentle gamma and a little sensor noise."""
    img = np.clip(image, 0.0, 1.0) ** (1 / 1.15)
    img = img + rng.normal(0.0, 0.006, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------- ground truth
def sdf_grid_mesh(sdf: SDF, center: np.ndarray, radius: float, resolution: int, chunk: int = 1 << 20):
    """Marching cubes of ``sdf`` on a ``resolution``^3 grid over the cube around a sphere.

    Returns (vertices (V,3) world units, faces (F,3)) with outward-facing triangles (normals along +grad).
    """
    from skimage.measure import marching_cubes

    lo = np.asarray(center, dtype=np.float64) - radius
    xs = np.linspace(0.0, 2 * radius, resolution, dtype=np.float64)
    step = xs[1] - xs[0]
    vol = np.empty((resolution, resolution, resolution), dtype=np.float32)
    gy, gz = np.meshgrid(xs, xs, indexing="ij")
    plane = np.stack([np.zeros(gy.size), gy.ravel(), gz.ravel()], 1)
    slab = max(1, chunk // plane.shape[0])
    for i0 in range(0, resolution, slab):
        i1 = min(resolution, i0 + slab)
        pts = np.concatenate([plane + [x, 0.0, 0.0] for x in xs[i0:i1]]) + lo
        vol[i0:i1] = sdf(pts.astype(np.float32)).reshape(i1 - i0, resolution, resolution)
    if not (vol.min() < 0 < vol.max()):
        raise StageError("the scene's SDF has no surface inside its bounding sphere")
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=(step, step, step))
    verts = verts + lo
    # skimage's winding makes the normals point towards increasing values: outwards for an SDF
    return verts, faces


# ---------------------------------------------------------------------------------------- top level
def render_scene(
    out_dir: Path,
    *,
    scene: str = "mug",
    n_views: int = 30,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    exif_rotate: bool = False,
    gt_resolution: int = 256,
) -> dict:
    """Render a synthetic scene into ``out_dir`` and return its description (also written as scene.json).

    Writes ``photos/NNN.jpg`` (JPEG q95; with ``exif_rotate`` every third photo is stored turned, with an
    EXIF Orientation tag that brings it back upright), ``masks/NNN.png`` (0/255, of the upright photo),
    ``cameras_sphere.npz`` (NeuS convention; scale_mat = a sphere around the object), ``gt.ply`` (the
    object's surface in world units, marching cubes of the SDF on a ``gt_resolution``^3 grid) and
    ``scene.json``.
    """
    if scene not in SCENES:
        raise StageError(f"unknown synthetic scene '{scene}'; choose one of: {', '.join(SCENES)}")
    if n_views < 1 or width < 16 or height < 16:
        raise StageError(f"need at least 1 view of 16x16 pixels, got {n_views} views of {width}x{height}")
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sc = SCENES[scene](rng)

    # ground truth first: its bounding box gives the tight object sphere (cameras, scale_mat)
    verts, faces = sdf_grid_mesh(sc.sdf, sc.bound_center, sc.bound_radius, gt_resolution)
    write_mesh(out_dir / "gt.ply", verts, faces)
    bb_min, bb_max = verts.min(0), verts.max(0)
    obj_center = 0.5 * (bb_min + bb_max)
    obj_radius = float(np.linalg.norm(verts - obj_center, axis=1).max())
    # NeuS wants the object inside the unit sphere with some room: 10 % margin
    sphere_radius = 1.1 * obj_radius
    scale_mat = scale_mat_from_sphere(obj_center, sphere_radius)

    K, Rs, ts = _cameras(sc, obj_center, obj_radius, n_views, width, height, rng)
    world_mats = np.tile(np.eye(4), (n_views, 1, 1))
    world_mats[:, :3, :3] = K @ Rs
    world_mats[:, :3, 3] = ts @ K.T
    write_cameras_sphere(out_dir / "cameras_sphere.npz", world_mats, scale_mat)

    names, rotated, mask_fracs = [], {}, []
    orientations = list(_EXIF_STORE)
    for i in tqdm(range(n_views), desc=f"render {scene}", unit="view", disable=None):
        image, mask = _render_view(sc, K, Rs[i], ts[i], width, height)
        name = f"{i:03d}"
        names.append(name)
        photo = Image.fromarray(_to_srgb8(image, rng))
        exif = Image.Exif()
        exif[0x010F] = "neus-stage"  # Make
        exif[0x0110] = f"synth {scene}"  # Model
        exif.get_ifd(0x8769)[0xA405] = FOCAL_35MM  # FocalLengthIn35mmFilm (COLMAP's focal prior)
        if exif_rotate and i % 3 == 1:
            orient = orientations[(i // 3) % len(orientations)]
            photo = photo.transpose(_EXIF_STORE[orient])
            exif[0x0112] = orient  # Orientation
            rotated[name] = orient
        photo.save(out_dir / "photos" / f"{name}.jpg", quality=95, exif=exif.tobytes())
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out_dir / "masks" / f"{name}.png")
        mask_fracs.append(float(mask.mean()))
        log.debug("view %s: object covers %.1f %% of the frame", name, 100 * mask.mean())

    info = {
        "scene": scene,
        "n_views": n_views,
        "width": width,
        "height": height,
        "seed": seed,
        "exif_rotated": rotated,
        "units": "world units; the mug is 1.0 tall (read as decimetres); z is up",
        "object_bbox": {"min": bb_min.tolist(), "max": bb_max.tolist()},
        "object_sphere": {"center": obj_center.tolist(), "radius": obj_radius},
        "scale_mat_sphere": {"center": obj_center.tolist(), "radius": sphere_radius},
        "intrinsics": {
            "focal_35mm": FOCAL_35MM,
            "fx": K[0, 0],
            "fy": K[1, 1],
            "cx": K[0, 2],
            "cy": K[1, 2],
            "pixel_convention": "integer pixel centres (NeuS/OpenCV): cx = (width - 1) / 2",
        },
        "floor_z": sc.floor_z,
        "gt": {"file": "gt.ply", "resolution": gt_resolution, "vertices": len(verts), "faces": len(faces)},
        "mask_fraction": {"min": min(mask_fracs), "mean": float(np.mean(mask_fracs)), "max": max(mask_fracs)},
        "photos": [f"{n}.jpg" for n in names],
    }
    (out_dir / "scene.json").write_text(json.dumps(info, indent=2) + "\n")  # deterministic for a given seed
    info["render_seconds"] = round(time.perf_counter() - t_start, 2)
    log.info(
        "rendered %s: %d views %dx%d in %.1f s -> %s",
        scene,
        n_views,
        width,
        height,
        info["render_seconds"],
        out_dir,
    )
    return info


# ------------------------------------------------------------------------------ a scene with a marker
MARKER_DICTIONARY = "DICT_4X4_50"
"""The marker scene's ArUco dictionary (OpenCV's name) and marker id."""
MARKER_ID = 7
MARKER_SIDE = 0.4
"""Side of the marker's black square in world units (the scene reads them as metres)."""
MARKER_CENTRE = (0.25, -0.95)
MARKER_YAW_DEG = 20.0


def _marker_albedo(floor: Albedo, side: float = MARKER_SIDE, centre: tuple[float, float] = MARKER_CENTRE,
                   yaw_deg: float = MARKER_YAW_DEG) -> Albedo:
    """``floor`` with a printed ArUco marker (MARKER_DICTIONARY, MARKER_ID) lying on it: a black-bordered
    square of ``side`` on a white sheet one cell wider all round, its edges softened by a fraction of a cell
    (as a printed sheet seen through a lens)."""
    import cv2
    from scipy.ndimage import gaussian_filter

    cells = 6  # 4x4 bits and a one-cell black border
    px = 32  # texture pixels per cell
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, MARKER_DICTIONARY))
    bits = cv2.aruco.generateImageMarker(dictionary, MARKER_ID, cells * px, borderBits=1).astype(np.float32) / 255.0
    sheet = np.ones(((cells + 2) * px, (cells + 2) * px), dtype=np.float32)
    sheet[px:-px, px:-px] = bits
    sheet = gaussian_filter(sheet, sigma=0.08 * px)
    tone = 0.06 + 0.86 * sheet  # black ink 0.06, white paper 0.92
    half = side * (cells + 2) / cells / 2
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    n = sheet.shape[0]

    def albedo(p: np.ndarray) -> np.ndarray:
        out = floor(p)
        dx, dy = p[:, 0] - centre[0], p[:, 1] - centre[1]
        u, v = c * dx + s * dy, -s * dx + c * dy  # the sheet's own axes
        on = (np.abs(u) < half) & (np.abs(v) < half)
        if on.any():
            col = np.clip((u[on] + half) / (2 * half) * n - 0.5, 0, n - 1)  # image x along +u
            row = np.clip((half - v[on]) / (2 * half) * n - 0.5, 0, n - 1)  # image rows down = -v (seen from above)
            c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
            c1, r1 = np.minimum(c0 + 1, n - 1), np.minimum(r0 + 1, n - 1)
            fc, fr = col - c0, row - r0
            t = ((1 - fr) * ((1 - fc) * tone[r0, c0] + fc * tone[r0, c1])
                 + fr * ((1 - fc) * tone[r1, c0] + fc * tone[r1, c1]))
            out[on] = np.repeat(t[:, None], 3, 1).astype(out.dtype)
        return out

    return albedo


def _marker(rng: np.random.Generator) -> Scene:
    """The ``box`` scene with an ArUco marker (side MARKER_SIDE) lying on the floor beside it, for the metric
    scale: world units read as metres."""
    scene = _box(rng)
    scene.name = "marker"
    scene.floor_albedo = _marker_albedo(scene.floor_albedo)
    return scene


SCENES["marker"] = _marker
