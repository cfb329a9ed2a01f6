"""The synthetic scene type and the scenes without a floor of their own: the mug (and its ``cut`` and
``floor`` variants), ``parts``, ``bowl`` and ``slot``.

A builder takes the scene's random generator (its textures draw from it) and returns a :class:`Scene`;
the table of every scene by name is :data:`neus_stage.synth.catalogue.SCENES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .albedo import MUG_PALETTE, Albedo, Noise, palette_albedo, wood_albedo
from .sdf import (
    SDF,
    length,
    placed,
    rot_z,
    sd_capped_cylinder_z,
    sd_round_box,
    sd_rounded_cylinder_z,
    sd_torus_y,
    smax,
    smin,
)


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
    camera_distance: float = 1.0  # in units of the (tight) bounding radius at fill_scale; see scene_cameras
    aim_jitter: float = 0.03  # look-at jitter, in units of the bounding radius
    floor_half: float = 4.0  # half the side of the square table top, centred on the world origin
    # camera rings (elevation deg, distance factor, share of the views); None: the default sweep of
    # elevations 10-60 deg (three waves around the circle)
    rings: tuple[tuple[float, float, float], ...] | None = None


# ----------------------------------------------------------------------------------------------- mug
def mug_local(p: np.ndarray) -> np.ndarray:
    """A mug 1.0 tall, radius 0.45, 0.05 thick wall, 0.08 thick bottom, a ring handle; base at z = 0."""
    body = sd_rounded_cylinder_z(p - np.float32([0.0, 0.0, 0.5]), 0.45, 0.5, 0.03)
    cavity = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.6]), 0.40, 0.52)  # from z = 0.08 up
    cup = smax(body, -cavity, 0.012)
    handle = sd_torus_y(p - np.float32([0.62, 0.0, 0.52]), 0.22, 0.05)
    handle = np.maximum(handle, 0.43 - p[:, 0])  # keep what lies outside the wall
    return smin(cup, handle, 0.03)


MUG_LOCAL_BOX = np.array([[-0.45, -0.45, 0.0], [0.89, 0.45, 1.0]])


def mug_placement() -> tuple[np.ndarray, np.ndarray]:
    """The mug's pose in the world: turned 35 deg about z, base centre at (0.13, -0.08, -0.37)."""
    return rot_z(35.0), np.array([0.13, -0.08, -0.37])


def mug_scene(rng: np.random.Generator) -> Scene:
    """The demo: the mug, placed off the origin and turned, seen from the default sweep of views."""
    rot, off = mug_placement()
    centre_local = MUG_LOCAL_BOX.mean(0)
    radius = 0.5 * np.linalg.norm(MUG_LOCAL_BOX[1] - MUG_LOCAL_BOX[0]) + 0.02
    return Scene(
        name="mug",
        sdf=placed(mug_local, rot, off),
        albedo=palette_albedo(rng, MUG_PALETTE),
        bound_center=rot @ centre_local + off,
        bound_radius=float(radius),
    )


def cut_scene(rng: np.random.Generator) -> Scene:
    """The mug seen by close cameras that aim off-centre: the object leaves the frame in many views."""
    scene = mug_scene(rng)
    scene.name = "cut"
    scene.camera_distance = 0.55  # close: the object overfills the frame
    scene.aim_jitter = 0.45  # and the cameras aim off-centre
    return scene


def floor_scene(rng: np.random.Generator) -> Scene:
    """The mug standing on a textured table top (not part of the object)."""
    scene = mug_scene(rng)
    scene.name = "floor"
    _, off = mug_placement()
    scene.floor_z = float(off[2])  # the mug's base stands on the table
    scene.floor_albedo = wood_albedo(rng)
    return scene


# --------------------------------------------------------------------------------- other objects
def parts_scene(rng: np.random.Generator) -> Scene:
    """Three separate objects: a rounded box, a bumpy ball and a standing ring, each with its own palette."""
    palettes = [MUG_PALETTE[:3], MUG_PALETTE[2:], [MUG_PALETTE[0], MUG_PALETTE[3], MUG_PALETTE[4]]]
    albedos = [palette_albedo(rng, pal, scale=0.8) for pal in palettes]
    offset = np.float32([-0.12, 0.21, 0.15])
    box_c = np.float32([-0.55, -0.35, 0.0])  # gaps between the parts: 0.3 to 0.45 units
    ball_c = np.float32([0.55, -0.25, 0.05])
    ring_c = np.float32([0.0, 0.55, 0.05])
    noise = Noise(rng)

    def parts_local(p: np.ndarray) -> np.ndarray:
        box = sd_round_box((p - box_c) @ rot_z(20).astype(np.float32), np.float32([0.3, 0.22, 0.3]), 0.05)
        q = p - ball_c
        ball = length(q[:, 0], q[:, 1], q[:, 2]) - 0.3
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


def bowl_scene(rng: np.random.Generator) -> Scene:
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
        albedo=palette_albedo(rng, MUG_PALETTE[::-1]),
        bound_center=np.array([0.0, 0.0, 0.42]),
        bound_radius=float(np.hypot(0.8, 0.42) + 0.05),
    )


def slot_scene(rng: np.random.Generator) -> Scene:
    """A block (1.2 x 0.8, 0.9 tall) with a deep slot cut from the top (0.9 long, 0.24 wide, 0.7 deep),
    turned 20 deg about z: a narrow concavity whose floor only views along the slot can see."""

    def local(p: np.ndarray) -> np.ndarray:
        block = sd_round_box(p - np.float32([0.0, 0.0, 0.45]), np.float32([0.6, 0.4, 0.45]), 0.02)
        cut = sd_round_box(p - np.float32([0.0, 0.0, 0.9]), np.float32([0.45, 0.12, 0.7]), 0.005)
        return smax(block, -cut, 0.01)

    return Scene(
        name="slot",
        sdf=placed(local, rot_z(20.0), np.zeros(3)),
        albedo=palette_albedo(rng, MUG_PALETTE, scale=0.7),
        bound_center=np.array([0.0, 0.0, 0.45]),
        bound_radius=float(np.linalg.norm([0.62, 0.42, 0.47]) + 0.05),
    )
