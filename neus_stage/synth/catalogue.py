"""``SCENES``: every synthetic scene's builder by name (the names ``neus-stage synth --scene`` takes)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .marker import marker_scene
from .scenes import Scene, bowl_scene, cut_scene, floor_scene, mug_scene, parts_scene, slot_scene
from .tabletop import box_scene, house_scene, pot_scene, teapot_scene, vase_scene

SCENES: dict[str, Callable[[np.random.Generator], Scene]] = {
    "mug": mug_scene,
    "cut": cut_scene,
    "parts": parts_scene,
    "floor": floor_scene,
    "teapot": teapot_scene,
    "pot": pot_scene,
    "house": house_scene,
    "bowl": bowl_scene,
    "slot": slot_scene,
    "vase": vase_scene,
    "box": box_scene,
    "marker": marker_scene,
}
