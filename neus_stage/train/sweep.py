"""Dense scene points from a plane sweep over the training photos (``sweep_pixels``), for the point terms.

COLMAP's sparse points are few where the texture is dark or seen at a slant (the lower half of a deep cup
holds a dozen), and its dense stereo needs CUDA. This is a small plane sweep in torch on the training device:
for a grid of mask pixels of every training view, planes facing the camera at ``n_depths`` depths through
the object box are scored by the patch NCC against the view's nearest training views (the best half of
them, so an occluding rim does not count), and a pixel gives a point where its best depth matches
well and clearly better than any depth away from it. Each point records the views that agree with it, so
the free-space term (scene_points.py) clears the lines of sight to them: the photos' own stereo opens what
a surface half way down a cup would otherwise hide.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .data import NeusScene
from .renderer import grid_lookup, ray_box

log = logging.getLogger(__name__)

MIN_STD = 0.02
"""A reference patch whose grey levels vary less than this (in [0, 1]) has no texture to match: skipped."""


def source_views(scene: NeusScene, target: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) the k training views (other than the view itself) whose direction from ``target`` (3,) is
    closest to each view's, for every view of the scene."""
    c = scene.poses[:, :3, 3]
    u = F.normalize(c - target, dim=-1)
    cos = u @ u[scene._train].T  # (N, T)
    same = scene._train[None, :] == torch.arange(scene.n, device=c.device)[:, None]
    cos = cos.masked_fill(same, -2.0)
    k = min(k, max(1, len(scene.train_ids) - 1))
    return scene._train[cos.topk(k, dim=1).indices]


def grey_images(scene: NeusScene) -> torch.Tensor:
    """The scene's images as grey levels in [0, 1], (N, H, W) float on its device (looked up many times)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=scene.device)
    return torch.stack([(im.float() * w).sum(-1) / 255.0 for im in scene.images])


def _lookup(grey: torch.Tensor, view: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Grey levels at integer pixels (any shape of indices), by one flat gather."""
    _, h, w = grey.shape
    return grey.view(-1)[(view * h + y) * w + x]


