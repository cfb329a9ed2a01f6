"""Sampling and NeuS volume rendering. The renderer takes the model as an argument (as NeuS does).

Fast modes sample uniformly inside the object box and evaluate only the samples that fall in occupied
cells of an occupancy grid (every cell with NeuS alpha over one step above a threshold, so the inside of
the surface stays sampled). A gradient-free SDF pass over those samples then finds where each ray has
become opaque; only the samples before that point (and, with ``alpha_thre``, those that add opacity)
are evaluated with gradients, as nerfacc's early ray termination does. The faithful mode adds NeuS's
hierarchical up-sampling. Alpha uses NeuS's per-section estimate, so skipped samples simply contribute
zero opacity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .fields import NeuSModel


def ray_box(o: torch.Tensor, d: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor):
    """Slab intersection: near, far (R,) and whether the ray hits the box in front of the camera."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (bmin - o) * inv, (bmax - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near + 1e-6
    return near, torch.where(hit, far, near + 1e-3), hit


def step_alpha(sdf: torch.Tensor, inv_s: torch.Tensor, step: float) -> torch.Tensor:
    """NeuS alpha over one step of length ``step`` for a ray crossing the surface head-on: near 1 inside
    the surface, near 0 outside it (instant-nsr-pl's occupancy test)."""
    prev = torch.sigmoid((sdf + 0.5 * step) * inv_s)
    nxt = torch.sigmoid((sdf - 0.5 * step) * inv_s)
    return ((prev - nxt + 1e-5) / (prev + 1e-5)).clamp(0.0, 1.0)


