"""The synthetic scenes that stand on a textured floor at z = 0 and are seen from camera rings: ``teapot``,
``pot``, ``house``, ``vase`` and ``box`` (the floor is in the photos, not in the masks nor in gt.ply).
"""

from __future__ import annotations

import numpy as np

from .albedo import MUG_PALETTE, Noise, glazed_albedo, palette_albedo, wood_albedo
from .scenes import Scene
from .sdf import (
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

TWO_RINGS = ((30.0, 1.0, 0.5), (55.0, 1.05, 0.5))
"""Half the views at 30 deg elevation, half at 55 deg and 5 % further away."""


# -------------------------------------------------------------------------------------------- teapot
def _teapot_local(p: np.ndarray) -> np.ndarray:
    """The teapot in its own frame: body, lid, knob, spout and handle, base at z = 0."""
    q = p - np.float32([0.0, 0.0, 0.38])
    body = length(q[:, 0], q[:, 1], 1.25 * q[:, 2]) - 0.45  # an oblate ellipsoid, flattened below
    body = smax(body, -p[:, 2], 0.02)  # cut flat at z = 0 (it stands on the floor)
    lid = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.74]), 0.16, 0.04)
    knob = length(p[:, 0], p[:, 1], p[:, 2] - 0.82) - 0.06
    # a spout: a capsule leaning forward and up from the body's side
    a, b = np.float32([0.33, 0.0, 0.28]), np.float32([0.72, 0.0, 0.62])
    ab = b - a
    h = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    spout = np.linalg.norm(p - (a + h[:, None] * ab), axis=1) - (0.09 - 0.04 * h)
    handle = sd_torus_y(p - np.float32([-0.5, 0.0, 0.42]), 0.2, 0.045)
    handle = np.maximum(handle, p[:, 0] + 0.38)  # only the part outside the body
    return smin(smin(smin(body, lid, 0.02), knob, 0.02), smin(spout, handle, 0.001), 0.03)


def teapot_scene(rng: np.random.Generator) -> Scene:
    """A squat body with a spout and a ring handle, base at z = 0 near the origin, on a large floor. A plain
    glaze with one decorated band round the belly: nearly all of the object's SfM points lie in the band
    (and most of the scene's on the floor), the case where boxing the object by its SfM points cuts it."""
    rot, off = rot_z(-20.0), np.array([0.21, 0.12, 0.0])
    glaze = glazed_albedo(rng, (0.22, 0.42, 0.58))
    pattern = palette_albedo(rng, MUG_PALETTE[1:])

    def albedo(p: np.ndarray) -> np.ndarray:
        band = (np.abs(p[:, 2] - 0.36) < 0.07)[:, None]
        return np.where(band, pattern(p), glaze(p))

    box = np.array([[-0.75, -0.45, 0.0], [0.82, 0.45, 0.88]])
    return Scene(
        name="teapot",
        sdf=placed(_teapot_local, rot, off),
        albedo=albedo,
        bound_center=rot @ box.mean(0) + off,
        bound_radius=float(0.5 * np.linalg.norm(box[1] - box[0]) + 0.03),
        floor_z=0.0,
        floor_albedo=wood_albedo(rng),
        floor_half=8.0,
        rings=((25.0, 1.0, 0.5), (50.0, 1.12, 0.5)),
    )


# ----------------------------------------------------------------------------------------------- pot
def _pot_sdf(p: np.ndarray) -> np.ndarray:
    outer = sd_rounded_cylinder_z(p - np.float32([0.0, 0.0, 0.75]), 0.9, 0.75, 0.04)
    inner = sd_capped_cylinder_z(p - np.float32([0.0, 0.0, 0.85 + 0.1]), 0.82, 0.85)  # from z = 0.1 up
    return smax(outer, -inner, 0.015)


def pot_scene(rng: np.random.Generator) -> Scene:
    """A deep pot: outer radius 0.9, 1.5 tall, wall 0.08, bottom 0.1 thick, base at z = 0 (on the floor)."""
    return Scene(
        name="pot",
        sdf=_pot_sdf,
        albedo=palette_albedo(rng, MUG_PALETTE, scale=1.5),
        bound_center=np.array([0.0, 0.0, 0.75]),
        bound_radius=float(np.hypot(0.9, 0.75) + 0.05),
        floor_z=0.0,
        floor_albedo=wood_albedo(rng, board=0.6),
        floor_half=6.0,
        rings=((35.0, 1.0, 0.5), (60.0, 1.05, 0.5)),
    )


# --------------------------------------------------------------------------------------------- house
def _house_block(p: np.ndarray, c: list[float], half: list[float], roof: float) -> np.ndarray:
    """A block of half sides ``half`` standing at ``c`` with a pitched roof of height ``roof`` along x."""
    q = p - np.float32(c)
    walls = sd_round_box(q - np.float32([0, 0, half[2]]), np.float32(half), 0.01)
    top = q[:, 2] - 2 * half[2]
    prism = np.maximum(np.abs(q[:, 1]) * roof / half[1] + top - roof, -top)
    prism = np.maximum(prism, np.abs(q[:, 0]) - half[0])
    return np.minimum(walls, prism)


