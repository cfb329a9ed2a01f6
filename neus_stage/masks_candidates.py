"""The masks stage's candidates: rembg's masks (:mod:`neus_stage.masks_rembg`) and the masks seeded by the SfM
points (:mod:`neus_stage.segment`), alone (``geometry``) or starting from rembg's (``fused``), each checked
against the views' voting hull (:mod:`neus_stage.masks_check`) and scored; and the choice among them.

rembg is taken as it is (repaired) where its masks are consistent across views and split few SfM points between
object and background; else the best scored of the fused masks (where rembg's passed the multi-view check)
or of the geometry-seeded and the fused ones (where they did not), which were made consistent round by round
(hull <-> masks) and are not repaired.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import masks_rembg
from .errors import StageError
from .geometry.mask_hull import (
    HULL_OUTLIER_SHARE,
    convergence_point,
    hull_occupancy,
    hull_surface,
    hull_votes,
    object_region,
    project_surface,
    well_seen,
)
from .masks_check import (
    DEGENERATE_SHARE,
    MAX_BAD_SHARE,
    Consistency,
    MaskViews,
    agrees_with_points,
    check_consistency,
    degenerate,
    repair,
)
from .threads import map_views

if TYPE_CHECKING:
    from .segment import WorkImage

log = logging.getLogger(__name__)

# rembg is taken as it is (repaired) when its masks pass the check, with this median IoU with the hull and
# at least this share of the SfM points' observations agreed on (all inside or all outside the masks)
REMBG_TRUST = 0.9


def _degenerate_reason(masks: dict[str, np.ndarray], source: str) -> str | None:
    _, empty, full = degenerate(masks)
    n = len(masks)
    if len(empty) > MAX_BAD_SHARE * n:
        return f"{source} masks are empty (all background) in {len(empty)} of {n} views"
    if len(full) > MAX_BAD_SHARE * n:
        return f"{source} masks are all foreground in {len(full)} of {n} views"
    return None


def _score(check: Consistency, agreement: dict | None) -> float:
    """Consistency with the hull, weighted by the agreement with the SfM points' labels where there are some."""
    score = check.median_iou
    for key in ("object_seeds_inside", "background_seeds_outside"):
        if agreement and agreement.get(key) is not None:
            score *= agreement[key]
    return score


@dataclass
class Candidates:
    """Candidate masks by name (``rembg``, ``geometry``, ``fused``), their checks against the views' hull, their
    records for the report (``records``, report["candidates"]) and why some failed."""

    views: MaskViews | None
    region: tuple[np.ndarray, np.ndarray] | None
    records: dict
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    checks: dict[str, Consistency] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seeds: dict | None = None  # the SfM points' seeds per view, once the geometry-seeded masks are made
    rembg_trusted: bool = False  # rembg's masks good enough as they are (:meth:`rembg_good`, judged first)

    def evaluate(self, name: str) -> None:
        """Check candidate ``name`` (once) and record its score, against the seeds where there are some."""
        masks = self.masks[name]
        reason = _degenerate_reason(masks, name)
        if reason is None and self.views is not None:
            _, empty, full = degenerate(masks)
            if name not in self.checks:
                self.checks[name] = check_consistency(self.views, masks, empty + full, self.region)
            check = self.checks[name]
            reason = None if check.passed else check.failure()
            agreement = None
            if self.seeds is not None:
                from .segment import seed_agreement

                agreement = seed_agreement(masks, self.seeds)
            self.records[name] = {**check.summary(), "seeds": agreement, "score": round(_score(check, agreement), 4)}
        if reason is not None:
            self.failures[name] = reason
            self.records.setdefault(name, {})["failed"] = reason
            log.info("%s masks: %s", name, reason)

    def rembg_passed(self) -> bool:
        """Whether there are rembg masks and they passed their check (not degenerate, consistent across views)."""
        return "rembg" in self.masks and "rembg" not in self.failures

    def rembg_good(self) -> bool:
        """Whether rembg's masks are consistent across views and split few SfM points between object and
        background (the demo, the teapot): then the slower geometry-seeded masks are not needed."""
        if not self.rembg_passed():
            return False
        if self.views is None:
            return True
        return self.checks["rembg"].median_iou >= REMBG_TRUST and (
            not self.views.has_points or agrees_with_points(self.masks["rembg"], self.views, REMBG_TRUST)
        )