def grid_lookup(grid: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Whether points (..., 3) fall in an occupied cell of the bool ``grid`` over the box bmin..bmax."""
    u = (pts - bmin) / (bmax - bmin)
    inside = ((u >= 0) & (u < 1)).all(-1)  # False for non-finite points (rays that miss the box)
    res = torch.tensor(grid.shape, device=grid.device)
    idx = (u.nan_to_num(0.0, 0.0, 0.0).clamp(0, 0.99999) * res).long()
    return inside & grid[idx[..., 0], idx[..., 1], idx[..., 2]]


class OccupancyGrid:
    """Cells over the object box in which samples are evaluated (nerfacc / NeuS2 style).

    Each cell remembers the largest NeuS alpha over one render step found at a random point in it,
    decayed by ``decay`` whenever the cell is evaluated again; it is occupied while that exceeds
    ``threshold`` (or the mean over the cells, if lower). The inside of the surface has alpha near 1, so
    it is never dropped: training can still carve a concavity that the starting surface filled. Cells
    outside ``base`` (the dilated visual hull) are never occupied. Until the first update every base cell
    is occupied.
    """

    def __init__(
        self,
        bmin: torch.Tensor,
        bmax: torch.Tensor,
        base: torch.Tensor,
        *,
        step_size: float = 0.01,
        threshold: float = 0.01,
        decay: float = 0.95,
    ):
        self.bmin, self.bmax = bmin, bmax
        self.base = base.bool()
        self.grid = self.base.clone()
        self.density = torch.zeros(base.shape, device=base.device)
        self.cells = torch.nonzero(self.base)  # candidate cells (M,3)
        self.res = torch.tensor(base.shape, device=base.device)
        self.step_size, self.threshold, self.decay = step_size, threshold, decay

    def lookup(self, pts: torch.Tensor) -> torch.Tensor:
        return grid_lookup(self.grid, self.bmin, self.bmax, pts)

    @torch.no_grad()
    def update(
        self, model: NeuSModel, gen: torch.Generator | None = None, *, every_cell: bool = True, chunk: int = 65536
    ) -> None:
        """Evaluate every base cell (``every_cell``) or a random quarter of them plus the occupied ones at a
        random point each (the centre without ``gen``), and refresh the occupied cells."""
        cells = self.cells
        if not every_cell and len(cells):
            pick = torch.randint(len(cells), (max(1, len(cells) // 4),), generator=gen, device=cells.device)
            cells = torch.unique(torch.cat([cells[pick], torch.nonzero(self.grid)]), dim=0)
        if not len(cells):
            return
        size = (self.bmax - self.bmin) / self.res
        if gen is not None:
            jitter = torch.rand(cells.shape, generator=gen, device=cells.device)
        else:
            jitter = torch.full(cells.shape, 0.5, device=cells.device)
        pts = self.bmin + (cells.float() + jitter) * size
        inv_s = model.inv_s().detach()
        alpha = torch.cat([step_alpha(model.sdf(p).float(), inv_s, self.step_size) for p in pts.split(chunk)])
        i, j, k = cells.unbind(-1)
        self.density[i, j, k] = torch.maximum(self.density[i, j, k] * self.decay, alpha)
        thre = torch.clamp(self.density[self.base].mean(), max=self.threshold)
        self.grid = self.base & (self.density > thre)

    def occupied_share(self) -> float:
        """Share of the box that is occupied (reads the device)."""
        return float(self.grid.float().mean())

    def state_dict(self) -> dict:
        return {"grid": self.grid.cpu(), "density": self.density.cpu()}

    def load_state_dict(self, state: dict | torch.Tensor) -> None:
        if isinstance(state, torch.Tensor):  # checkpoints before the alpha memory: the grid alone
            self.grid = state.to(self.base.device).bool()
            return
        self.grid = state["grid"].to(self.base.device).bool()
        self.density = state["density"].to(self.base.device)


def compositing_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights alpha_i * prod_{j<i} (1 - alpha_j) along the last axis."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], -1), -1)[:, :-1]
    return alpha * trans


def uniform(shape: tuple[int, ...], device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """U(0,1) samples on ``device``, from ``gen`` (a generator on that device, for repeatable runs) where given."""
    return torch.rand(shape, generator=gen, device=device)


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
    # finite-difference step from x, as central differences' were. The step is host arithmetic on the
    # active level (no device read)
    h = model.sdf_net.fd_step() / math.sqrt(3.0)
    k = model.tetra
    # one network call for the point and its four neighbours: a single pass through the hash table
    # (and a single scatter into its gradient) instead of two
    m = x.shape[0]
    sdf_all, feat_all = model.sdf_feature(torch.cat([x, (x[None] + h * k[:, None]).reshape(-1, 3)]))
    sdf, feat, s = sdf_all[:m], feat_all[:m], sdf_all[m:].view(4, -1)
    grad = (k[:, None, :] * s[..., None]).sum(0) / (4 * h)
    lap = (s.sum(0) - 4 * sdf) / (2 * h * h)
    return sdf, feat, grad, lap


@torch.no_grad()
def estimated_transmittance(
    model: NeuSModel, pts: torch.Tensor, mid: torch.Tensor, dists: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha and the transmittance in front of each sample (R,S) from one gradient-free SDF query per
    ``valid`` sample (the others: alpha 0), with the cosine estimated from the SDF of the neighbouring
    samples along the ray (0 where no neighbour was evaluated: that underestimates alpha)."""
    idx = valid.nonzero(as_tuple=True)
    if not len(idx[0]):
        return torch.zeros_like(mid), torch.ones_like(mid)
    sdf = torch.full(valid.shape, float("nan"), device=pts.device)
    sdf[idx] = model.sdf(pts[idx]).float()
    slope = (sdf[:, 1:] - sdf[:, :-1]) / (mid[:, 1:] - mid[:, :-1]).clamp(min=1e-6)
    pad = torch.full_like(slope[:, :1], float("nan"))
    cos = torch.nanmean(torch.stack([torch.cat([pad, slope], 1), torch.cat([slope, pad], 1)]), 0)
    cos = torch.nan_to_num(cos, nan=0.0).clamp(-1.0, 0.0)
    inv_s = model.inv_s()
    prev = torch.sigmoid((sdf - cos * dists * 0.5) * inv_s)
    nxt = torch.sigmoid((sdf + cos * dists * 0.5) * inv_s)
    alpha = torch.where(valid, ((prev - nxt + 1e-5) / (prev + 1e-5)).clamp(0.0, 1.0), 0.0)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-7], -1), -1)
    return alpha, trans