def _house_sdf(p: np.ndarray) -> np.ndarray:
    """The base plate, three blocks with roofs and a round tower with a cone, as one object."""
    base = sd_round_box(p - np.float32([0.0, 0.0, 0.04]), np.float32([1.0, 0.8, 0.04]), 0.01)
    a = _house_block(p, [-0.45, 0.25, 0.08], [0.45, 0.22, 0.3], 0.18)
    b = _house_block(p @ rot_z(90).astype(np.float32), [-0.1, -0.55, 0.08], [0.35, 0.2, 0.22], 0.15)
    c = _house_block(p, [0.35, -0.4, 0.08], [0.3, 0.25, 0.4], 0.2)
    tower = sd_capped_cylinder_z(p - np.float32([0.7, 0.45, 0.58]), 0.14, 0.5)
    cone = np.maximum(
        length(p[:, 0] - 0.7, p[:, 1] - 0.45) - 0.16 * (1.36 - p[:, 2]) / 0.28, np.abs(p[:, 2] - 1.22) - 0.14
    )
    return np.minimum.reduce([base, a, b, c, tower, cone])


def house_scene(rng: np.random.Generator) -> Scene:
    """Blocks with pitched roofs and a round tower on a 2.0 x 1.6 base plate (all one object), seen from close
    over a plain pale table: the object fills most of the frame and is cut by it in many views."""
    noise = Noise(rng)
    brick = palette_albedo(rng, [[0.55, 0.18, 0.12], [0.62, 0.25, 0.16], [0.45, 0.14, 0.10]], scale=0.6)
    roof_alb = palette_albedo(rng, [[0.45, 0.47, 0.50], [0.35, 0.37, 0.40], [0.20, 0.42, 0.30]], scale=0.6)

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
        return np.tile(np.float32([0.93, 0.93, 0.92]), (len(p), 1)) * (0.97 + 0.03 * noise(p * 3.0)[:, None])

    return Scene(
        name="house",
        sdf=_house_sdf,
        albedo=albedo,
        bound_center=np.array([0.0, 0.0, 0.7]),
        bound_radius=1.45,
        floor_z=0.0,
        floor_albedo=table,
        floor_half=5.0,
        camera_distance=0.42,
        aim_jitter=0.3,
        rings=TWO_RINGS,
    )


# ---------------------------------------------------------------------------------------------- vase
def _vase_radius(z: np.ndarray) -> np.ndarray:
    """The vase's outer radius at height ``z``: a belly, a neck and a flared lip."""
    t = np.clip(z / 1.4, 0.0, 1.0)
    return 0.3 + 0.2 * np.sin(np.pi * np.clip(t / 0.7, 0.0, 1.0)) + 0.1 * np.clip((t - 0.75) / 0.25, 0.0, 1.0) ** 2


def _vase_sdf(p: np.ndarray) -> np.ndarray:
    rho = length(p[:, 0], p[:, 1])
    z = p[:, 2]
    r = _vase_radius(z)
    # |dr/dz| < 0.6 here: dividing by sqrt(1 + 0.6^2) keeps the radial distance a lower bound
    outer = np.maximum((rho - r) / 1.17, np.maximum(-z, z - 1.4))
    inner = np.maximum((rho - (r - 0.04)) / 1.17, 0.08 - z)
    return smax(outer, -inner, 0.01)


def vase_scene(rng: np.random.Generator) -> Scene:
    """A vase on a textured floor: a surface of revolution 1.4 tall (belly radius 0.5, neck 0.22, a flared
    lip), hollow (wall 0.04, bottom 0.08 thick), base at z = 0, seen from two rings: a curved body on a
    small footprint, the hull's cone under it reaching far below the floor."""
    return Scene(
        name="vase",
        sdf=_vase_sdf,
        albedo=palette_albedo(rng, MUG_PALETTE[1:] + MUG_PALETTE[:1], scale=1.2),
        bound_center=np.array([0.0, 0.0, 0.7]),
        bound_radius=float(np.hypot(0.5, 0.7) + 0.05),
        floor_z=0.0,
        floor_albedo=wood_albedo(rng, board=0.5),
        floor_half=6.0,
        rings=TWO_RINGS,
    )


# ----------------------------------------------------------------------------------------------- box
def _box_local(p: np.ndarray) -> np.ndarray:
    return sd_round_box(p - np.float32([0.0, 0.0, 0.275]), np.float32([0.5, 0.35, 0.275]), 0.03)


def box_scene(rng: np.random.Generator) -> Scene:
    """A box (1.0 x 0.7, 0.55 tall, edges rounded by 0.03) on a textured floor at z = 0, turned 25 deg about
    z, seen from two rings: flat faces whose top is a plane parallel to the floor (not a support)."""
    rot, off = rot_z(25.0), np.array([0.1, -0.05, 0.0])
    return Scene(
        name="box",
        sdf=placed(_box_local, rot, off),
        albedo=palette_albedo(rng, MUG_PALETTE[::-1], scale=0.9),
        bound_center=off + np.array([0.0, 0.0, 0.275]),
        bound_radius=float(np.linalg.norm([0.5, 0.35, 0.275]) + 0.05),
        floor_z=0.0,
        floor_albedo=wood_albedo(rng, board=0.45),
        floor_half=6.0,
        rings=TWO_RINGS,
    )
