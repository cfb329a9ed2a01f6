"""The training loop: losses, schedules, occupancy updates, resumable checkpoints, validation renders.

A step draws rays on the training device, renders them (under autocast where ``precision`` asks for it:
only the hash encoding computes in reduced precision), adds the named loss terms and steps the
optimiser. Nothing in a step reads the device back except the sample count of the occupancy-skipped
rays (the size of a boolean selection); losses, PSNR and the finiteness check are read every
``log_every`` steps.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tqdm import tqdm

from ..artifacts.box import read_bbox, read_hull
from ..errors import StageError
from .checkpoint import build_model, resume_training, save_checkpoint
from .config import TrainConfig, config_dict, config_hash
from .data import NeusScene
from .device import autocast_dtype, pick_device
from .fields import NeuSModel, grid_levels, hull_prior_grid
from .renderer import OccupancyGrid, eikonal_points, render_rays, seen_cells

log = logging.getLogger(__name__)

LOG_COLUMNS = ["step", "loss", "color_loss", "psnr", "mask_loss", "eikonal", "inv_s", "n_rays", "samples", "seconds",
               "curvature"]


# ------------------------------------------------------------------------------------------ set-up
def training_box(hull_path: Path | None, bbox_path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The box training samples in (normalised frame) and the hull occupancy over it, if any. An empty hull,
    or one that fills its box (masks that are foreground everywhere), is an error."""
    if hull_path is not None:
        hull_path = Path(hull_path)
        occ, lo, hi = read_hull(hull_path)
        lo, hi = lo.astype(np.float32), hi.astype(np.float32)
        if not occ.any():
            raise StageError(
                f"{hull_path}: the visual hull is empty; the masks and cameras agree on no object: check the "
                "masks (masks/overlay.jpg) and re-run the visual_hull stage"
            )
        if occ.mean() > 0.95:
            raise StageError(
                f"{hull_path}: the visual hull fills {100 * occ.mean():.0f}% of its box, so it bounds nothing: "
                "the masks are foreground nearly everywhere or the box is too small; check the masks and re-run "
                "the visual_hull stage"
            )
        return lo, hi, occ
    if bbox_path is not None:
        lo, hi = read_bbox(bbox_path)
        pad = 0.1 * (hi - lo)
        return (lo - pad).astype(np.float32), (hi + pad).astype(np.float32), None
    return -np.ones(3, np.float32), np.ones(3, np.float32), None


def hull_prior(cfg: TrainConfig, hull: np.ndarray | None, box_min: np.ndarray, box_max: np.ndarray):
    """The hull's signed-distance grid where the config starts from it (hash grid, hull_prior), else None."""
    if cfg.sdf_backend != "hashgrid" or cfg.hull_prior == "none" or hull is None:
        return None
    voxel = (box_max - box_min) / np.array(hull.shape)
    return torch.from_numpy(hull_prior_grid(hull, voxel))


def initial_occupancy(hull: np.ndarray | None, res: int, device: torch.device) -> torch.Tensor:
    """The hull resampled to ``res`` cells per axis and dilated by one cell (all occupied without a hull)."""
    if hull is None:
        return torch.ones(res, res, res, dtype=torch.bool, device=device)
    g = torch.from_numpy(hull.astype(np.float32))[None, None]
    g = F.interpolate(g, size=(res, res, res), mode="trilinear", align_corners=False) > 0
    g = F.max_pool3d(g.float(), 3, stride=1, padding=1) > 0
    return g[0, 0].to(device)


# --------------------------------------------------------------------------------------- schedules
@dataclass
class StepValues:
    """Everything that depends on the step, computed on the host."""

    lr_factor: float
    levels: int
    cos_anneal: float
    curvature_weight: float
    prior_weight: float
    prior_solid: bool
    occupancy_every_cell: bool


