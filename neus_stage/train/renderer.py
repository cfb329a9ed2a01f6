"""Sampling and NeuS volume rendering. The renderer takes the model as an argument (as NeuS does).

Fast modes sample uniformly inside the object box and evaluate only the samples that fall in occupied
cells of an occupancy grid (initialised from the visual hull, refreshed from the SDF); the faithful mode
adds NeuS's hierarchical up-sampling. Alpha uses NeuS's per-section estimate, so skipped samples simply
contribute zero opacity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .fields import NeuSModel

_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def ray_box(o: torch.Tensor, d: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor):
    """Slab intersection: near, far (R,) and whether the ray hits the box in front of the camera."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (bmin - o) * inv, (bmax - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near + 1e-6
    return near, torch.where(hit, far, near + 1e-3), hit


class OccupancyGrid:
    """Boolean cells over the object box: samples in empty cells are not evaluated."""

    def __init__(self, bmin: torch.Tensor, bmax: torch.Tensor, base: torch.Tensor, keep_inside: bool = False):
        self.bmin, self.bmax = bmin, bmax
        self.keep_inside = keep_inside
        self.base = base.bool()  # the visual hull (cells that may ever hold surface)
        self.grid = self.base.clone()
        self.res = torch.tensor(base.shape, device=bmin.device)

    def lookup(self, pts: torch.Tensor) -> torch.Tensor:
        u = (pts - self.bmin) / (self.bmax - self.bmin)
        inside = ((u >= 0) & (u < 1)).all(-1)
        idx = (u.clamp(0, 0.99999) * self.res).long()
        return inside & self.grid[idx[..., 0], idx[..., 1], idx[..., 2]]

    @torch.no_grad()
    def update(self, model: NeuSModel, gen: torch.Generator | None = None, chunk: int = 65536) -> float:
        """Mark base cells whose SDF at a jittered centre is within a cell diagonal (or the current
        NeuS density width) of zero; returns the occupied share of the box."""
        cells = torch.nonzero(self.base)
        size = (self.bmax - self.bmin) / self.res
        jitter = torch.rand(cells.shape, generator=gen).to(cells.device) if gen is not None else 0.5
        pts = self.bmin + (cells.float() + jitter) * size
        sdf = torch.cat([model.sdf(p) for p in pts.split(chunk)])
        thresh = max(float(size.norm()), min(0.1, 4.0 / float(model.inv_s().detach())))
        self.grid.zero_()
        keep = sdf < thresh if self.keep_inside else sdf.abs() < thresh
        if not keep.any():
            # the surface lies nowhere in the hull (e.g. NeuS's initial sphere around a small hull): keep
            # the hull's cells inside the surface, or the whole hull, so that training can reach them
            keep = sdf < thresh if (sdf < thresh).any() else torch.ones_like(keep)
        c = cells[keep]
        self.grid[c[:, 0], c[:, 1], c[:, 2]] = True
        return float(self.grid.float().mean())


def compositing_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights alpha_i * prod_{j<i} (1 - alpha_j) along the last axis."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], -1), -1)[:, :-1]
    return alpha * trans


