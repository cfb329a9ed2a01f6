"""The input encodings of the networks: the multiresolution hash grid (a pure-torch backend and tinycudann's
fused one, reading the same flat parameter table), NeuS's positional encoding and the real spherical
harmonics of view directions."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StageError
from .config import TrainConfig

log = logging.getLogger(__name__)

_PRIMES = (1, 2654435761, 805459861)  # tinycudann's, as uint32
_PRIMES_I32 = tuple(p - (1 << 32) if p >= 1 << 31 else p for p in _PRIMES)


def tinycudann_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or built for another GPU: either way not usable
        return False
    return torch.cuda.is_available()


def grid_levels(n_levels: int, base: int, finest: int, log2_size: int) -> tuple[float, list[dict]]:
    """Per-level scale, resolution, table size and dense/hashed flag, with tinycudann's formulas
    (so that both backends read the same flat parameter vector the same way)."""
    per_level_scale = math.exp(math.log(finest / base) / max(n_levels - 1, 1))
    table = 1 << log2_size
    levels, offset = [], 0
    for lvl in range(n_levels):
        scale = base * 2 ** (lvl * math.log2(per_level_scale)) - 1.0
        res = int(math.ceil(scale)) + 1
        dense_size = res**3
        size = min(-(-dense_size // 8) * 8, table)
        levels.append(dict(scale=scale, res=res, size=size, offset=offset, hashed=dense_size > size))
        offset += size
    return per_level_scale, levels


class _Params(nn.Module):
    """Holds the flat table under the same state-dict key (``enc.params``) as tinycudann's Encoding."""

    def __init__(self, n: int):
        super().__init__()
        self.params = nn.Parameter(torch.empty(n).uniform_(-1e-4, 1e-4))


class TorchHashGrid(nn.Module):
    """Multiresolution hash encoding in pure torch (any device, double-differentiable)."""

    def __init__(self, n_levels: int, n_features: int, log2_size: int, base: int, finest: int):
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.per_level_scale, levels = grid_levels(n_levels, base, finest, log2_size)
        total = sum(lv["size"] for lv in levels)
        self.enc = _Params(total * n_features)
        self.register_buffer(
            "scales", torch.tensor([lv["scale"] for lv in levels], dtype=torch.float32), persistent=False
        )
        self.register_buffer("res", torch.tensor([lv["res"] for lv in levels], dtype=torch.int32), persistent=False)
        self.register_buffer("sizes", torch.tensor([lv["size"] for lv in levels], dtype=torch.int32), persistent=False)
        self.register_buffer(
            "offsets", torch.tensor([lv["offset"] for lv in levels], dtype=torch.int32), persistent=False
        )
        self.register_buffer("hashed", torch.tensor([lv["hashed"] for lv in levels]), persistent=False)
        self.register_buffer("offs01", torch.tensor([0, 1], dtype=torch.int32), persistent=False)
        self.out_dim = n_levels * n_features

    def forward(self, x: torch.Tensor, active: int | None = None) -> torch.Tensor:
        """x: (N,3) in [0,1] -> (N, levels * features); levels from ``active`` on are zeros (not looked up).

        Corner indices and trilinear weights are built per axis and combined by broadcasting
        ((N,L,2) per axis -> (N,L,2,2,2)), which is several times cheaper on a CPU than forming the
        (N,L,8,3) corner tensor; corner order is x fastest, as in tinycudann.
        """
        n = x.shape[0]
        nl = self.n_levels if active is None else max(1, min(active, self.n_levels))
        table = self.enc.params.view(-1, self.n_features)
        pos = x[:, None, :] * self.scales[None, :nl, None] + 0.5  # (N,L,3)
        grid = torch.floor(pos)
        frac = pos - grid
        g = grid.int()[..., None] + self.offs01  # (N,L,3,2): lower and upper corner per axis
        gx, gy, gz = g[:, :, 0], g[:, :, 1], g[:, :, 2]  # (N,L,2)
        res = self.res[None, :nl, None]
        dense = gz[:, :, :, None, None] * (res * res)[..., None, None] + (
            gy[:, :, None, :, None] * res[..., None, None] + gx[:, :, None, None, :]
        )
        # int32 products wrap modulo 2^32 exactly as tinycudann's uint32 hash; the tables of hashed
        # levels are powers of two, so Python-style remainder keeps the same low bits
        hashed = (
            (gz * _PRIMES_I32[2])[:, :, :, None, None]
            ^ (gy * _PRIMES_I32[1])[:, :, None, :, None]
            ^ gx[:, :, None, None, :]
        )
        idx = torch.where(self.hashed[None, :nl, None, None, None], hashed, dense).view(n, -1, 8)
        idx = idx.remainder(self.sizes[None, :nl, None]) + self.offsets[None, :nl, None]
        w1 = torch.stack([1 - frac, frac], -1)  # (N,L,3,2)
        w = (w1[:, :, 2, :, None, None] * w1[:, :, 1, None, :, None] * w1[:, :, 0, None, None, :]).view(n, -1, 1, 8)
        # index_select with int64 indices (backward: index_add, ~5x slower with int32 indices) is ~2.5x
        # faster on a CPU than advanced indexing, whose backward is an accumulating index_put
        feats = table.index_select(0, idx.reshape(-1).long()).view(n, -1, 8, self.n_features)  # (N,L,8,F)
        return F.pad((w @ feats).reshape(n, -1), (0, (self.n_levels - nl) * self.n_features))


