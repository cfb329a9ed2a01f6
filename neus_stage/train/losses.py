"""The training losses (the named terms and their weighted sum) and the image metrics PSNR and SSIM."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .schedule import StepValues


def loss_terms(
    out: dict,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    eik_box: torch.Tensor | None,
    at_points: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The named loss terms (unweighted). Colour: NeuS's L1 summed over the channels and divided by the
    mask's pixel count (the whole batch without masks); mask: BCE of the opacity; eikonal over the
    rendered samples and the random box points together; points: mean |sdf| at the surface points drawn,
    free_space: mean relu(-x) of the lines of sight's SDF less its clearance (``at_points``, see scene_points.py;
    zero without)."""
    if cfg.use_mask:
        mask = batch["mask"]
        color = ((out["rgb"] - batch["rgb"]).abs().sum(-1) * mask).sum() / (mask.sum() + 1e-5)
        # binary cross-entropy written out: a NaN opacity (divergence) propagates to the log step's check
        # instead of failing F.binary_cross_entropy's range check in the middle of a step
        p = out["opacity"].clamp(1e-3, 1 - 1e-3)
        mask_loss = -(mask * p.log() + (1 - mask) * (1 - p).log()).mean()
    else:
        color = (out["rgb"] - batch["rgb"]).abs().sum(-1).mean()
        mask_loss = torch.zeros((), device=color.device)
    eikonal, n = out["eikonal"], out["n_eval"]
    if eik_box is not None and len(eik_box):
        eikonal = (eikonal * n + eik_box.sum()) / (n + len(eik_box))
    zero = torch.zeros_like(color)
    surface, sight = at_points if at_points is not None else (zero[None], zero[None])
    return {
        "color": color,
        "mask": mask_loss,
        "eikonal": eikonal,
        "curvature": out["curvature"],
        "points": surface.abs().mean() if len(surface) else zero,
        "free_space": F.relu(-sight).mean() if len(sight) else zero,
    }


def total_loss(terms: dict[str, torch.Tensor], cfg: TrainConfig, v: StepValues) -> torch.Tensor:
    """The weighted sum of the terms (the mask term only with masks; the curvature weight as scheduled)."""
    return (
        terms["color"]
        + (cfg.mask_weight * terms["mask"] if cfg.use_mask else 0.0)
        + cfg.eikonal_weight * terms["eikonal"]
        + v.curvature_weight * terms["curvature"]
        + cfg.point_weight * (terms["points"] + terms["free_space"])
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in [0,1] (the MSE floored at 1e-10)."""
    mse = float(((a - b) ** 2).mean())
    return -10.0 * math.log10(max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of two (H,W,3) images in [0,1] (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, C1 = 0.01^2,
    C2 = 0.03^2, per channel), averaged over the pixels of ``mask`` (all where None)."""
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).permute(2, 0, 1)[:, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, reflected borders
        t = F.conv2d(F.pad(t, (5, 5, 0, 0), mode="reflect"), g.view(1, 1, 1, 11))
        return F.conv2d(F.pad(t, (0, 0, 5, 5), mode="reflect"), g.view(1, 1, 11, 1))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    s = s.mean(0)[0].numpy()  # mean over channels -> (H,W)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        return float(s[m].mean()) if m.any() else float("nan")
    return float(s.mean())
