"""The step-dependent quantities of a run: learning-rate warm-up and cosine decay, the active hash-grid
levels, NeuS's cos annealing, the curvature weight, the hull prior's share, the occupancy warm-up; and
their compression to a time budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainConfig
from .encodings import grid_levels


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
        """Every step-dependent value at ``step``."""
        return StepValues(
            lr_factor=self.lr_factor(step),
            levels=self.levels(step),
            cos_anneal=self.cos_anneal(step),
            curvature_weight=self.curvature_weight(step),
            prior_weight=self.prior_weight(step),
            prior_solid=step < self._scaled(self.cfg.hull_prior_warmup) if self.cfg.hull_prior_warmup > 0 else False,
            occupancy_every_cell=step < self._scaled(self.cfg.occupancy_warmup),
        )
