"""An SfM model's poses against reference cameras (a NeuS ``cameras_sphere.npz``): the diagnostic of how well
the sfm stage posed a scene whose calibration is known (tests/test_sfm.py, scripts/scene_check.py).

The reference frame comparison of a finished dataset (its alignment to reference cameras) is
:func:`neus_stage.frames.reference_alignment`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts.dataset import read_cameras_sphere
from .geometry.cameras import camera_centers, decompose_projection, fit_similarity, rotation_angle_deg


def _model_poses(sparse_dir: Path, stems: list[str]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The posed images of the COLMAP model in ``sparse_dir``: their index in ``stems``, their world->camera
    rotations (N,3,3) and their centres (N,3)."""
    import pycolmap

    rec = pycolmap.Reconstruction(Path(sparse_dir))
    index = {s: i for i, s in enumerate(stems)}
    views, rotations, centres = [], [], []
    for im in rec.images.values():
        if not im.has_pose:
            continue
        views.append(index[Path(im.name).stem])
        rotations.append(im.cam_from_world().rotation.matrix())
        centres.append(im.projection_center())
    return views, np.array(rotations), np.array(centres)


def pose_accuracy(sparse_dir: Path, reference_npz: Path, stems: list[str], object_radius: float | None = None) -> dict:
    """Compare a model's poses with reference cameras (NeuS ``cameras_sphere.npz``, view i = ``stems[i]``).

    A similarity is fitted from the model's camera centres to the reference centres (matched by stem);
    returns mean / max rotation error (deg) and centre error (reference units, and % of ``object_radius``,
    by default the scale_mat radius), plus the registered intrinsics next to the reference ones.
    """
    world_mats, scale_mat = read_cameras_sphere(reference_npz, n_views=len(stems))
    radius = float(object_radius if object_radius is not None else scale_mat[0, 0])
    views, src_R, src_c = _model_poses(sparse_dir, stems)
    dst_c = camera_centers(world_mats)[views]
    dst_R = np.array([decompose_projection(world_mats[i][:3, :4])[1][:3, :3].T for i in views])
    sim = fit_similarity(src_c, dst_c)
    rot = rotation_angle_deg(src_R @ sim.R.T, dst_R)
    cerr = np.linalg.norm(sim.apply(src_c) - dst_c, axis=1)
    K_ref = decompose_projection(world_mats[0][:3, :4])[0]
    return {
        "n": len(views),
        "rotation_error_deg_mean": float(rot.mean()),
        "rotation_error_deg_max": float(rot.max()),
        "centre_error_mean": float(cerr.mean()),
        "centre_error_pct_radius_mean": float(100 * cerr.mean() / radius),
        "centre_error_pct_radius_max": float(100 * cerr.max() / radius),
        "similarity_scale": sim.scale,
        "reference_fx_fy_cx_cy": [K_ref[0, 0], K_ref[1, 1], K_ref[0, 2], K_ref[1, 2]],
    }