def _bilinear(grey: torch.Tensor, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Grey levels at sub-pixel positions (u: x, v: y; pixel centres at integers) inside [0, w-1] x [0, h-1]."""
    _, h, w = grey.shape
    x0 = u.floor().clamp(0, w - 2)
    y0 = v.floor().clamp(0, h - 2)
    fx, fy = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    g00, g01 = _lookup(grey, view, y0, x0), _lookup(grey, view, y0, x0 + 1)
    g10, g11 = _lookup(grey, view, y0 + 1, x0), _lookup(grey, view, y0 + 1, x0 + 1)
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """NCC over the last axis."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1) + 1e-8)


def patch_costs(
    scene: NeusScene,
    grey: torch.Tensor,
    sources: torch.Tensor,
    view: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    X: torch.Tensor,
    n: torch.Tensor,
    radius: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For R reference pixels (view, y, x) of the grey images ``grey`` (N,H,W; grey_images) and planes
    through X (R,3) with normals n (R,3): the cost
    (1 - NCC) / 2 (R,k) of each pixel's (2 radius + 1)^2 patch against its warp into each of the view's k
    source views (1 where the warp leaves a source image), whether each warp stayed inside (R,k), the
    reference patch's grey-level spread (R,)."""
    o = scene.poses[view][:, :3, 3]
    r = torch.arange(-radius, radius + 1, device=X.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    py = (y[:, None] + dy.reshape(-1)).clamp(0, scene.h - 1)  # (R, P)
    px = (x[:, None] + dx.reshape(-1)).clamp(0, scene.w - 1)
    ref = _lookup(grey, view[:, None], py, px)
    # the patch's rays through the plane (X, n)
    pix = torch.stack([px.float(), py.float(), torch.ones_like(px, dtype=torch.float32)], -1)
    dp = torch.einsum("rij,rpj->rpi", scene.K_inv[view][:, :3, :3], pix)
    dp = torch.einsum("rij,rpj->rpi", scene.poses[view][:, :3, :3], dp)
    facing = (dp * n[:, None]).sum(-1)
    t = ((X - o) * n).sum(-1)[:, None] / torch.where(facing.abs() < 1e-3, torch.full_like(facing, 1e-3), facing)
    Xp = o[:, None] + t[..., None] * dp  # (R, P, 3)
    src = sources[view]  # (R, k)
    pose = scene.poses[src]  # (R, k, 4, 4)
    cam = torch.einsum("rkji,rkpj->rkpi", pose[..., :3, :3], Xp[:, None] - pose[..., None, :3, 3])
    uvw = torch.einsum("rkij,rkpj->rkpi", scene.K[src][..., :3, :3], cam)
    z = uvw[..., 2]
    u = uvw[..., 0] / z.clamp(min=1e-6)
    v = uvw[..., 1] / z.clamp(min=1e-6)
    inside = ((z > 1e-6) & (u >= 0) & (u <= scene.w - 1) & (v >= 0) & (v <= scene.h - 1)).all(-1)  # (R, k)
    got = _bilinear(grey, src[..., None].expand_as(u), u.clamp(0, scene.w - 1), v.clamp(0, scene.h - 1))
    cost = torch.where(inside, (1.0 - _ncc(ref[:, None].expand_as(got), got)) / 2.0, torch.ones_like(got[..., 0]))
    return cost, inside, ref.std(-1)


def best_half(cost: torch.Tensor) -> torch.Tensor:
    """Mean of each row's lowest half of the source costs (an occluded source disagrees; it is left out)."""
    return cost.topk(max(1, cost.shape[-1] // 2), dim=-1, largest=False).values.mean(-1)


MAX_COST = 0.15
"""A point is kept where its best depth's cost (1 - NCC) / 2 is below this (NCC above 0.7)."""
LEAD = 0.08
"""... and where every depth more than two steps away costs at least this much more (a unique match)."""


def _grid_pixels(mask: torch.Tensor, n: int, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``n`` pixels of ``mask`` on a regular grid, at least ``border`` pixels from the image's edges."""
    h, w = mask.shape
    stride = max(1, int(math.sqrt(float(mask.sum()) / max(n, 1))))
    ys = torch.arange(border, h - border, stride, device=mask.device)
    xs = torch.arange(border, w - border, stride, device=mask.device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    keep = mask[yy, xx]
    return yy[keep], xx[keep]


@torch.no_grad()
def _hull_span(
    o: torch.Tensor, d: torch.Tensor, near: torch.Tensor, far: torch.Tensor, hull: torch.Tensor, lo, hi, n: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each ray is in the hull grid (``hull`` (X,Y,Z) bool over the box lo..hi): the first and last
    in-hull depth of ``n`` steps through the box, a step wider either side, and whether it meets the hull."""
    t = near[:, None] + (far - near)[:, None] * (torch.arange(n, device=o.device) + 0.5) / n
    occ = grid_lookup(hull, lo, hi, o[:, None] + d[:, None] * t[..., None])
    step = (far - near) / n
    first = torch.where(occ.any(1), occ.float().argmax(1), torch.zeros_like(near, dtype=torch.long))
    last = n - 1 - occ.flip(1).float().argmax(1)
    t_in = torch.maximum(t.gather(1, first[:, None])[:, 0] - step, near)
    t_out = torch.minimum(t.gather(1, last[:, None])[:, 0] + step, far)
    return t_in, t_out, occ.any(1)


def sweep_points(
    scene: NeusScene,
    box_min: np.ndarray,
    box_max: np.ndarray,
    hull: np.ndarray | None = None,
    *,
    pixels: int,
    n_sources: int = 4,
    radius: int = 2,
    n_depths: int = 32,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (M,3) in the normalised frame and the views observing each (M, N views) bool (the reference view
    and the sources that agree with it), from about ``pixels`` mask pixels of each training view, each
    matched against its ``n_sources`` nearest training views with (2 radius + 1)^2 patches; ``hull``: an
    occupancy grid over the box (the visual hull, grown) that the surface lies in: the depths span each
    ray's stretch through it instead of the whole box (finer steps, and no match outside the hull)."""
    t0 = time.time()
    dev = scene.device
    lo = torch.as_tensor(box_min, dtype=torch.float32, device=dev)
    hi = torch.as_tensor(box_max, dtype=torch.float32, device=dev)
    sources = source_views(scene, (lo + hi) / 2, n_sources)
    grid = torch.from_numpy(np.asarray(hull, dtype=bool)).to(dev) if hull is not None else None
    grey = grey_images(scene)
    steps = (torch.arange(n_depths, device=dev) + 0.5) / n_depths
    far_j = torch.arange(n_depths, device=dev)
    xyz, seen = [], []
    for view in scene.train_ids:
        y, x = _grid_pixels(scene.masks[view], pixels, radius)
        for yc, xc in zip(y.split(chunk), x.split(chunk)):
            v = torch.full_like(yc, view)
            o, d = scene.rays(v, yc, xc)
            near, far, hit = ray_box(o, d, lo, hi)
            if grid is not None:
                near, far, met = _hull_span(o, d, near, far, grid, lo, hi)
                hit = hit & met
            t = near[:, None] + (far - near)[:, None] * steps  # (R, D)
            X = o[:, None] + d[:, None] * t[..., None]
            R, D = t.shape
            n = (-scene.poses[view, :3, 2]).expand(R * D, 3)  # planes facing the camera
            cost, inside, spread = patch_costs(
                scene,
                grey,
                sources,
                v.repeat_interleave(D),
                yc.repeat_interleave(D),
                xc.repeat_interleave(D),
                X.reshape(-1, 3),
                n,
                radius,
            )
            k = cost.shape[1]
            total = torch.where(inside.sum(1) >= max(1, k // 2), best_half(cost), torch.ones_like(cost[:, 0]))
            total = total.view(R, D)
            best, j = total.min(1)
            away = (far_j[None] - j[:, None]).abs() > 2
            rival = torch.where(away, total, torch.ones_like(total)).amin(1)
            ok = hit & (best < MAX_COST) & (rival - best > LEAD) & (spread.view(R, D)[:, 0] > MIN_STD)
            # sub-step depth: the parabola through the best depth's neighbours
            jm, jp = (j - 1).clamp(min=0), (j + 1).clamp(max=D - 1)
            cm, c0, cp = total.gather(1, jm[:, None])[:, 0], best, total.gather(1, jp[:, None])[:, 0]
            curv = cm - 2 * c0 + cp
            shift = torch.where((curv > 1e-6) & (jm < j) & (jp > j), 0.5 * (cm - cp) / curv, torch.zeros_like(c0))
            tb = near + (far - near) * (j.float() + 0.5 + shift.clamp(-0.5, 0.5)) / D
            pts = o + d * tb[:, None]
            agree = cost.view(R, D, k).gather(1, j[:, None, None].expand(R, 1, k))[:, 0] < MAX_COST
            obs = torch.zeros(R, scene.n, dtype=torch.bool, device=dev)
            obs[torch.arange(R, device=dev), v] = True
            obs.scatter_(1, sources[v], agree & inside.view(R, D, k)[torch.arange(R, device=dev), j])
            xyz.append(pts[ok].cpu())
            seen.append(obs[ok].cpu())
    out = torch.cat(xyz).numpy().astype(np.float64) if xyz else np.zeros((0, 3))
    views = torch.cat(seen).numpy() if seen else np.zeros((0, scene.n), dtype=bool)
    log.info(
        "plane sweep: %d points from %d training views (%d depths, %dx%d patches) in %.1f s",
        len(out),
        len(scene.train_ids),
        n_depths,
        2 * radius + 1,
        2 * radius + 1,
        time.time() - t0,
    )
    return out, views
