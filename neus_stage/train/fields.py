"""Networks: encodings (hash grid with a tinycudann and a pure-torch backend, positional, spherical
harmonics), the SDF networks (hash grid + tiny MLP; the paper's 8x256 MLP) and the colour networks.

Every field takes points in NeuS's normalised frame (object inside the unit sphere).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig

log = logging.getLogger(__name__)

_PRIMES = (1, 2654435761, 805459861)  # tinycudann's, as uint32
_PRIMES_I32 = tuple(p - (1 << 32) if p >= 1 << 31 else p for p in _PRIMES)
_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
_CORNERS = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.long)


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
    backend = encoding_backend(cfg, device)
    args = (cfg.n_levels, cfg.features_per_level, cfg.log2_hashmap_size, cfg.base_resolution, cfg.finest_resolution)
    if backend == "tcnn":
        if not tinycudann_available():
            from ..errors import StageError

            raise StageError(
                "encoding_backend=tcnn but tinycudann does not import on this machine "
                "(see `neus-stage doctor`); use encoding_backend=torch or auto"
            )
        log.info("hash grid: tinycudann backend (%s)", "fp16" if half else "fp32")
        return TcnnHashGrid(*args, half=half)
    log.info("hash grid: pure-torch backend")
    return TorchHashGrid(*args)


def full(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 where autocast left it in reduced precision (fp64, as in tests, stays fp64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def fp32(x: torch.Tensor) -> torch.autocast:
    """A block computed in fp32 even under autocast (the MLPs and the geometry; only the encoding runs in
    reduced precision, as in the fast NeuS systems: fp16's spacing near 1 is 4.9e-4, about the finest
    finite-difference step)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def background_enabled(cfg: TrainConfig) -> bool:
    """A NeRF++ background model outside the object: explicitly, or by default when masks are not used."""
    return cfg.background == "nerf++" or (cfg.background == "auto" and not cfg.use_mask)


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


def _squared_edt(mask: torch.Tensor, sampling: tuple[float, float, float], chunk: int = 1024) -> torch.Tensor:
    """Squared Euclidean distance from every True cell to the nearest False cell (0 on False cells), exact,
    as scipy.ndimage.distance_transform_edt: the nearest False cell along the first axis by two scans, then
    a 1-D min-plus transform along each other axis (Felzenszwalb and Huttenlocher's separable form), brute
    force over each line, which a 128^3 grid affords in a second or two."""
    n0 = mask.shape[0]
    pos = torch.arange(n0, dtype=torch.float32).view(-1, 1, 1).expand(mask.shape)
    inf = torch.tensor(float("inf"))
    left = torch.where(mask, -inf, pos).cummax(0).values
    right = torch.where(mask, inf, pos).flip(0).cummin(0).values.flip(0)
    d = (torch.minimum(pos - left, right - pos) * sampling[0]) ** 2
    for axis in (1, 2):
        moved = d.movedim(axis, -1)
        n = moved.shape[-1]
        idx = torch.arange(n, dtype=torch.float32)
        cost = ((idx[:, None] - idx[None, :]) * sampling[axis]) ** 2  # (i, j)
        lines = moved.reshape(-1, n)
        out = torch.cat([(part[:, None, :] + cost[None]).amin(-1) for part in lines.split(chunk)])
        d = out.view(moved.shape).movedim(-1, axis)
    return d


