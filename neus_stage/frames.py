"""Frames: the dataset's upright world frame (and the similarity from the SfM frame stored in meta.json),
and mapping a reconstruction into a reference frame by a similarity fitted to matched camera centres."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .artifacts.dataset import read_cameras_sphere, read_meta
from .errors import StageError
from .geometry.cameras import CameraSet, Similarity, camera_centers, fit_similarity

log = logging.getLogger(__name__)


def similarity_from_json(d: dict) -> Similarity:
    """A :class:`Similarity` from its ``to_json`` form (``matrix`` = scale * R | t)."""
    m = np.asarray(d["matrix"], dtype=np.float64)
    s = float(d.get("scale") or np.cbrt(np.linalg.det(m[:3, :3])))
    return Similarity(s, m[:3, :3] / s, m[:3, 3], float(d.get("rms", 0.0)))


def sfm_to_world(dataset_dir: Path) -> Similarity:
    """The similarity from the SfM model's frame to the dataset's world frame (``meta.json`` ``frame``
    ``from_sfm``); the identity for a dataset whose world is the SfM frame (written before the upright
    frame existed). Points read from ``sfm/`` after the dataset stage go through it."""
    meta = read_meta(dataset_dir)
    frame = meta.get("frame") or {}
    if "from_sfm" not in frame:
        return Similarity(1.0, np.eye(3), np.zeros(3), 0.0)
    return similarity_from_json(frame["from_sfm"])


def transform_camera_set(cams: CameraSet, sim: Similarity) -> CameraSet:
    """The same cameras in the frame ``x' = sim.apply(x)``: centres mapped, orientations turned by sim.R."""
    R = np.einsum("nij,kj->nik", cams.R, sim.R)  # world' -> camera = R_c R_sim^T
    centres = sim.apply(cams.centers)
    t = -np.einsum("nij,nj->ni", R, centres)
    return CameraSet(list(cams.names), cams.K.copy(), R, t, cams.width, cams.height)


def reference_alignment(dataset_dir: Path, reference_cameras: Path) -> Similarity:
    """Similarity from the dataset's world frame to the reference cameras' world frame.

    Views are matched by their index in the sorted photo folder (meta.json), so photos that SfM dropped
    are simply left out of the fit.
    """
    dataset_dir = Path(dataset_dir)
    meta = read_meta(dataset_dir)
    world_mats, _ = read_cameras_sphere(dataset_dir / "cameras_sphere.npz")
    ref_mats, _ = read_cameras_sphere(reference_cameras)
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


def refine_with_icp(
    mesh_path: Path,
    gt_path: Path,
    start: Similarity,
    *,
    max_distance_share: float = 0.02,
    n_points: int = 50_000,
    seed: int = 0,
) -> Similarity:
    """Refine ``start`` (mesh -> reference frame) by ICP with scaling against the ground truth.

    Camera-centre fits leave the small pose and focal-length errors of SfM in the alignment; ICP removes
    the part of them that a similarity can. Only pairs closer than ``max_distance_share`` of the GT box
    diagonal take part, so missing or extra geometry does not drag the fit.
    """
    import open3d as o3d
    import trimesh

    from .artifacts.meshes import read_geometry

    rng = np.random.default_rng(seed)

    def points(path: Path, what: str) -> np.ndarray:
        V, F = read_geometry(path, what)
        if len(F):
            mesh = trimesh.Trimesh(vertices=V, faces=F, process=False)
            return np.asarray(trimesh.sample.sample_surface(mesh, n_points, seed=seed)[0])
        return V[rng.choice(len(V), min(n_points, len(V)), replace=False)]

    src, dst = start.apply(points(mesh_path, "mesh")), points(gt_path, "ground truth")
    diag = float(np.linalg.norm(dst.max(0) - dst.min(0)))
    pcs, pcd = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    pcs.points = o3d.utility.Vector3dVector(src)
    pcd.points = o3d.utility.Vector3dVector(dst)
    est = o3d.pipelines.registration.TransformationEstimationPointToPoint(with_scaling=True)
    result = o3d.pipelines.registration.registration_icp(
        pcs,
        pcd,
        max_distance_share * diag,
        np.eye(4),
        est,
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=60),
    )
    T = np.asarray(result.transformation)
    scale = float(np.cbrt(np.linalg.det(T[:3, :3])))
    icp = Similarity(
        scale,
        T[:3, :3] / scale,
        T[:3, 3],
        start.rms,
        {
            "icp": {
                "fitness": float(result.fitness),
                "inlier_rmse": float(result.inlier_rmse),
                "max_distance": max_distance_share * diag,
                "scale": scale,
                "rotation_deg": float(np.degrees(np.arccos(np.clip((np.trace(T[:3, :3] / scale) - 1) / 2, -1, 1)))),
                "translation": float(np.linalg.norm(T[:3, 3])),
            }
        },
    )
    log.info(
        "ICP refinement: fitness %.3f, inlier rmse %.4g, scale %.4f, rotation %.3f deg",
        result.fitness,
        result.inlier_rmse,
        scale,
        icp.details["icp"]["rotation_deg"],
    )
    return start.then(icp)
