"""Validation renders and their metrics (PSNR, SSIM, mask IoU of one or every held-out view), and
hull_fill_unseen's pass over the training views after training."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import TrainConfig
from .data import NeusScene
from .fields import NeuSModel, reduced_precision
from .losses import psnr, ssim
from .renderer import OccupancyGrid, render_rays, seen_cells

log = logging.getLogger(__name__)


@torch.no_grad()
def render_view(
    model: NeuSModel,
    scene: NeusScene,
    view: int,
    cfg: TrainConfig,
    occupancy,
    device,
    downscale: int,
    chunk: int = 4096,
    amp: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Colour, opacity and camera-frame normals of one view at ``downscale``, rendered in chunks of rays."""
    o, d, h, w = scene.image_rays(view, downscale)
    rgb, opacity, normal = [], [], []
    for oc, dc in zip(o.split(chunk), d.split(chunk)):
        with reduced_precision(device.type, amp):
            out = render_rays(model, oc, dc, cfg, occupancy=occupancy, cos_anneal=1.0, train=False)
        rgb.append(out["rgb"].float().cpu())
        opacity.append(out["opacity"].float().cpu())
        normal.append(out["normal"].float().cpu())
    R_wc = scene.poses[view, :3, :3].cpu()
    n_cam = torch.cat(normal) @ R_wc  # world -> camera axes for display
    return {
        "rgb": torch.cat(rgb).view(h, w, 3).numpy(),
        "opacity": torch.cat(opacity).view(h, w).numpy(),
        "normal": n_cam.view(h, w, 3).numpy(),
    }


def view_metrics(model, scene, cfg, occupancy, device, view: int, amp=None) -> tuple[dict, np.ndarray]:
    """PSNR and SSIM (inside the mask when training with masks) and IoU of the rendered opacity against the mask
    for one view at val_downscale, and the picture GT | colour | normals | opacity."""
    r = render_view(model, scene, view, cfg, occupancy, device, cfg.val_downscale, amp=amp)
    s = cfg.val_downscale
    gt = scene.images[view, ::s, ::s].float().cpu().numpy() / 255.0
    mask = scene.masks[view, ::s, ::s].cpu().numpy()
    gt, mask = gt[: r["rgb"].shape[0], : r["rgb"].shape[1]], mask[: r["rgb"].shape[0], : r["rgb"].shape[1]]
    m = mask[..., None] if scene.has_masks and cfg.use_mask else np.ones_like(mask)[..., None]
    p = psnr(torch.from_numpy(r["rgb"] * m), torch.from_numpy(gt * m)) if m.any() else float("nan")
    ssim_value = ssim(r["rgb"] * m, gt * m, m[..., 0] > 0)
    pred = r["opacity"] > 0.5
    iou = float((pred & mask).sum() / max((pred | mask).sum(), 1))
    nrm = (r["normal"] * np.array([1, -1, -1]) * 0.5 + 0.5) * r["opacity"][..., None]
    panel = np.concatenate([gt, r["rgb"], np.clip(nrm, 0, 1), np.repeat(r["opacity"][..., None], 3, -1)], 1)
    return {"psnr": p, "ssim": ssim_value, "mask_iou": iou}, panel


def validation(
    model, scene, cfg, occupancy, device, out_dir: Path, tag: str, all_views: bool = False, amp=None
) -> dict[str, float]:
    """Render the first validation view and save GT | colour | normals | opacity as PNG; its PSNR and
    mask IoU. With ``all_views`` and held-out views, also the mean over every held-out view."""
    first, panel = view_metrics(model, scene, cfg, occupancy, device, scene.val_ids[0], amp)
    renders = out_dir / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(panel, 0, 1) * 255).astype(np.uint8)).save(renders / f"{tag}.png")
    out = {"val_psnr": first["psnr"], "val_mask_iou": first["mask_iou"], "val_view": scene.names[scene.val_ids[0]]}
    if all_views and cfg.holdout_every > 0:
        per = [first] + [view_metrics(model, scene, cfg, occupancy, device, v, amp)[0] for v in scene.val_ids[1:]]
        out["heldout_views"] = [scene.names[v] for v in scene.val_ids]
        out["heldout_psnr"] = float(np.mean([m["psnr"] for m in per]))
        out["heldout_mask_iou"] = float(np.mean([m["mask_iou"] for m in per]))
        out["heldout_ssim"] = float(np.nanmean([m["ssim"] for m in per]))
        out["heldout_per_view"] = per
    return out


@torch.no_grad()
def fill_unseen(model: NeuSModel, scene: NeusScene, cfg: TrainConfig, occupancy: OccupancyGrid, amp=None) -> float:
    """hull_fill_unseen: give the hull's inside back to the cells no training camera sees into. About 5000
    rays of every training view (a pixel grid); the seen cells are dilated by one, so the hull returns only
    a cell or more behind a visible surface and does not move it. Returns the share of hull cells filled."""
    downscale = max(1, math.ceil(math.sqrt(scene.h * scene.w / 5000)))

    def rays():
        for view in scene.train_ids:
            with torch.autocast(occupancy.base.device.type, enabled=False):  # rays in fp32, as in training
                o, d, _, _ = scene.image_rays(view, downscale)
            yield from zip(o.split(8192), d.split(8192))

    with reduced_precision(occupancy.base.device.type, amp):
        seen = seen_cells(model, rays(), cfg, occupancy)
    seen = F.max_pool3d(seen.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
    keep = model.sdf_net.prior_keep
    keep.copy_((~seen).float())
    filled = float((~seen & occupancy.base).sum() / occupancy.base.sum().clamp(min=1))
    log.info(
        "hull_fill_unseen: %.0f%% of the hull's cells lie where no training camera sees; they keep the hull's inside",
        100 * filled,
    )
    return filled