def _rembg_masks(model: str, threshold: float, images: dict[str, Path]) -> dict[str, np.ndarray]:
    session = masks_rembg.rembg_session(model)
    log.info("rembg %s on %d images", model, len(images))
    probs = masks_rembg.rembg_probabilities(session, images)
    return {s: p >= threshold * 255 for s, p in probs.items()}


def _silhouettes(cams, surface: np.ndarray, voxel: float, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The hull (its surface voxels' centres) projected into every view, at each view's image size."""
    names = list(cams.names)
    return dict(zip(names, map_views(lambda s: project_surface(cams, s, surface, voxel, shapes[s]), names)))


def _refined(
    views: MaskViews, pictures: dict[str, WorkImage], seeds: dict, priors: dict | None, name: str, rounds: int
) -> dict[str, np.ndarray]:
    """GrabCut masks from ``seeds`` and ``priors``, refined over ``rounds`` of hull <-> masks: the views' masks
    vote a loose hull, whose projection is the next round's probable object."""
    from .segment import segment_views

    cams = views.cams
    masks = segment_views(pictures, seeds, priors, desc=f"{name} masks")
    for r in range(rounds):
        voters = [s for s in cams.names if masks[s].mean() > DEGENERATE_SHARE]
        if len(voters) < 3:
            break
        lo, hi, _ = object_region(cams, masks, voters, views.points)
        seen, background, X, voxel = hull_votes(cams, masks, lo, hi, resolution=96, voters=voters)
        loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(voters))
        if not loose.any():
            break
        priors = _silhouettes(cams, hull_surface(loose, X), voxel, {s: m.shape for s, m in masks.items()})
        masks = segment_views(pictures, seeds, priors, desc=f"{name} masks, round {r + 2}")
    return masks


def _geometry_candidates(
    views: MaskViews,
    images: dict[str, Path],
    sizes: dict[str, tuple[int, int]],
    rembg_masks: dict[str, np.ndarray] | None,
    rembg_consistent: bool,
    rounds: int = 1,
) -> tuple[dict[str, dict[str, np.ndarray]], dict, dict]:
    """Masks seeded by the SfM points, each refined over ``rounds`` of hull <-> masks: fused ones (rembg's masks as
    GrabCut's probable object) where there are rembg masks, and geometry-seeded ones (no prior) where there
    are none or they failed the multi-view check; the seeds per view and the SfM points' labels.

    Consistent rembg masks are a sound start, and the fused masks then scored at least as well as the
    unprimed ones (50 rendered teapot photos at 2 MP: 0.896 vs 0.888; the demo: 1.40% vs 1.51% Chamfer;
    dtu_scan24, where rembg fails the check and both are made: 0.926 vs 0.925), so the second set (two GrabCut
    passes and a hull, 20 s of 80 on the 50 photos) is made only where rembg's cannot serve."""
    from .segment import classify_points, view_seeds, work_images

    centre = convergence_point(views.cams)
    if centre is None:
        centre = np.median(views.points, axis=0)
    labels = classify_points(views.cams, views.rec, sizes, centre)
    seeds = view_seeds(views, labels)
    # read once at GrabCut's working size (about 0.5 MB a view) for all candidates and rounds
    pictures = work_images({s: images[s] for s in views.names})
    starts: dict[str, dict[str, np.ndarray] | None] = {}
    if rembg_masks is None or not rembg_consistent:
        starts["geometry"] = None
    if rembg_masks is not None:
        starts["fused"] = {s: rembg_masks[s] for s in views.names}
    out = {name: _refined(views, pictures, seeds, priors, name, rounds) for name, priors in starts.items()}
    return out, seeds, labels.info


def judged_candidates(
    mode: str,
    model: str,
    threshold: float,
    images: dict[str, Path],
    sizes: dict[str, tuple[int, int]],
    views: MaskViews | None,
    region,
    report: dict,
    timings: dict,
) -> Candidates:
    """rembg's masks (modes auto, rembg) and, where those are not good enough, the geometry-seeded ones (modes
    auto, geometry), each checked against the views' hull."""
    cands = Candidates(views, region, report["candidates"])
    t = time.perf_counter()
    if mode in ("auto", "rembg"):
        report["model"] = model
        cands.masks["rembg"] = _rembg_masks(model, threshold, images)
    timings["rembg_s"] = round(time.perf_counter() - t, 2)
    if "rembg" in cands.masks:
        cands.evaluate("rembg")
    cands.rembg_trusted = cands.rembg_good()
    if views is not None and views.has_points and (mode == "geometry" or (mode == "auto" and not cands.rembg_trusted)):
        t = time.perf_counter()
        geo, cands.seeds, report["points"] = _geometry_candidates(
            views, images, sizes, cands.masks.get("rembg"), cands.rembg_passed()
        )
        timings["geometry_s"] = round(time.perf_counter() - t, 2)
        cands.masks.update(geo)
        for name in list(cands.masks):
            cands.evaluate(name)  # rembg again: now scored against the SfM points' labels too
    return cands


def _choose(cands: Candidates, mode: str, allowed: list[str]) -> tuple[str, str]:
    """The candidate to keep among ``allowed`` and why."""
    records = cands.records
    if cands.rembg_trusted and mode == "auto" and cands.seeds is None:
        chosen = "rembg"
    elif cands.views is None:
        chosen = allowed[0]
    else:
        chosen = max(allowed, key=lambda n: records[n]["score"])
    if chosen in cands.checks:
        iou = cands.checks[chosen].median_iou
        why = f"{chosen} masks, consistent across views (median IoU {iou:.3f} with the hull)"
    else:
        why = f"{chosen} masks (no cameras to check them against)"
    others = [f"{n}: {records[n].get('score', 'failed')}" for n in cands.masks if n != chosen]
    if others:
        why += f"; score {records[chosen]['score']} against " + ", ".join(others)
    return chosen, why


def _no_candidate(requested: str, failures: dict[str, str]) -> str:
    """Why mode ``auto`` goes on without masks; a StageError for an explicit mode."""
    if requested != "auto":
        raise StageError(
            f"masks mode '{requested}': {failures.get(requested) or next(iter(failures.values()))}; the masks do "
            "not outline one object seen from every photo: check the masks (overlay.jpg), or use masks mode "
            "auto (which goes on without masks) or give your own"
        )
    why = (
        "no masks are consistent across views ("
        + "; ".join(f"{n}: {r}" for n, r in failures.items())
        + ("); the scene is trained without masks (the background is modelled)")
    )
    log.warning("masks: %s", why)
    return why


def chosen_masks(
    cands: Candidates, mode: str, multiview: bool, report: dict
) -> tuple[dict[str, np.ndarray] | None, str, str, dict | None]:
    """The chosen candidate's masks (repaired where they are rembg's) or none: (masks, mode, why, consistency)."""
    allowed = [
        n
        for n in cands.masks
        if n not in cands.failures and (mode == "auto" or n == mode or (mode == "geometry" and n == "fused"))
    ]
    if not allowed:
        return None, "none", _no_candidate(mode, cands.failures), None
    chosen, why = _choose(cands, mode, allowed)
    report["chosen"] = chosen
    masks = cands.masks[chosen]
    _, empty, full = degenerate(masks)
    report["degenerate_views"] = sorted(empty + full)
    mode = "rembg" if chosen == "rembg" else "geometry"
    if cands.views is not None and multiview and chosen == "rembg":
        final, consistency = repair(cands.views, masks, cands.checks[chosen])
        return final, mode, why, consistency
    # geometry-seeded masks were made consistent round by round; repairing them only fattens them
    consistency = cands.checks[chosen].unadjusted(with_box=True) if chosen in cands.checks else None
    return masks, mode, why, consistency