def _gaussian_smooth(grid: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of a 3-D grid (edges extended; scipy.ndimage.gaussian_filter reflects them)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=grid.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    for axis in range(3):
        moved = grid.movedim(axis, -1)
        shape = moved.shape
        lines = F.pad(moved.reshape(-1, 1, shape[-1]), (radius, radius), mode="replicate")
        grid = F.conv1d(lines, kernel).view(shape).movedim(-1, axis)
    return grid


def hull_prior_grid(occupancy: np.ndarray, voxel: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Signed distance (negative inside) of the visual hull's occupancy grid, lightly smoothed. scipy's
    distance transform where scipy is installed, else the same in torch (a GPU node's stock environment)."""
    occ = np.asarray(occupancy, dtype=bool)
    voxel = np.asarray(voxel, dtype=np.float64).reshape(3)
    try:
        from scipy import ndimage
    except ImportError:
        return hull_prior_grid_torch(occ, voxel, smooth)
    outside = ndimage.distance_transform_edt(~occ, sampling=voxel)
    inside = ndimage.distance_transform_edt(occ, sampling=voxel)
    sdf = np.where(occ, -inside + 0.5 * voxel.min(), outside - 0.5 * voxel.min())
    if smooth > 0:
        sdf = ndimage.gaussian_filter(sdf, smooth)
    return sdf.astype(np.float32)


def hull_prior_grid_torch(occupancy: np.ndarray, voxel: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """``hull_prior_grid`` with torch alone (equal up to float rounding, and within a voxel's width of the
    smoothing's edge handling at the box boundary)."""
    occ = torch.from_numpy(np.asarray(occupancy, dtype=bool))
    sampling = tuple(float(v) for v in np.asarray(voxel, dtype=np.float64).reshape(3))
    with torch.no_grad():
        outside = _squared_edt(~occ, sampling).sqrt()
        inside = _squared_edt(occ, sampling).sqrt()
        half = 0.5 * min(sampling)
        sdf = torch.where(occ, -inside + half, outside - half)
        if smooth > 0:
            sdf = _gaussian_smooth(sdf, smooth)
    return sdf.float().numpy()


def corner_offsets(shape: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """Flat-index offsets (8,) of a cell's corners in a C-ordered grid of ``shape``, corner (a, b, c) at
    position 4a + 2b + c (the order of ``trilinear_dense``'s weights)."""
    _, n1, n2 = shape
    return torch.tensor([(a * n1 + b) * n2 + c for a in (0, 1) for b in (0, 1) for c in (0, 1)], device=device)


def trilinear_dense(grid: torch.Tensor, u: torch.Tensor, corners: torch.Tensor | None = None) -> torch.Tensor:
    """Sample a dense scalar grid (R0,R1,R2) at u (N,3) in [0,1] (voxel-centred), double-differentiable.
    One gather of the 8 corners from the flat grid (``corners``: ``corner_offsets(grid.shape)``, kept on the
    device by the caller) and separable weights."""
    if corners is None:
        corners = corner_offsets(tuple(grid.shape), u.device)
    _, n1, n2 = grid.shape
    axes = [(u[:, k] * n - 0.5).clamp(0.0, n - 1.0001) for k, n in enumerate(grid.shape)]
    lo = [torch.floor(p) for p in axes]
    w = [torch.stack([1 - (p - p0), p - p0], -1) for p, p0 in zip(axes, lo)]  # (N,2) per axis
    i0, i1, i2 = (p0.long() for p0 in lo)
    vals = grid.reshape(-1)[((i0 * n1 + i1) * n2 + i2)[:, None] + corners]  # (N,8)
    weights = (w[0][:, :, None, None] * w[1][:, None, :, None] * w[2][:, None, None, :]).reshape(-1, 8)
    return (weights * vals).sum(-1)


class HashSDF(nn.Module):
    """Hash-grid SDF: sdf(x) = base(x) + MLP([x, grid(x)])[0]; the rest of the output is the geometry feature.

    The base is the visual hull's signed distance when a prior is given, else NeuS's initial sphere
    (``init_radius`` about the origin of the normalised frame, the object's centre). The prior's inside is
    scaled by ``prior_weight`` (falling from 1 with hull_prior_fade) and, for hull_prior=outside, by a
    per-cell share ``prior_keep`` (1 during hull_prior_warmup, then 0 while training; 1 afterwards where no
    camera sees into the hull): the
    hull stays an outer bound (the masks say where the object is not), while what lies inside it, such as
    a concavity the silhouettes fill in, is left to the network and the photos.
    The MLP runs in fp32 even under autocast; only the encoding computes in reduced precision.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        box_min: torch.Tensor,
        box_max: torch.Tensor,
        device: torch.device,
        prior: torch.Tensor | None = None,
        half: bool = False,
    ):
        super().__init__()
        self.register_buffer("box_min", box_min.float().clone())
        self.register_buffer("box_max", box_max.float().clone())
        self.register_buffer("box_size", (box_max - box_min).float().clone(), persistent=False)
        self.extent = float((box_max - box_min).max())  # host copies: no device read per step
        self.encoding = make_hash_grid(cfg, device, half=half)
        self.n_levels, self.n_features = cfg.n_levels, cfg.features_per_level
        self.base_res = cfg.base_resolution
        self.init_radius = cfg.init_radius
        dims = [3 + self.encoding.out_dim] + [cfg.sdf_hidden] * cfg.sdf_layers + [1 + cfg.feature_dim]
        layers = []
        for i in range(len(dims) - 1):
            lin = nn.Linear(dims[i], dims[i + 1])
            if i == len(dims) - 2:
                nn.init.normal_(lin.weight, 0.0, 1e-4)
                nn.init.zeros_(lin.bias)
            else:
                nn.init.kaiming_uniform_(lin.weight, a=0.0, nonlinearity="relu")
                nn.init.zeros_(lin.bias)
            layers.append(lin)
        self.layers = nn.ModuleList(layers)
        self.act = nn.Softplus(beta=100)
        self.register_buffer("level_mask", torch.ones(cfg.n_levels))
        self.active_levels = cfg.n_levels
        self.register_buffer("prior", prior.float() if prior is not None else torch.zeros(0))
        shape = tuple(prior.shape) if prior is not None else (1, 1, 1)
        self.register_buffer("prior_corners", corner_offsets(shape), persistent=False)
        self.prior_weight = 1.0  # the share of the prior's inside (hull_prior_fade lowers it)
        # hull_prior=outside: the share of the prior's inside per cell of the box: 0 (a neutral inside) while
        # training; with hull_fill_unseen, 1 afterwards in the cells no camera sees into. A buffer, so the
        # mesh stage queries the same field
        keep = cfg.occupancy_resolution if prior is not None and cfg.hull_prior == "outside" else 1
        start = 1.0 if keep == 1 or cfg.hull_prior_warmup > 0 else 0.0  # a solid start during the warm-up
        self.register_buffer("prior_keep", torch.full((keep, keep, keep), start))
        self.register_buffer("keep_corners", corner_offsets((keep,) * 3), persistent=False)

    def set_active_levels(self, n: int) -> None:
        self.active_levels = max(1, min(n, self.n_levels))
        self.level_mask.copy_(torch.arange(self.n_levels, device=self.level_mask.device) < self.active_levels)

    def fd_step(self) -> float:
        """Finite-difference step (normalised units): one cell of the finest active level (host arithmetic)."""
        res = self.base_res * self.encoding.per_level_scale ** (self.active_levels - 1)
        return self.extent / res

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N,3) normalised frame -> sdf (N,), feature (N,F)."""
        x = full(x)
        u = ((x - self.box_min) / self.box_size).clamp(0.0, 1.0)
        enc = self.encoding(u, self.active_levels)
        with fp32(x):
            enc = full(enc).view(-1, self.n_levels, self.n_features) * self.level_mask[None, :, None]
            h = torch.cat([x, enc.flatten(1)], -1)
            for i, lin in enumerate(self.layers):
                h = lin(h)
                if i < len(self.layers) - 1:
                    h = self.act(h)
            if self.prior.numel():
                base = trilinear_dense(self.prior, u, self.prior_corners)
                per_cell = self.prior_keep.shape[0] > 1
                if per_cell or self.prior_weight < 1:  # the inside (faded): the hull is an outer bound only
                    keep = trilinear_dense(self.prior_keep, u, self.keep_corners) if per_cell else 1.0
                    base = torch.where(base > 0, base, self.prior_weight * keep * base)
            else:
                base = x.norm(dim=-1) - self.init_radius
            return base + h[:, 0], h[:, 1:]


class MLPSDF(nn.Module):
    """The paper's SDF network: positional encoding, 8x256 Softplus(100) MLP, skip at layer 4,
    geometric initialisation to a sphere of radius ``init_radius``, weight normalisation."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.multires = cfg.multires
        d_in = 3 + 6 * cfg.multires if cfg.multires > 0 else 3
        dims = [d_in] + [cfg.sdf_hidden] * cfg.sdf_layers + [1 + cfg.feature_dim]
        self.skip = set(cfg.skip_layers)
        self.n = len(dims)
        layers = []
        for i in range(self.n - 1):
            out_dim = dims[i + 1] - dims[0] if i + 1 in self.skip else dims[i + 1]
            lin = nn.Linear(dims[i], out_dim)
            if i == self.n - 2:
                nn.init.normal_(lin.weight, mean=math.sqrt(math.pi) / math.sqrt(dims[i]), std=1e-4)
                nn.init.constant_(lin.bias, -cfg.init_radius)
            elif cfg.multires > 0 and i == 0:
                nn.init.constant_(lin.bias, 0.0)
                nn.init.constant_(lin.weight[:, 3:], 0.0)
                nn.init.normal_(lin.weight[:, :3], 0.0, math.sqrt(2) / math.sqrt(out_dim))
            elif cfg.multires > 0 and i in self.skip:
                nn.init.constant_(lin.bias, 0.0)
                nn.init.normal_(lin.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
                nn.init.constant_(lin.weight[:, -(dims[0] - 3) :], 0.0)
            else:
                nn.init.constant_(lin.bias, 0.0)
                nn.init.normal_(lin.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
            layers.append(nn.utils.parametrizations.weight_norm(lin))
        self.layers = nn.ModuleList(layers)
        self.act = nn.Softplus(beta=100)

    def set_active_levels(self, n: int) -> None:  # no levels in the MLP
        pass

    def fd_step(self) -> float:
        return 1e-3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with fp32(x):
            inputs = positional_encoding(full(x), self.multires)
            h = inputs
            for i, lin in enumerate(self.layers):
                if i in self.skip:
                    h = torch.cat([h, inputs], -1) / math.sqrt(2)
                h = lin(h)
                if i < self.n - 2:
                    h = self.act(h)
            return h[:, 0], h[:, 1:]


class ColorNet(nn.Module):
    """Colour from (point, normal, view direction, geometry feature), NeuS's 'idr' mode.

    The view direction is encoded with spherical harmonics (hash grid) or positional encoding (mlp)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.mlp_mode = cfg.sdf_backend == "mlp"
        if self.mlp_mode:
            self.view_dim = 3 + 6 * cfg.multires_view if cfg.multires_view > 0 else 3
        else:
            self.view_dim = cfg.sh_degree**2 if cfg.sh_degree > 0 else 0
        self.cfg = cfg
        d_in = 3 + 3 + self.view_dim + cfg.feature_dim
        dims = [d_in] + [cfg.color_hidden] * cfg.color_layers + [3]
        layers = [nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1)]
        if self.mlp_mode:
            layers = [nn.utils.parametrizations.weight_norm(lin) for lin in layers]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, normals: torch.Tensor, dirs: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        with fp32(x):
            x, normals, dirs, feat = full(x), full(normals), full(dirs), full(feat)
            if self.mlp_mode:
                view = positional_encoding(dirs, self.cfg.multires_view)
            else:
                view = sh_encoding(dirs, self.cfg.sh_degree) if self.view_dim else dirs[:, :0]
            h = torch.cat([x, normals, view, feat], -1)
            for i, lin in enumerate(self.layers):
                h = lin(h)
                if i < len(self.layers) - 1:
                    h = F.relu(h)
            return torch.sigmoid(h)


class BackgroundNeRF(nn.Module):
    """NeRF++'s background model, as NeuS uses it without masks: a NeRF MLP on the inverted-sphere
    parametrisation (x/r, 1/r) of points outside the unit sphere (r clamped to at least 1), giving a
    density and a view-dependent colour; positional encoding of point and direction, skip connection
    half way (NeuS: 8x256, 10 and 4 frequencies)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.multires, self.multires_view = cfg.bg_multires, cfg.bg_multires_view
        d_in = 4 * (1 + 2 * cfg.bg_multires)
        d_view = 3 * (1 + 2 * cfg.bg_multires_view)
        w = cfg.bg_hidden
        self.skip = cfg.bg_layers // 2 if cfg.bg_layers > 2 else -1
        self.pts = nn.ModuleList(
            [nn.Linear(d_in, w)] + [nn.Linear(w + (d_in if i == self.skip else 0), w) for i in range(1, cfg.bg_layers)]
        )
        self.density = nn.Linear(w, 1)
        self.feature = nn.Linear(w, w)
        self.view = nn.Linear(w + d_view, w // 2)
        self.rgb = nn.Linear(w // 2, 3)

    def forward(self, x: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (N,3) in the normalised frame, unit directions (N,3) -> density (N,) >= 0, colour (N,3)."""
        with fp32(x):
            x, dirs = full(x), full(dirs)
            r = x.norm(dim=-1, keepdim=True).clamp(min=1.0)
            inputs = positional_encoding(torch.cat([x / r, 1.0 / r], -1), self.multires)
            h = inputs
            for i, lin in enumerate(self.pts):
                if i == self.skip:
                    h = torch.cat([inputs, h], -1)
                h = F.relu(lin(h))
            density = F.softplus(self.density(h)[:, 0])
            h = F.relu(self.view(torch.cat([self.feature(h), positional_encoding(dirs, self.multires_view)], -1)))
            return density, torch.sigmoid(self.rgb(h))


class NeuSModel(nn.Module):
    """SDF network + colour network + NeuS's learned variance. ``half``: the tinycudann encoding computes
    in fp16 (mixed precision)."""

    def __init__(
        self,
        cfg: TrainConfig,
        box_min: torch.Tensor,
        box_max: torch.Tensor,
        device: torch.device,
        prior: torch.Tensor | None = None,
        half: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        if cfg.sdf_backend == "mlp":
            self.sdf_net: nn.Module = MLPSDF(cfg)
        else:
            self.sdf_net = HashSDF(cfg, box_min, box_max, device, prior, half=half)
        self.color_net = ColorNet(cfg)
        self.background = BackgroundNeRF(cfg) if background_enabled(cfg) else None
        self.variance = nn.Parameter(torch.tensor(cfg.init_variance))
        self.register_buffer("box_min", box_min.float().clone())
        self.register_buffer("box_max", box_max.float().clone())
        # the tetrahedron of the finite-difference normals, kept on the model's device
        self.register_buffer("tetra", _TETRA.clone(), persistent=False)

    def inv_s(self) -> torch.Tensor:
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdf_net(x)[0]

    def sdf_feature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sdf_net(x)

    def grid_parameters(self) -> list[nn.Parameter]:
        enc = getattr(self.sdf_net, "encoding", None)
        return list(enc.parameters()) if enc is not None else []
