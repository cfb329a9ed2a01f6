"""Mapping a reconstruction into a reference frame: a similarity fitted to matched camera centres."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .cameras import Similarity, camera_centers, fit_similarity, load_cameras_sphere
from .errors import StageError

log = logging.getLogger(__name__)


def reference_alignment(dataset_dir: Path, reference_cameras: Path) -> Similarity:
    """Similarity from the dataset's world frame to the reference cameras' world frame.

    Views are matched by their index in the sorted photo folder (meta.json), so photos that SfM dropped
    are simply left out of the fit.
    """
    dataset_dir = Path(dataset_dir)
    meta_path = dataset_dir / "meta.json"
    if not meta_path.is_file():
        raise StageError(f"{meta_path}: missing; re-run the dataset stage")
    meta = json.loads(meta_path.read_text())
    world_mats, _ = load_cameras_sphere(dataset_dir / "cameras_sphere.npz")
    ref_mats, _ = load_cameras_sphere(reference_cameras)
    pairs = [(i, v["photo_index"]) for i, v in enumerate(meta["views"]) if v.get("photo_index") is not None]
    pairs = [(i, j) for i, j in pairs if j < len(ref_mats)]
    if len(pairs) < 3:
        raise StageError(
            f"{reference_cameras}: fewer than 3 views match the dataset's photos; "
            "the reference cameras must list one camera per photo in sorted photo order"
        )
    src = camera_centers(world_mats[[i for i, _ in pairs]])
    dst = camera_centers(ref_mats[[j for _, j in pairs]])
    sim = fit_similarity(src, dst)
    spread = float(np.linalg.norm(dst - dst.mean(0), axis=1).mean())
    log.info(
        "alignment to %s: scale %.5g, rms %.4g (%.3f%% of the camera spread) over %d views",
        reference_cameras,
        sim.scale,
        sim.rms,
        100 * sim.rms / max(spread, 1e-12),
        len(pairs),
    )
    return sim
