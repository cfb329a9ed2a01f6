"""Networks: the SDF networks (hash grid + tiny MLP; the paper's 8x256 MLP), the colour network, NeRF++'s
background and NeuSModel, which holds them with NeuS's learned variance. The encodings are in encodings.py,
the hull prior's grid in hull_grid.py.

Every field takes points in NeuS's normalised frame (object inside the unit sphere).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .encodings import make_hash_grid, positional_encoding, sh_encoding
from .hull_grid import corner_offsets, trilinear_dense

_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def full(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 where autocast left it in reduced precision (fp64, as in tests, stays fp64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def fp32(x: torch.Tensor) -> torch.autocast:
    """A block computed in fp32 even under autocast (the MLPs and the geometry; only the encoding runs in
    reduced precision, as in the fast NeuS systems: fp16's spacing near 1 is 4.9e-4, about the finest
    finite-difference step)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def reduced_precision(device_type: str, amp: torch.dtype | None) -> torch.autocast:
    """Autocast to the encoding's reduced precision ``amp`` on ``device_type`` (disabled where None: fp32)."""
    return torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None)


def background_enabled(cfg: TrainConfig) -> bool:
    """A NeRF++ background model outside the object: explicitly, or by default when masks are not used."""
    return cfg.background == "nerf++" or (cfg.background == "auto" and not cfg.use_mask)


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
