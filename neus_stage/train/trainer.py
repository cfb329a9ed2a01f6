"""The training loop: schedule, step, periodic logging, checkpoints and validation, and the end of a run.

A step draws rays on the training device, renders them (under autocast where ``precision`` asks for it:
only the hash encoding computes in reduced precision), adds the named loss terms and steps the
optimiser. Nothing in a step reads the device back except the sample count of the occupancy-skipped
rays (the size of a boolean selection); losses, PSNR and the finiteness check are read every
``log_every`` steps. The set-up is in prepare.py, the schedules in schedule.py, the losses in losses.py,
validation in validation.py, the CSV and TensorBoard log in train_log.py.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import StageError
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .fields import reduced_precision
from .losses import loss_terms, total_loss
from .prepare import TrainingRun, precision_name, prepare_run
from .renderer import eikonal_points, render_rays
from .scene_points import point_sdf
from .schedule import StepValues
from .validation import fill_unseen, validation

log = logging.getLogger(__name__)


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
    run = prepare_run(cfg, dataset_dir, Path(out_dir), hull_path, bbox_path)
    steps = run_steps(run)
    return finish(run, steps)


def run_steps(run: TrainingRun) -> int:
    """The loop from the resumed step to cfg.steps (or the time budget, or a signal); returns the steps done."""
    cfg, done = run.cfg, run.start
    bar = tqdm(
        range(run.start, cfg.steps), initial=run.start, total=cfg.steps, desc="train", mininterval=5.0, disable=None
    )
    with _Stop() as stop:
        for step in bar:
            if step >= run.sched.length:
                log.info("time budget of %.1f min: schedule fitted to %d steps", cfg.max_minutes, run.sched.length)
                break
            stepped = train_step(run, step, apply_schedule(run, step))
            if stepped is None:
                continue
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log_step(run, bar, step, *stepped)
            done = step + 1
            checkpoint_and_validate(run, stop, done)
            if out_of_time(run, done):
                break
    return done


def apply_schedule(run: TrainingRun, step: int) -> StepValues:
    """This step's schedule values, set on the model (levels, the hull prior's share) and the optimiser."""
    v = run.sched.update(step)
    sdf_net = run.model.sdf_net
    sdf_net.set_active_levels(v.levels)
    sdf_net.prior_weight = v.prior_weight
    if run.outside and not v.prior_solid and not run.dropped:  # the warm-up is over: the hull's inside goes
        sdf_net.prior_keep.zero_()
        run.dropped = True
    for g in run.opt.param_groups:
        g["lr"] = g["base_lr"] * v.lr_factor
    return v


def train_step(run: TrainingRun, step: int, v: StepValues) -> tuple[dict, dict, dict, torch.Tensor] | None:
    """One optimiser step on a fresh batch (and the occupancy update when due): the render, the batch, the loss
    terms and the loss; None where every sample fell in empty cells. Adapts the ray count to sample_budget."""
    cfg, occupancy = run.cfg, run.occupancy
    if occupancy is not None and step % cfg.occupancy_every == 0:
        with reduced_precision(run.device.type, run.amp):
            occupancy.update(run.model, run.gen, every_cell=v.occupancy_every_cell)
    batch = run.scene.sample(run.n_rays, cfg.foreground_share, run.gen)
    with reduced_precision(run.device.type, run.amp):
        out = render_rays(
            run.model,
            batch["rays_o"],
            batch["rays_d"],
            cfg,
            occupancy=occupancy,
            cos_anneal=v.cos_anneal,
            train=True,
            gen=run.gen,
        )
        eik = eikonal_points(run.model, cfg.eikonal_points, cfg, run.gen) if cfg.eikonal_points > 0 else None
        at_points = point_sdf(run.model, run.points, cfg.point_batch, run.gen)
    n_eval = out["n_eval"]
    if n_eval == 0:  # every sample fell in empty cells: nothing to learn from
        log.warning("step %d: no samples in occupied cells; refreshing the occupancy grid", step)
        if occupancy is not None:
            occupancy.grid = occupancy.base.clone()
        return None
    terms = loss_terms(out, batch, cfg, eik, at_points)
    loss = total_loss(terms, cfg, v)
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.opt)
    run.scaler.update()
    run.total_samples += n_eval
    run.total_rays += run.n_rays
    if cfg.sample_budget > 0:
        n_rays = run.n_rays
        run.n_rays = int(min(cfg.max_rays, max(64, n_rays * cfg.sample_budget / n_eval * 0.5 + n_rays * 0.5)))
    return out, batch, terms, loss


def log_step(run: TrainingRun, bar: tqdm, step: int, out: dict, batch: dict, terms: dict, loss: torch.Tensor) -> None:
    """The log row of this step (the one device read), the divergence check, the progress bar or a log line."""
    row = run.tlog.row(step, terms, loss, out, batch, run.model, run.n_rays, time.time() - run.t0)
    if not row["finite"]:
        raise _diverged(step, run.cfg, f"loss {row['loss']}, or the render holds NaN or inf")
    bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", inv_s=f"{row['inv_s']:.0f}", rays=run.n_rays)
    if bar.disable:  # no terminal (a rule's log file): plain log lines instead of a bar
        log.info(
            "step %d loss %.4f psnr %.2f inv_s %.0f rays %d samples %d",
            step,
            row["loss"],
            row["psnr"],
            row["inv_s"],
            run.n_rays,
            out["n_eval"],
        )


def checkpoint_and_validate(run: TrainingRun, stop: _Stop, done: int) -> None:
    """After ``done`` steps: ckpt/last.pt every checkpoint_every steps or on a signal (then stop with a
    StageError), a validation render every validate_every steps."""
    cfg = run.cfg
    if done % cfg.checkpoint_every == 0 or stop.signal is not None:
        save_checkpoint(run.resume_path, run.checkpoint_payload(done))
    if stop.signal is not None:
        run.tlog.close()
        raise StageError(
            f"training stopped by signal {stop.signal} at step {done}; checkpoint "
            f"{run.resume_path} is resumed automatically when the rule runs again"
        )
    if cfg.validate_every and done % cfg.validate_every == 0 and done < cfg.steps:
        metrics = validation(
            run.model, run.scene, cfg, run.occupancy, run.device, run.out_dir, f"step_{done:06d}", amp=run.amp
        )
        run.tlog.scalar("val/psnr", metrics["val_psnr"], done)
        log.info("validation at step %d: PSNR %.2f, mask IoU %.3f", done, metrics["val_psnr"], metrics["val_mask_iou"])


def out_of_time(run: TrainingRun, done: int) -> bool:
    """With max_minutes: refit the schedule to the budget every 20 steps; whether the time is up."""
    cfg = run.cfg
    if cfg.max_minutes > 0 and done - run.start >= 20 and done % 20 == 0:
        run.sched.fit_time(done, run.start, time.time() - run.t0)
    if cfg.max_minutes > 0 and time.time() - run.t0 > cfg.max_minutes * 60:
        log.info("time limit of %.1f min reached at step %d", cfg.max_minutes, done)
        return True
    return False


# ------------------------------------------------------------------------------------------ the end
def finish(run: TrainingRun, step: int) -> dict:
    """After the last step: the finiteness check, hull_fill_unseen, the final validation over every held-out
    view, checkpoint.pt and metrics.json (ckpt/last.pt removed); returns the metrics."""
    model, cfg = run.model, run.cfg
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _diverged(step, cfg, "the network's parameters hold NaN or inf")
    if cfg.hull_fill_unseen and run.occupancy is not None and run.dropped:
        fill_unseen(model, run.scene, cfg, run.occupancy, run.amp)
    seconds = time.time() - run.t0
    metrics = validation(
        model, run.scene, cfg, run.occupancy, run.device, run.out_dir, "final", all_views=True, amp=run.amp
    )
    metrics.update(run_metrics(run, step, seconds))
    run.tlog.scalar("val/psnr", metrics["val_psnr"], step)
    run.tlog.close()
    payload = run.checkpoint_payload(step)
    payload.pop("optimizer")
    payload["metrics"] = metrics
    save_checkpoint(run.out_dir / "checkpoint.pt", payload)
    (run.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run.resume_path.unlink(missing_ok=True)
    log_summary(metrics, step, seconds, run.out_dir / "checkpoint.pt")
    return metrics


def run_metrics(run: TrainingRun, step: int, seconds: float) -> dict:
    """The run's steps, time, throughput, final inv_s, device, precision and peak GPU memory."""
    cfg, device = run.cfg, run.device
    return {
        "steps": step,
        "seconds": seconds,
        "samples_per_s": run.total_samples / max(seconds, 1e-9),
        "rays_per_s": run.total_rays / max(seconds, 1e-9),
        "ray_samples_per_s": run.total_rays * (cfg.n_samples + cfg.n_importance) / max(seconds, 1e-9),
        "inv_s": float(run.model.inv_s().detach()),
        "device": str(device),
        "autocast": precision_name(run.amp),
        "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }


def log_summary(metrics: dict, step: int, seconds: float, checkpoint: Path) -> None:
    """The held-out means (where there are held-out views) and the final validation, as log lines."""
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
        checkpoint,
    )