class Schedule:
    """Step-dependent quantities over a run of ``length`` steps. ``length`` is cfg.steps, or fewer when a time
    budget (max_minutes) will not fit them: then every schedule is compressed by the same factor, so that a
    run given five minutes still warms up, activates all levels and anneals its learning rate before the
    time is up."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.length = cfg.steps
        self.active = 0
        self.level_scale = 1.0
        if cfg.sdf_backend == "hashgrid":
            self.level_scale = grid_levels(
                cfg.n_levels, cfg.base_resolution, cfg.finest_resolution, cfg.log2_hashmap_size
            )[0]

    def _scaled(self, n: int) -> float:
        return max(n * self.length / max(self.cfg.steps, 1), 1.0)

    def fit_time(self, done: int, first: int, elapsed: float) -> None:
        """Shorten the schedule to the steps that fit the rest of the budget at the rate so far."""
        budget = self.cfg.max_minutes * 60.0
        rate = (done - first) / max(elapsed, 1e-9)
        self.length = int(max(done + 1, min(self.cfg.steps, done + rate * (budget - elapsed))))

    def levels(self, step: int) -> int:
        c = self.cfg
        self.active = max(self.active, min(c.n_levels, c.start_levels + int(step // self._scaled(c.level_every))))
        return self.active

    def lr_factor(self, step: int) -> float:
        c = self.cfg
        warmup = self._scaled(c.warmup_steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(self.length - warmup, 1)
        return c.lr_alpha + (1 - c.lr_alpha) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def anneal_end(self) -> int:
        """NeuS anneals its cos term only without masks (its mask configs set anneal_end to 0)."""
        return self.cfg.anneal_end if self.cfg.use_mask else self.cfg.anneal_end_no_mask

    def cos_anneal(self, step: int) -> float:
        end = self.anneal_end()
        return 1.0 if end == 0 else min(1.0, step / self._scaled(end))

    def curvature_weight(self, step: int) -> float:
        """Warmed up, then divided by the per-level scale for each level beyond start_levels: the Laplacian's
        finite-difference step shrinks by that factor per level (Neuralangelo's decay)."""
        c = self.cfg
        ramp = min(1.0, step / self._scaled(c.curvature_warmup))
        grown = max(self.levels(step) - c.start_levels, 0)
        return c.curvature_weight * ramp / self.level_scale**grown

    def prior_weight(self, step: int) -> float:
        """The share of the hull prior's inside in the SDF's base: 1, or falling linearly to 0 over
        hull_prior_fade steps (hull_prior=full; for outside the per-cell share does the work)."""
        if self.cfg.hull_prior_fade <= 0 or self.cfg.hull_prior == "outside":
            return 1.0
        return max(0.0, 1.0 - step / self._scaled(self.cfg.hull_prior_fade))

    def update(self, step: int) -> StepValues:
        return StepValues(
            lr_factor=self.lr_factor(step),
            levels=self.levels(step),
            cos_anneal=self.cos_anneal(step),
            curvature_weight=self.curvature_weight(step),
            prior_weight=self.prior_weight(step),
            prior_solid=step < self._scaled(self.cfg.hull_prior_warmup) if self.cfg.hull_prior_warmup > 0 else False,
            occupancy_every_cell=step < self._scaled(self.cfg.occupancy_warmup),
        )


def make_optimizer(model: NeuSModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with three groups: the encoding (lr), the MLPs (lr_mlp; lr for the mlp backend) and NeuS's
    variance (lr_variance)."""
    grid = model.grid_parameters()
    special = {id(p) for p in grid} | {id(model.variance)}
    rest = [p for p in model.parameters() if id(p) not in special]
    lr_rest = cfg.lr_mlp if grid else cfg.lr
    groups = [
        {"params": rest, "lr": lr_rest, "base_lr": lr_rest, "name": "mlp"},
        {"params": [model.variance], "lr": cfg.lr_variance, "base_lr": cfg.lr_variance, "name": "variance"},
    ]
    if grid:
        groups.append({"params": grid, "lr": cfg.lr, "base_lr": cfg.lr, "eps": 1e-15, "name": "encoding"})
    # the fused kernel is the same Adam, ~7x faster on a CPU over a 2^19-entry table (one pass, no
    # temporaries), and it takes the grad scaler's scale and inf check on the device (no host sync)
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)


# ------------------------------------------------------------------------------------------ losses
def loss_terms(
    out: dict, batch: dict[str, torch.Tensor], cfg: TrainConfig, eik_box: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The named loss terms (unweighted). Colour: NeuS's L1 summed over the channels and divided by the
    mask's pixel count (the whole batch without masks); mask: BCE of the opacity; eikonal over the
    rendered samples and the random box points together."""
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
    return {"color": color, "mask": mask_loss, "eikonal": eikonal, "curvature": out["curvature"]}


def total_loss(terms: dict[str, torch.Tensor], cfg: TrainConfig, v: StepValues) -> torch.Tensor:
    return (
        terms["color"]
        + (cfg.mask_weight * terms["mask"] if cfg.use_mask else 0.0)
        + cfg.eikonal_weight * terms["eikonal"]
        + v.curvature_weight * terms["curvature"]
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
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


# -------------------------------------------------------------------------------------- validation
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
    o, d, h, w = scene.image_rays(view, downscale)
    rgb, opacity, normal = [], [], []
    for oc, dc in zip(o.split(chunk), d.split(chunk)):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
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

    with torch.autocast(occupancy.base.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        seen = seen_cells(model, rays(), cfg, occupancy)
    seen = F.max_pool3d(seen.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
    keep = model.sdf_net.prior_keep
    keep.copy_((~seen).float())
    filled = float((~seen & occupancy.base).sum() / occupancy.base.sum().clamp(min=1))
    log.info("hull_fill_unseen: %.0f%% of the hull's cells lie where no training camera sees; they keep the hull's "
             "inside", 100 * filled)
    return filled


# ----------------------------------------------------------------------------- logging, checkpoints
class TrainLog:
    """train_log.csv (appended on resume), TensorBoard scalars where tensorboard is installed, and a log
    line per row when there is no terminal for the progress bar. ``row`` is the one place a step reads
    the device."""

    def __init__(self, out_dir: Path, resume: bool):
        self.path = out_dir / "train_log.csv"
        self.file = self.path.open("a" if resume else "w", newline="")
        self.csv = csv.writer(self.file)
        if not resume:
            self.csv.writerow(LOG_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # a stock PyTorch environment (a GPU node) has no tensorboard: the CSV suffices
            log.info("tensorboard is not installed: training scalars go to %s only", self.path)
            self.writer = None
        else:
            self.writer = SummaryWriter(str(out_dir / "tb"))

    def row(self, step: int, terms: dict, loss: torch.Tensor, out: dict, batch: dict, model: NeuSModel,
            n_rays: int, seconds: float) -> dict[str, float]:
        """Read this step's values (one device sync), check them, write the row; returns it."""
        watch = torch.stack([loss.detach(), terms["color"].detach(), terms["mask"].detach(),
                             terms["eikonal"].detach(), terms["curvature"].detach(), model.inv_s().detach()])
        finite = torch.isfinite(out["rgb"]).all() & torch.isfinite(out["opacity"]).all()
        values, ok = watch.float().tolist(), bool(finite) and all(math.isfinite(x) for x in watch.float().tolist())
        if not ok:
            return {"finite": False, "loss": values[0]}
        m = batch["mask"].bool()
        p = psnr(out["rgb"][m].detach(), batch["rgb"][m]) if bool(m.any()) else float("nan")
        row = dict(step=step, loss=values[0], color_loss=values[1], psnr=p, mask_loss=values[2], eikonal=values[3],
                   inv_s=values[5], n_rays=n_rays, samples=out["n_eval"], seconds=seconds, curvature=values[4])
        self.csv.writerow([row[c] for c in LOG_COLUMNS])
        self.file.flush()
        if self.writer is not None:
            for name in LOG_COLUMNS[1:9] + ["curvature"]:
                self.writer.add_scalar(f"train/{name}", row[name], step)
        return {"finite": True, **row}

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.file.close()


class _Stop:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and exits cleanly (SLURM preemption)."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _diverged(step: int, cfg: TrainConfig, what: str) -> StageError:
    return StageError(
        f"training diverged by step {step} ({what}); lower lr/lr_mlp (now {cfg.lr}/{cfg.lr_mlp}) or check the "
        "dataset's masks and cameras"
    )


# ---------------------------------------------------------------------------------------- training
def train(
    cfg: TrainConfig, dataset_dir: Path, out_dir: Path, *, hull_path: Path | None = None, bbox_path: Path | None = None
) -> dict:
    """Train NeuS on a NeuS-layout scene; writes checkpoint.pt, config.yaml, metrics.json, renders/,
    train_log.csv (and tb/ where tensorboard is installed). Every input is checked before the first step."""
    out_dir = Path(out_dir)
    device = pick_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type != "cuda" and cfg.encoding_backend == "tcnn":
        raise StageError("encoding_backend=tcnn needs a CUDA device; use encoding_backend=torch or auto")
    amp = autocast_dtype(cfg, device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    box_min, box_max, hull = training_box(hull_path, bbox_path)
    scene = NeusScene(
        dataset_dir,
        downscale=cfg.image_downscale,
        holdout_every=cfg.holdout_every,
        require_masks=cfg.use_mask,
        device=device,
    )
    scene.check_cameras(box_min, box_max)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, box_min, box_max, hull_prior(cfg, hull, box_min, box_max), device,
                        half=amp == torch.float16)
    occupancy = None
    if cfg.use_occupancy and cfg.sdf_backend == "hashgrid":
        occupancy = OccupancyGrid(
            model.box_min,
            model.box_max,
            initial_occupancy(hull, cfg.occupancy_resolution, device),
            step_size=float(np.linalg.norm(box_max - box_min)) / cfg.n_samples,
            threshold=cfg.occupancy_threshold,
            decay=cfg.occupancy_decay,
        )
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    chash = config_hash(cfg)
    resume_path = out_dir / "ckpt" / "last.pt"
    start, n_rays = resume_training(resume_path, chash, model=model, optimizer=opt, generator=gen, scaler=scaler,
                                    occupancy=occupancy, seed=cfg.seed, n_rays=cfg.n_rays)
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {**config_dict(cfg), "hash": chash, "dataset": str(dataset_dir), "device": str(device),
             "autocast": str(amp).replace("torch.", "") if amp else "fp32"},
            sort_keys=False,
        )
    )
    tlog = TrainLog(out_dir, resume=start > 0)
    sched = Schedule(cfg)

    def checkpoint_payload(step: int) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "generator": gen.get_state(),
            "occupancy": occupancy.state_dict() if occupancy is not None else None,
            "n_rays": n_rays,
            "prior_weight": getattr(model.sdf_net, "prior_weight", 1.0),
            "step": step,
            "hash": chash,
            "config": config_dict(cfg),
            "box_min": box_min,
            "box_max": box_max,
            "hull": hull,
            "scale_mat": scene.scale_mat,
        }

    # hull_prior=outside: whether the hull's inside has been dropped (after hull_prior_warmup)
    outside = getattr(model.sdf_net, "prior_keep", torch.ones(1)).shape[0] > 1
    dropped = outside and not bool((model.sdf_net.prior_keep > 0).any())
    t0 = time.time()
    total_samples = total_rays = 0
    step = done = start
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", mininterval=5.0, disable=None)
    with _Stop() as stop:
        for step in bar:
            if step >= sched.length:
                log.info("time budget of %.1f min: schedule fitted to %d steps", cfg.max_minutes, sched.length)
                break
            v = sched.update(step)
            model.sdf_net.set_active_levels(v.levels)
            model.sdf_net.prior_weight = v.prior_weight
            if outside and not v.prior_solid and not dropped:  # the warm-up is over: the hull's inside goes
                model.sdf_net.prior_keep.zero_()
                dropped = True
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * v.lr_factor
            if occupancy is not None and step % cfg.occupancy_every == 0:
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    occupancy.update(model, gen, every_cell=v.occupancy_every_cell)
            batch = scene.sample(n_rays, cfg.foreground_share, gen)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                out = render_rays(model, batch["rays_o"], batch["rays_d"], cfg, occupancy=occupancy,
                                  cos_anneal=v.cos_anneal, train=True, gen=gen)
                eik = eikonal_points(model, cfg.eikonal_points, cfg, gen) if cfg.eikonal_points > 0 else None
            n_eval = out["n_eval"]
            if n_eval == 0:  # every sample fell in empty cells: nothing to learn from
                log.warning("step %d: no samples in occupied cells; refreshing the occupancy grid", step)
                if occupancy is not None:
                    occupancy.grid = occupancy.base.clone()
                continue
            terms = loss_terms(out, batch, cfg, eik)
            loss = total_loss(terms, cfg, v)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total_samples += n_eval
            total_rays += n_rays
            if cfg.sample_budget > 0:
                n_rays = int(min(cfg.max_rays, max(64, n_rays * cfg.sample_budget / n_eval * 0.5 + n_rays * 0.5)))
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                row = tlog.row(step, terms, loss, out, batch, model, n_rays, time.time() - t0)
                if not row["finite"]:
                    raise _diverged(step, cfg, f"loss {row['loss']}, or the render holds NaN or inf")
                bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", inv_s=f"{row['inv_s']:.0f}",
                                rays=n_rays)
                if bar.disable:  # no terminal (a rule's log file): plain log lines instead of a bar
                    log.info("step %d loss %.4f psnr %.2f inv_s %.0f rays %d samples %d", step, row["loss"],
                             row["psnr"], row["inv_s"], n_rays, n_eval)
            done = step + 1
            if done % cfg.checkpoint_every == 0 or stop.signal is not None:
                save_checkpoint(resume_path, checkpoint_payload(done))
            if stop.signal is not None:
                tlog.close()
                raise StageError(
                    f"training stopped by signal {stop.signal} at step {done}; checkpoint "
                    f"{resume_path} is resumed automatically when the rule runs again"
                )
            if cfg.validate_every and done % cfg.validate_every == 0 and done < cfg.steps:
                metrics = validation(model, scene, cfg, occupancy, device, out_dir, f"step_{done:06d}", amp=amp)
                tlog.scalar("val/psnr", metrics["val_psnr"], done)
                log.info("validation at step %d: PSNR %.2f, mask IoU %.3f", done, metrics["val_psnr"],
                         metrics["val_mask_iou"])
            if cfg.max_minutes > 0 and done - start >= 20 and done % 20 == 0:
                sched.fit_time(done, start, time.time() - t0)
            if cfg.max_minutes > 0 and time.time() - t0 > cfg.max_minutes * 60:
                log.info("time limit of %.1f min reached at step %d", cfg.max_minutes, done)
                break
    step = done
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _diverged(step, cfg, "the network's parameters hold NaN or inf")
    if cfg.hull_fill_unseen and occupancy is not None and dropped:
        fill_unseen(model, scene, cfg, occupancy, amp)
    seconds = time.time() - t0
    metrics = validation(model, scene, cfg, occupancy, device, out_dir, "final", all_views=True, amp=amp)
    metrics.update(
        {
            "steps": step,
            "seconds": seconds,
            "samples_per_s": total_samples / max(seconds, 1e-9),
            "rays_per_s": total_rays / max(seconds, 1e-9),
            "ray_samples_per_s": total_rays * (cfg.n_samples + cfg.n_importance) / max(seconds, 1e-9),
            "inv_s": float(model.inv_s().detach()),
            "device": str(device),
            "autocast": str(amp).replace("torch.", "") if amp else "fp32",
            "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        }
    )
    tlog.scalar("val/psnr", metrics["val_psnr"], step)
    tlog.close()
    payload = checkpoint_payload(step)
    payload.pop("optimizer")
    payload["metrics"] = metrics
    save_checkpoint(out_dir / "checkpoint.pt", payload)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    resume_path.unlink(missing_ok=True)
    if "heldout_psnr" in metrics:
        log.info(
            "%d held-out views: mean PSNR %.2f, SSIM %.3f, mask IoU %.3f",
            len(metrics["heldout_views"]),
            metrics["heldout_psnr"],
            metrics["heldout_ssim"],
            metrics["heldout_mask_iou"],
        )
    log.info(
        "trained %d steps in %.0f s: val PSNR %.2f, mask IoU %.3f -> %s",
        step,
        seconds,
        metrics["val_psnr"],
        metrics["val_mask_iou"],
        out_dir / "checkpoint.pt",
    )
    return metrics
