"""The support plane of the visual-hull stage (:mod:`neus_stage.hull`) and bbox.json's record of it.

The plane is searched (:func:`neus_stage.geometry.support.find_support`) in the SfM model's points or, for
reference cameras, in points triangulated with the dataset's cameras held fixed; each qualifying plane, the
largest first, is then checked against the silhouettes (:func:`neus_stage.geometry.silhouette.lowest_safe_cut`:
cutting there may take nothing from any view's mask, lowering it below a base plate where needed) until one
passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import StageError
from .geometry.cameras import decompose_projection
from .geometry.silhouette import lowest_safe_cut
from .geometry.support import SupportPlane, SupportSearch, find_support

MAX_SILHOUETTE_LOSS = 0.005
"""A cut may take at most this share of a view's silhouette, and no region deeper than 1.5 pixels (what the
voxels' splatting leaves is boundary noise of about a pixel), in every view but the max_background_votes that may
dispute it, as they may dispute a hull voxel."""
MAX_LOWERING = 0.05
"""A support plane may be lowered (to below a base plate) by at most this share of the object's height."""


@dataclass
class Silhouettes:
    """What a cut is checked against, in the normalised frame: the views' projections (N,3,4), their masks
    (N,H,W) and the uncut fine hull (its occupancy grid and box)."""

    projections: np.ndarray
    masks: np.ndarray
    occupancy: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray


@dataclass
class _Cut:
    """The last plane checked against the silhouettes: in the world and the normalised frame, its margin (the
    fitted plane's own uncertainty) and how far it must be lowered (None: every lowering cuts them)."""

    world: SupportPlane
    normalized: SupportPlane
    margin: float
    lowering: float | None


def _camera_frames(world_mats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres (N,3) and up vectors (N,3, minus the camera y axis) in the world frame."""
    poses = np.stack([decompose_projection(wm[:3, :4])[1] for wm in world_mats])
    return poses[:, :3, 3], -poses[:, :3, 1]


def support_points(
    dataset_dir: Path, stems: list[str], world_mats: np.ndarray, sparse_dir: Path | None
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """World points to find the support plane in: the SfM model's (``sparse_dir``, mapped from the SfM frame
    into the dataset's world by meta.json's similarity; with which of the views ``stems`` observe each, (N, V)
    bool) or, for reference cameras, points triangulated from the dataset's images with its cameras held
    fixed (no views)."""
    if sparse_dir is not None:
        from .artifacts.sfm import read_sfm_points
        from .frames import sfm_to_world

        sparse_dir = Path(sparse_dir)
        if not sparse_dir.is_dir():
            raise StageError(f"{sparse_dir}: SfM model not found; run the sfm stage or leave out --sparse")
        sfm = read_sfm_points(sparse_dir)
        pts = sfm_to_world(dataset_dir).apply(sfm.xyz)
        index = {s: i for i, s in enumerate(stems)}
        views = np.zeros((len(pts), len(stems)), dtype=bool)
        for i, observing in enumerate(sfm.views):
            views[i, [index[s] for s in observing if s in index]] = True
        return pts, views, {"kind": "sfm points", "path": str(sparse_dir), "points": int(len(pts))}
    from .triangulate import triangulate_known_cameras

    pts, stats = triangulate_known_cameras(Path(dataset_dir) / "image", [f"{s}.png" for s in stems], world_mats)
    return (
        pts,
        None,
        {
            "kind": "triangulated with the dataset's cameras held fixed",
            "path": str(Path(dataset_dir) / "image"),
            "points": int(len(pts)),
            **stats,
        },
    )


def _search(
    dataset_dir: Path, stems: list[str], world_mats: np.ndarray, sparse_dir: Path | None, rec: dict, points_out: dict
) -> SupportSearch | None:
    """The support search in the scene's points, or None where there are none (plain photos, a failed
    triangulation: the run goes on). ``rec`` receives the points' source and the search, ``points_out`` the
    points and the found plane's inliers."""
    try:
        pts, views, source = support_points(dataset_dir, stems, world_mats, sparse_dir)
    except StageError as exc:
        rec.update(reason="no points", message=f"no points to find a support plane in: {exc}")
        return None
    rec["source"] = source
    centres, ups = _camera_frames(world_mats)
    search = find_support(pts, centres, ups)
    points_out["support_points"] = pts.astype(np.float32)
    if views is not None:
        points_out["support_views"] = views
    points_out["support_inliers"] = search.plane.inliers if search.plane is not None else np.zeros(len(pts), dtype=bool)
    rec["search"] = search.to_json()
    rec.update(reason=search.reason, message=search.message)
    return search


def _trial_record(trial: dict, r: float, stems: list[str]) -> dict:
    """One lowering tried, for bbox.json: its views by name, the lowering also in world units (``r``)."""
    return {
        **trial,
        "lowering_world": trial["lowering"] * r,
        "worst_view": None if trial["worst_view"] is None else stems[trial["worst_view"]],
        "dissenting_views": [stems[v] for v in trial.get("dissenting_views", [])],
    }