def visible_samples(
    model: NeuSModel, pts: torch.Tensor, mid: torch.Tensor, dists: torch.Tensor, valid: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    """The samples (R,S) worth evaluating with gradients: ``valid`` ones where the ray is not yet opaque
    (estimated transmittance above early_stop_eps; an underestimated alpha keeps more samples, never
    fewer) and, with alpha_thre, that add opacity."""
    alpha, trans = estimated_transmittance(model, pts, mid, dists, valid)
    keep = valid & (trans > cfg.early_stop_eps)
    if cfg.alpha_thre > 0:
        keep &= alpha > cfg.alpha_thre
    return keep


def sample_along(o: torch.Tensor, d: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor, n: int):
    """Sample midpoints (R,n,3), their depths and lengths (R,n) at n even steps through the box, and ``hit``."""
    near, far, hit = ray_box(o, d, bmin, bmax)
    step = (far - near) / n
    z = near[:, None] + step[:, None] * (torch.arange(n, device=o.device) + 0.5)
    dists = step[:, None].expand_as(z)
    mid = z + 0.5 * dists
    return o[:, None] + d[:, None] * mid[..., None], mid, dists, hit


@torch.no_grad()
def seen_cells(model: NeuSModel, rays, cfg: TrainConfig, occupancy: OccupancyGrid, level: float = 0.5) -> torch.Tensor:
    """The cells of ``occupancy``'s grid in which some camera ray of ``rays`` (an iterable of (o, d)
    batches) reaches a sample with transmittance above ``level``: the space the photos show, up to and
    including the visible surfaces. What lies behind those surfaces, as the model stands, is unseen."""
    res = occupancy.res
    seen = torch.zeros(int(res.prod()), device=res.device)
    for o, d in rays:
        pts, mid, dists, hit = sample_along(o, d, model.box_min, model.box_max, cfg.n_samples)
        valid = hit[:, None] & occupancy.lookup(pts)
        _, trans = estimated_transmittance(model, pts, mid, dists, valid)
        u = (pts - occupancy.bmin) / (occupancy.bmax - occupancy.bmin)
        inside = ((u >= 0) & (u < 1)).all(-1) & hit[:, None]
        i, j, k = (u.clamp(0, 0.99999) * res).long().unbind(-1)
        flat = ((i * res[1] + j) * res[2] + k).reshape(-1)
        seen.scatter_reduce_(0, flat, ((trans > level) & inside).float().reshape(-1), "amax")
    return seen.view(*occupancy.base.shape) > 0


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
) -> dict[str, torch.Tensor | int]:
    """Volume-render rays (R,) -> rgb (R,3), opacity (R,), normal (R,3), depth (R,), the eikonal and
    curvature terms and ``n_eval`` (a host int: samples evaluated with gradients)."""
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
    if cfg.early_stop_eps > 0:
        valid = visible_samples(model, pts, mid, dists, valid, cfg)
    idx = valid.nonzero(as_tuple=True)
    x = pts[idx]
    dirs = d[:, None].expand_as(pts)[idx]
    n_eval = x.shape[0]
    alpha = torch.zeros_like(mid)
    color = torch.zeros(*mid.shape, 3, device=o.device)
    normal = torch.zeros(*mid.shape, 3, device=o.device)
    out: dict = {}
    if n_eval:
        sdf, feat, grad, lap = sdf_and_gradient(model, x, cfg, train)
        inv_s = model.inv_s()
        true_cos = (dirs * grad).sum(-1)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal) + F.relu(-true_cos) * cos_anneal)
        dist = dists[idx]
        prev_cdf = torch.sigmoid((sdf - iter_cos * dist * 0.5) * inv_s)
        next_cdf = torch.sigmoid((sdf + iter_cos * dist * 0.5) * inv_s)
        a = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)
        # scatter in the destination's dtype: under autocast a network output may come back in reduced precision
        alpha = alpha.index_put(idx, a.to(alpha.dtype))
        color = color.index_put(idx, model.color_net(x, grad, dirs, feat).to(color.dtype))
        normal = normal.index_put(idx, F.normalize(grad, dim=-1).to(normal.dtype))
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
    out["n_eval"] = n_eval
    return out


def eikonal_points(model: NeuSModel, n: int, cfg: TrainConfig, gen: torch.Generator | None) -> torch.Tensor:
    """The eikonal term (|grad| - 1)^2 at ``n`` uniform random points of the box: the cells no ray samples
    (the inside, what the cameras never see) stay a distance field, so the hash table's collisions do not
    leave floaters there for the mesh stage, which queries the whole (dilated) hull."""
    lo, hi = model.box_min, model.box_max
    x = lo + (hi - lo) * uniform((n, 3), lo.device, gen)
    _, _, grad, _ = sdf_and_gradient(model, x, cfg, train=True)
    return (grad.norm(dim=-1) - 1.0) ** 2


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