class TcnnHashGrid(nn.Module):
    """tinycudann's fused hash grid (CUDA only); same parameter layout as TorchHashGrid. It computes in fp16
    (``half``, mixed precision) or fp32; its parameters are fp32 either way. Its backward is itself
    differentiable, so analytic normals (a double backward) work with it."""

    def __init__(self, n_levels: int, n_features: int, log2_size: int, base: int, finest: int, half: bool = True):
        super().__init__()
        import tinycudann as tcnn

        self.per_level_scale, _ = grid_levels(n_levels, base, finest, log2_size)
        self.enc = tcnn.Encoding(
            3,
            {
                "otype": "Grid",
                "type": "Hash",
                "n_levels": n_levels,
                "n_features_per_level": n_features,
                "log2_hashmap_size": log2_size,
                "base_resolution": base,
                "per_level_scale": self.per_level_scale,
                "interpolation": "Linear",
            },
            dtype=torch.float16 if half else torch.float32,
        )
        self.n_levels, self.n_features = n_levels, n_features
        self.out_dim = n_levels * n_features

    def forward(self, x: torch.Tensor, active: int | None = None) -> torch.Tensor:
        return self.enc(x).float()  # the fused kernel computes every level; HashSDF masks the inactive ones


def encoding_backend(cfg: TrainConfig, device: torch.device) -> str:
    """The hash-grid implementation a run uses: 'tcnn' or 'torch' ('auto': tcnn on CUDA where it imports)."""
    if cfg.encoding_backend == "auto":
        return "tcnn" if device.type == "cuda" and tinycudann_available() else "torch"
    return cfg.encoding_backend


def make_hash_grid(cfg: TrainConfig, device: torch.device, half: bool = False) -> nn.Module:
    """The config's hash grid on the backend ``encoding_backend`` picks (tcnn: fp16 where ``half``)."""
    backend = encoding_backend(cfg, device)
    args = (cfg.n_levels, cfg.features_per_level, cfg.log2_hashmap_size, cfg.base_resolution, cfg.finest_resolution)
    if backend == "tcnn":
        if not tinycudann_available():
            raise StageError(
                "encoding_backend=tcnn but tinycudann does not import on this machine "
                "(see `neus-stage doctor`); use encoding_backend=torch or auto"
            )
        log.info("hash grid: tinycudann backend (%s)", "fp16" if half else "fp32")
        return TcnnHashGrid(*args, half=half)
    log.info("hash grid: pure-torch backend")
    return TorchHashGrid(*args)


def positional_encoding(x: torch.Tensor, multires: int) -> torch.Tensor:
    """NeuS's embedder: [x, sin(2^k x), cos(2^k x)] for k < multires."""
    if multires <= 0:
        return x
    freqs = 2.0 ** torch.arange(multires, device=x.device, dtype=x.dtype)
    xf = x[..., None, :] * freqs[:, None]  # (N,K,3)
    return torch.cat([x, torch.stack([xf.sin(), xf.cos()], -2).flatten(-3)], -1)


def sh_encoding(d: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics of unit directions (N,3) up to ``degree`` (degree**2 values, at most 16)."""
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, -1)
