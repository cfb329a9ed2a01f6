"""Solid (3D) textures of the synthetic scenes: hashed value noise and the procedural colours built on it
(a spotted palette for feature-rich objects, a plain glaze, wooden table boards).

An albedo maps surface points (N,3) to linear RGB (N,3) in [0, 1]; each one draws its random lattice and
shifts from the scene's generator when it is built, so a scene is the same for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Albedo = Callable[[np.ndarray], np.ndarray]
"""A solid texture: points (N,3) -> RGB (N,3) in [0, 1]."""

MUG_PALETTE = [
    [0.62, 0.16, 0.10],  # terracotta
    [0.10, 0.22, 0.55],  # deep blue
    [0.78, 0.55, 0.10],  # ochre
    [0.08, 0.45, 0.42],  # teal
    [0.36, 0.20, 0.45],  # plum
]


class Noise:
    """Value noise on a hashed integer lattice (period 256 lattice cells: non-repeating on the object)."""

    def __init__(self, rng: np.random.Generator):
        self.perm = np.concatenate([rng.permutation(256)] * 2).astype(np.int64)
        self.values = rng.random(256).astype(np.float32)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """Noise in [0, 1] at points (N,3), trilinear between lattice values with a smoothstep fade."""
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
        """Fractal sum of ``octaves`` octaves (each twice the frequency, half the weight), in [0, 1]."""
        total = np.zeros(len(p), dtype=np.float32)
        amp, norm = 1.0, 0.0
        for o in range(octaves):
            total += amp * self(p * (2.0**o) + 17.3 * o)
            norm += amp
            amp *= 0.5
        return total / norm


def palette_albedo(rng: np.random.Generator, palette: np.ndarray, scale: float = 1.0) -> Albedo:
    """Rich, non-repeating solid texture: colour regions, high-contrast spots and fine grain.

    Low-frequency fBm picks smoothly blended palette colours; mid-frequency noise thresholded into blobs
    gives dark and cream spots (strong, well-localised SIFT blobs); high-frequency noise adds grain.
    ``scale`` is the object size the texture frequencies are tuned for (1 = the mug).
    """
    noise = Noise(rng)
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


def wood_albedo(rng: np.random.Generator, board: float = 0.35) -> Albedo:
    """A textured table top: boards of ``board`` units with grain and a slight checker."""
    noise = Noise(rng)

    def wood(p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0] / (board / 0.35), p[:, 1] / (board / 0.35)
        plank = np.floor(x / 0.35)
        grain = noise(np.stack([x * 2.0, y * 14.0 + plank * 7.1, plank * 3.3], 1))
        checker = ((np.floor(x / 0.35) + np.floor(y / 0.7 + 0.5 * plank)) % 2).astype(np.float32)
        base = np.float32([0.62, 0.47, 0.30]) * (0.8 + 0.25 * checker)[:, None]
        return np.clip(base * (0.7 + 0.6 * grain[:, None]), 0.0, 1.0)

    return wood


def glazed_albedo(rng: np.random.Generator, base: tuple[float, float, float], scale: float = 1.0) -> Albedo:
    """A plain glaze: a slow colour variation and a faint grain, too smooth for many SIFT features."""
    noise = Noise(rng)
    col = np.float32(base)

    def albedo(p: np.ndarray) -> np.ndarray:
        q = p / scale
        t = noise.fbm(q * 1.5, 3)[:, None]
        g = noise(q * 12.0)[:, None]
        return np.clip(col * (0.75 + 0.5 * t) + 0.04 * (g - 0.5), 0.0, 1.0)

    return albedo
