"""How a scene went through the photo pipeline, against its reference calibration and masks.

    .venv/bin/python scripts/scene_check.py results/dtu24 \\
        --reference-cameras ../shared/data/dtu_scan24/reference/cameras_sphere.npz \\
        --reference-masks ../shared/data/dtu_scan24/reference/mask

Prints one table row: registered photos, mean rotation error (deg) and camera-centre error (% of the
reference object radius) of the SfM poses, the masks' mode and their IoU against the reference masks (both
undistorted like the photos), and the mesh's silhouette IoU against the reference masks: the cleaned mesh
mapped into the reference frame (the camera-centre similarity) and ray cast in every reference camera at
``--scale`` of the photo size. ``--json`` keeps the row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def mask_iou(scene: Path, reference_masks: Path) -> tuple[float | None, float | None]:
    from neus_stage.geometry.mask_hull import iou
    from neus_stage.masks_user import undistorter

    undistort = undistorter(scene / "sfm")[1]
    ious = []
    for p in sorted((scene / "masks").glob("*.png")):
        ref = undistort(np.asarray(Image.open(reference_masks / p.name).convert("L")) >= 128)
        ious.append(iou(np.asarray(Image.open(p)) >= 128, ref))
    return (float(np.mean(ious)), float(np.min(ious))) if ious else (None, None)


def silhouette_iou(
    mesh_path: Path, dataset: Path, reference_cameras: Path, reference_masks: Path, scale: float
) -> tuple[float, float]:
    """Mean and worst IoU of the mesh's silhouettes (ray cast with open3d) and the reference masks."""
    import open3d as o3d
    import trimesh

    from neus_stage.artifacts.dataset import read_cameras_sphere
    from neus_stage.frames import reference_alignment
    from neus_stage.geometry.cameras import decompose_projection

    sim = reference_alignment(dataset, reference_cameras)
    mesh = trimesh.load(mesh_path, process=False)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(sim.apply(np.asarray(mesh.vertices)).astype(np.float32)),
        o3d.core.Tensor(np.asarray(mesh.faces).astype(np.uint32)),
    )
    world_mats, _ = read_cameras_sphere(reference_cameras)
    masks = sorted(reference_masks.glob("*.png"))
    ious = []
    for wm, mpath in zip(world_mats, masks, strict=True):
        ref = np.asarray(Image.open(mpath).convert("L"))
        h, w = ref.shape
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        K, pose = decompose_projection(wm[:3, :4])
        ys, xs = np.mgrid[0:sh, 0:sw]
        pix = np.stack([(xs + 0.5) / scale - 0.5, (ys + 0.5) / scale - 0.5, np.ones_like(xs, float)], -1)
        d = pix.reshape(-1, 3) @ np.linalg.inv(K).T @ pose[:3, :3].T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        rays = np.concatenate([np.broadcast_to(pose[:3, 3], d.shape), d], 1).astype(np.float32)
        hit = np.isfinite(scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()).reshape(sh, sw)
        small = np.asarray(Image.fromarray(ref).resize((sw, sh), Image.Resampling.BILINEAR)) >= 128
        union = (hit | small).sum()
        ious.append(float((hit & small).sum() / union) if union else 1.0)
    return float(np.mean(ious)), float(np.min(ious))


def check(scene: Path, reference_cameras: Path, reference_masks: Path, scale: float = 0.25) -> dict:
    from neus_stage.reference_poses import pose_accuracy

    sfm = json.loads((scene / "sfm" / "report.json").read_text())
    stems = [Path(p).stem for p in sfm["photos"]]
    poses = pose_accuracy(scene / "sfm" / "undistorted" / "sparse", reference_cameras, stems)
    masks = json.loads((scene / "masks" / "report.json").read_text())
    row = {
        "scene": scene.name,
        "registered": f"{sfm['n_registered']}/{sfm['n_photos']}",
        "rotation_err_deg": round(poses["rotation_error_deg_mean"], 3),
        "centre_err_pct_radius": round(poses["centre_error_pct_radius_mean"], 3),
        "masks_mode": masks.get("chosen") or masks.get("mode"),
    }
    mean, worst = mask_iou(scene, reference_masks)
    row.update(
        mask_iou_mean=None if mean is None else round(mean, 4), mask_iou_min=None if worst is None else round(worst, 4)
    )
    mesh = scene / "mesh_clean.ply"
    if mesh.is_file():
        smean, sworst = silhouette_iou(mesh, scene / "dataset", reference_cameras, reference_masks, scale)
        row.update(silhouette_iou_mean=round(smean, 4), silhouette_iou_min=round(sworst, 4))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path, help="results/<scene> of a run with poses sfm")
    ap.add_argument("--reference-cameras", type=Path, required=True)
    ap.add_argument("--reference-masks", type=Path, required=True, help="folder of <photo stem>.png")
    ap.add_argument("--scale", type=float, default=0.25, help="size of the silhouette renders (share of the photo)")
    ap.add_argument("--json", type=Path, default=None, help="also write the row here")
    a = ap.parse_args()
    row = check(a.scene, a.reference_cameras, a.reference_masks, a.scale)
    print(" | ".join(f"{k} {v}" for k, v in row.items()))
    if a.json:
        a.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
