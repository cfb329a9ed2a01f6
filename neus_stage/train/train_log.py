"""The training log: train_log.csv, TensorBoard scalars where tensorboard is installed, and plain log lines."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch

from .fields import NeuSModel
from .losses import psnr

log = logging.getLogger(__name__)

LOG_COLUMNS = [
    "step",
    "loss",
    "color_loss",
    "psnr",
    "mask_loss",
    "eikonal",
    "inv_s",
    "n_rays",
    "samples",
    "seconds",
    "curvature",
    "points",
    "free_space",
]


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

    def row(
        self,
        step: int,
        terms: dict,
        loss: torch.Tensor,
        out: dict,
        batch: dict,
        model: NeuSModel,
        n_rays: int,
        seconds: float,
    ) -> dict[str, float]:
        """Read this step's values (one device sync), check them, write the row; returns it."""
        watch = torch.stack(
            [
                loss.detach(),
                terms["color"].detach(),
                terms["mask"].detach(),
                terms["eikonal"].detach(),
                terms["curvature"].detach(),
                model.inv_s().detach(),
                terms["points"].detach(),
                terms["free_space"].detach(),
            ]
        )
        finite = torch.isfinite(out["rgb"]).all() & torch.isfinite(out["opacity"]).all()
        values, ok = watch.float().tolist(), bool(finite) and all(math.isfinite(x) for x in watch.float().tolist())
        if not ok:
            return {"finite": False, "loss": values[0]}
        m = batch["mask"].bool()
        p = psnr(out["rgb"][m].detach(), batch["rgb"][m]) if bool(m.any()) else float("nan")
        row = dict(
            step=step,
            loss=values[0],
            color_loss=values[1],
            psnr=p,
            mask_loss=values[2],
            eikonal=values[3],
            inv_s=values[5],
            n_rays=n_rays,
            samples=out["n_eval"],
            seconds=seconds,
            curvature=values[4],
            points=values[6],
            free_space=values[7],
        )
        self.csv.writerow([row[c] for c in LOG_COLUMNS])
        self.file.flush()
        if self.writer is not None:
            for name in LOG_COLUMNS[1:9] + ["curvature", "points", "free_space"]:
                self.writer.add_scalar(f"train/{name}", row[name], step)
        return {"finite": True, **row}

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.file.close()
