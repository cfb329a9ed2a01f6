"""The ``marker`` scene: the ``box`` scene with a printed ArUco marker lying on the floor beside it, for the
metric scale (world units read as metres).
"""

from __future__ import annotations

import numpy as np

from .albedo import Albedo
from .scenes import Scene
from .tabletop import box_scene

MARKER_DICTIONARY = "DICT_4X4_50"
"""The marker scene's ArUco dictionary (OpenCV's name) and marker id."""
MARKER_ID = 7
MARKER_SIDE = 0.4
"""Side of the marker's black square in world units (the scene reads them as metres)."""
MARKER_CENTRE = (0.25, -0.95)
MARKER_YAW_DEG = 20.0

_CELLS = 6  # 4x4 bits and a one-cell black border
_CELL_PX = 32  # texture pixels per cell


def _marker_sheet() -> np.ndarray:
    """The printed sheet's grey tone (square, rows top down): the marker on white paper one cell wider all
    round, its edges softened by a fraction of a cell (as a printed sheet seen through a lens)."""
    import cv2
    from scipy.ndimage import gaussian_filter

    px = _CELL_PX
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, MARKER_DICTIONARY))
    bits = cv2.aruco.generateImageMarker(dictionary, MARKER_ID, _CELLS * px, borderBits=1).astype(np.float32) / 255.0
    sheet = np.ones(((_CELLS + 2) * px, (_CELLS + 2) * px), dtype=np.float32)
    sheet[px:-px, px:-px] = bits
    sheet = gaussian_filter(sheet, sigma=0.08 * px)
    return 0.06 + 0.86 * sheet  # black ink 0.06, white paper 0.92


def _bilinear(tone: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """``tone`` sampled bilinearly at (col, row), both already clipped to the image."""
    n = tone.shape[0]
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    c1, r1 = np.minimum(c0 + 1, n - 1), np.minimum(r0 + 1, n - 1)
    fc, fr = col - c0, row - r0
    return (1 - fr) * ((1 - fc) * tone[r0, c0] + fc * tone[r0, c1]) + fr * ((1 - fc) * tone[r1, c0] + fc * tone[r1, c1])


def marker_albedo(
    floor: Albedo,
    side: float = MARKER_SIDE,
    centre: tuple[float, float] = MARKER_CENTRE,
    yaw_deg: float = MARKER_YAW_DEG,
) -> Albedo:
    """``floor`` with a printed ArUco marker (MARKER_DICTIONARY, MARKER_ID) lying on it: a black-bordered
    square of ``side`` on a white sheet one cell wider all round, its edges softened by a fraction of a cell
    (as a printed sheet seen through a lens)."""
    tone = _marker_sheet()
    half = side * (_CELLS + 2) / _CELLS / 2
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    n = tone.shape[0]

    def albedo(p: np.ndarray) -> np.ndarray:
        out = floor(p)
        dx, dy = p[:, 0] - centre[0], p[:, 1] - centre[1]
        u, v = c * dx + s * dy, -s * dx + c * dy  # the sheet's own axes
        on = (np.abs(u) < half) & (np.abs(v) < half)
        if on.any():
            col = np.clip((u[on] + half) / (2 * half) * n - 0.5, 0, n - 1)  # image x along +u
            row = np.clip((half - v[on]) / (2 * half) * n - 0.5, 0, n - 1)  # image rows down = -v (seen from above)
            out[on] = np.repeat(_bilinear(tone, col, row)[:, None], 3, 1).astype(out.dtype)
        return out

    return albedo


def marker_scene(rng: np.random.Generator) -> Scene:
    """The ``box`` scene with an ArUco marker (side MARKER_SIDE) lying on the floor beside it, for the metric
    scale: world units read as metres."""
    scene = box_scene(rng)
    scene.name = "marker"
    scene.floor_albedo = marker_albedo(scene.floor_albedo)
    return scene