def _check_cuts(
    search: SupportSearch, scale_mat: np.ndarray, stems: list[str], sil: Silhouettes, dissenting_views: int
) -> tuple[list[dict], _Cut]:
    """The qualifying planes checked against the silhouettes, the largest first, until one may cut (where
    one cuts them, a box's top, the next one): each attempt's record and the last plane tried."""
    to_norm = np.linalg.inv(scale_mat)
    r = float(scale_mat[0, 0])
    attempts = []
    for plane_w in [search.plane, *search.alternatives]:
        plane_n = plane_w.transformed(to_norm)
        n_inl = max(int(plane_w.inliers.sum()), 1)
        margin = 3.0 * plane_n.rms / np.sqrt(n_inl)  # the fitted plane's own uncertainty
        lowering, trials = lowest_safe_cut(
            sil.projections,
            sil.masks,
            sil.occupancy,
            sil.box_min,
            sil.box_max,
            plane_n,
            margin,
            max_loss=MAX_SILHOUETTE_LOSS,
            max_lowering=MAX_LOWERING,
            dissenting_views=dissenting_views,
        )
        attempts.append(
            {
                "plane_world": plane_w.to_json(),
                "accepted": lowering is not None,
                "trials": [_trial_record(t, r, stems) for t in trials],
            }
        )
        if lowering is not None:
            break
    return attempts, _Cut(plane_w, plane_n, margin, lowering)


def _cuts_message(search: SupportSearch, attempts: list[dict]) -> str:
    """Why no plane found may bound the hull: what the largest one takes from the worst view's mask."""
    worst = attempts[0]["trials"][-1]
    return (
        f"the plane found ({search.message}) cuts through the object's silhouettes: cut there "
        f"(or up to {MAX_LOWERING:.0%} of the object's height lower) it takes "
        f"{worst['worst_loss']:.1%} of view {worst['worst_view']}'s mask, a region "
        f"{worst['worst_depth_px']:.0f} px deep"
        + (f"; so do the {len(attempts) - 1} other plane(s) found" if len(attempts) > 1 else "")
    )


def _lowered(cut: _Cut, scale_mat: np.ndarray, rec: dict) -> SupportPlane:
    """The accepted plane lowered to where the silhouettes begin (normalised frame), recorded in ``rec``."""
    r = float(scale_mat[0, 0])
    lowering = cut.lowering
    used = replace(cut.normalized, offset=cut.normalized.offset + lowering)
    rec["lowered_by"] = {"normalized": lowering, "world": lowering * r}
    rec["margin"] = {"normalized": cut.margin, "world": cut.margin * r}
    rec["plane"] = {"normalized": used.to_json(), "world": used.transformed(scale_mat).to_json()}
    if lowering > 0:
        rec["message"] += (
            f"; lowered by {lowering * r:.3g} world units to where the object's silhouettes begin "
            "(a base plate's thickness)"
        )
    return used


def find_cut_plane(
    dataset_dir: Path,
    stems: list[str],
    world_mats: np.ndarray,
    scale_mat: np.ndarray,
    sil: Silhouettes,
    sparse_dir: Path | None,
    points_out: dict,
    dissenting_views: int = 0,
) -> tuple[SupportPlane | None, dict]:
    """The support plane in the normalised frame (lowered below a base plate where needed) that cuts no
    silhouette, or None; and the record for bbox.json. ``points_out`` receives the points searched and the
    found plane's inliers (for the report's figure)."""
    rec: dict = {}
    search = _search(dataset_dir, stems, world_mats, sparse_dir, rec, points_out)
    if search is None or search.plane is None:
        return None, rec
    attempts, cut = _check_cuts(search, scale_mat, stems, sil, dissenting_views)
    rec["silhouette_check"] = {
        "max_loss": MAX_SILHOUETTE_LOSS,
        "max_depth_px": 1.5,
        "max_lowering_share": MAX_LOWERING,
        "dissenting_views": dissenting_views,
        "attempts": attempts,
    }
    rec["plane_found"] = {"world": cut.world.to_json(), "normalized": cut.normalized.to_json()}
    if cut.lowering is None:
        rec.update(reason="cuts the silhouettes", message=_cuts_message(search, attempts))
        return None, rec
    if len(attempts) > 1:
        points_out["support_inliers"] = cut.world.inliers
        rec["message"] = (
            f"support plane through {int(cut.world.inliers.sum())} points ({cut.world.inlier_share:.0%}), "
            f"rms {cut.world.rms:.3g}, the {len(attempts)}. plane found (the larger ones cut the "
            "object's silhouettes)"
        )
    return _lowered(cut, scale_mat, rec), rec


__all__ = ["MAX_LOWERING", "MAX_SILHOUETTE_LOSS", "Silhouettes", "find_cut_plane", "support_points"]