def uniform(shape: tuple[int, ...], device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """U(0,1) samples, from ``gen`` (a CPU generator, for repeatable runs) where given."""
    return torch.rand(shape, generator=gen).to(device) if gen is not None else torch.rand(shape, device=device)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic inverse-CDF samples of piecewise-constant weights over ``bins`` (NeRF/NeuS)."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=bins.device).expand(*cdf.shape[:-1], n).contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp(min=0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    cdf_g0, cdf_g1 = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    b0, b1 = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    denom = torch.where(cdf_g1 - cdf_g0 < 1e-5, torch.ones_like(cdf_g0), cdf_g1 - cdf_g0)
    return b0 + (u - cdf_g0) / denom * (b1 - b0)


@torch.no_grad()
def up_sample(z: torch.Tensor, sdf: torch.Tensor, n: int, inv_s: float) -> torch.Tensor:
    """NeuS's hierarchical step: alpha from the coarse SDF at a fixed sharpness, then new samples."""
    prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
    prev_z, next_z = z[:, :-1], z[:, 1:]
    mid_sdf = (prev_sdf + next_sdf) * 0.5
    cos_val = (next_sdf - prev_sdf) / (next_z - prev_z + 1e-5)
    prev_cos = torch.cat([torch.zeros_like(cos_val[:, :1]), cos_val[:, :-1]], -1)
    cos_val = torch.stack([prev_cos, cos_val], -1).amin(-1).clamp(-1e3, 0.0)
    dist = next_z - prev_z
    prev_cdf = torch.sigmoid((mid_sdf - cos_val * dist * 0.5) * inv_s)
    next_cdf = torch.sigmoid((mid_sdf + cos_val * dist * 0.5) * inv_s)
    alpha = (prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)
    return sample_pdf(z, compositing_weights(alpha), n)


def sdf_and_gradient(model: NeuSModel, x: torch.Tensor, cfg: TrainConfig, train: bool):
    """SDF, geometry feature, gradient and (finite differences only) the Laplacian at x (M,3)."""
    if cfg.normals == "analytic":
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            sdf, feat = model.sdf_feature(x)
            grad = torch.autograd.grad(sdf, x, torch.ones_like(sdf), create_graph=train, retain_graph=train)[0]
        return sdf, feat, grad, None
    # tetrahedral differences: 4 extra SDF queries instead of central differences' 6. With k the
    # tetrahedron's corners (+-1 entries, sum k k^T = 4 I): grad = sum k f(x + h k) / 4h and
    # sum f(x + h k) - 4 f(x) = 2 h^2 laplacian + O(h^4); h = step / sqrt(3) puts the corners one
    # finite-difference step from x, as central differences' were
    h = model.sdf_net.fd_step() / math.sqrt(3.0)
    k = _TETRA.to(device=x.device, dtype=x.dtype)
    # one network call for the point and its four neighbours: a single pass through the hash table
    # (and a single scatter into its gradient) instead of two
    m = x.shape[0]
    sdf_all, feat_all = model.sdf_feature(torch.cat([x, (x[None] + h * k[:, None]).reshape(-1, 3)]))
    sdf, feat, s = sdf_all[:m], feat_all[:m], sdf_all[m:].view(4, -1)
    grad = (k[:, None, :] * s[..., None]).sum(0) / (4 * h)
    lap = (s.sum(0) - 4 * sdf) / (2 * h * h)
    return sdf, feat, grad, lap


def render_rays(
    model: NeuSModel,
    o: torch.Tensor,
    d: torch.Tensor,
    cfg: TrainConfig,
    *,
    occupancy: OccupancyGrid | None,
    cos_anneal: float,
    train: bool,
    gen: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Volume-render rays (R,) -> rgb (R,3), opacity (R,), normal (R,3) and the regularisation terms."""
    R, S = o.shape[0], cfg.n_samples
    near, far, hit = ray_box(o, d, model.box_min, model.box_max)
    step = (far - near) / S
    if train:
        jitter = uniform((R, S), o.device, gen)
    else:
        jitter = torch.full((R, S), 0.5, device=o.device)
    z = near[:, None] + step[:, None] * (torch.arange(S, device=o.device) + jitter)
    if cfg.n_importance > 0:
        with torch.no_grad():
            pts = o[:, None] + d[:, None] * z[..., None]
            sdf_c = model.sdf(pts.reshape(-1, 3)).view(R, -1)
            per = cfg.n_importance // cfg.up_sample_steps
            for i in range(cfg.up_sample_steps):
                z_new = up_sample(z, sdf_c, per, 64 * 2**i)
                z, order = torch.sort(torch.cat([z, z_new], -1), -1)
                pts_new = o[:, None] + d[:, None] * z_new[..., None]
                sdf_new = model.sdf(pts_new.reshape(-1, 3)).view(R, -1)
                sdf_c = torch.gather(torch.cat([sdf_c, sdf_new], -1), -1, order)
    dists = torch.cat([z[:, 1:] - z[:, :-1], step[:, None]], -1)
    mid = z + dists * 0.5
    pts = o[:, None] + d[:, None] * mid[..., None]  # (R,S',3)
    valid = hit[:, None].expand_as(mid).clone()
    if occupancy is not None:
        valid &= occupancy.lookup(pts)
    idx = valid.nonzero(as_tuple=True)
    x = pts[idx]
    dirs = d[:, None].expand_as(pts)[idx]
    n_eval = x.shape[0]
    alpha = torch.zeros_like(mid)
    color = torch.zeros(*mid.shape, 3, device=o.device)
    normal = torch.zeros(*mid.shape, 3, device=o.device)
    out: dict[str, torch.Tensor] = {}
    if n_eval:
        sdf, feat, grad, lap = sdf_and_gradient(model, x, cfg, train)
        inv_s = model.inv_s()
        true_cos = (dirs * grad).sum(-1)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal) + F.relu(-true_cos) * cos_anneal)
        dist = dists[idx]
        prev_cdf = torch.sigmoid((sdf - iter_cos * dist * 0.5) * inv_s)
        next_cdf = torch.sigmoid((sdf + iter_cos * dist * 0.5) * inv_s)
        a = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)
        alpha = alpha.index_put(idx, a)
        color = color.index_put(idx, model.color_net(x, grad, dirs, feat))
        normal = normal.index_put(idx, F.normalize(grad, dim=-1))
        out["eikonal"] = ((grad.norm(dim=-1) - 1.0) ** 2).mean()
        out["curvature"] = lap.abs().mean() if lap is not None else torch.zeros((), device=o.device)
    else:
        out["eikonal"] = out["curvature"] = torch.zeros((), device=o.device)
    weights = compositing_weights(alpha)
    out["rgb"] = (weights[..., None] * color).sum(1)
    out["opacity"] = weights.sum(1)
    out["normal"] = (weights[..., None] * normal).sum(1)
    out["depth"] = (weights * mid).sum(1)
    if model.background is not None:
        # NeRF++: what the object lets through (its transmittance, 1 - opacity) shows the background,
        # rendered from the box's far side (or, for rays that miss the box, the point nearest the centre)
        start = torch.where(hit, far, (-(o * d).sum(-1) / (d * d).sum(-1)).clamp(min=0.0))
        out["rgb"] = out["rgb"] + (1.0 - out["opacity"]).clamp(min=0.0)[:, None] * render_background(
            model, o, d, start, cfg.n_outside, train=train, gen=gen
        )
    out["n_eval"] = torch.tensor(n_eval)
    return out


def render_background(
    model: NeuSModel,
    o: torch.Tensor,
    d: torch.Tensor,
    start: torch.Tensor,
    n: int,
    *,
    train: bool,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Colour (R,3) of the background model along rays from ``start`` to infinity: ``n`` samples uniform
    in inverse depth (NeuS's outside samples, start / u for u in (0, 1)); the last interval is infinite,
    so the background is opaque."""
    R = o.shape[0]
    u = torch.linspace(1e-3, 1.0 - 1.0 / (n + 1.0), n, device=o.device).flip(0)  # 1 -> 0: near -> far
    if train:  # jitter each sample inside its interval, as NeuS does
        jitter = uniform((R, n), o.device, gen)
        mids = 0.5 * (u[1:] + u[:-1])
        upper = torch.cat([u[:1], mids])
        lower = torch.cat([mids, u[-1:]])
        u = lower + (upper - lower) * jitter
    else:
        u = u.expand(R, n)
    z = start.clamp(min=1e-3)[:, None] / u  # (R,n), increasing
    dists = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], 1e10)], -1)
    pts = o[:, None] + d[:, None] * z[..., None]
    dirs = F.normalize(d, dim=-1)[:, None].expand_as(pts)
    density, color = model.background(pts.reshape(-1, 3), dirs.reshape(-1, 3))
    alpha = 1.0 - torch.exp(-density.view(R, n) * dists)
    return (compositing_weights(alpha)[..., None] * color.view(R, n, 3)).sum(1)
