"""The sfm stage's undistorted model (``sfm/undistorted/sparse``) read as the package's one camera type.

The model itself is COLMAP's format and COLMAP (pycolmap) writes it; this module is the one place that
reads cameras (:func:`read_sfm_cameras`) and points (:func:`read_sfm_points`) from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..geometry.cameras import CameraSet


def read_sfm_cameras(sfm_dir: Path) -> tuple[CameraSet, object]:
    """Pinhole cameras of the registered, undistorted views of the sfm stage's ``undistorted/sparse`` model,
    sorted by stem (NeuS pixel convention), and the model itself (its points)."""
    import pycolmap

    model_dir = Path(sfm_dir) / "undistorted" / "sparse"
    if not model_dir.is_dir():
        raise StageError(f"{model_dir}: undistorted SfM model not found; run the sfm stage first")
    rec = pycolmap.Reconstruction(str(model_dir))
    images = sorted(rec.images.values(), key=lambda im: Path(im.name).stem)
    Ks, Rs, ts, names, sizes = [], [], [], [], set()
    for im in images:
        cam = rec.cameras[im.camera_id]
        fx, fy, cx, cy = cam.params[:4] if len(cam.params) >= 4 else (cam.params[0], cam.params[0], *cam.params[1:3])
        # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); NeuS at (0, 0).
        Ks.append(np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1.0]]))
        pose = im.cam_from_world()
        Rs.append(np.asarray(pose.rotation.matrix()))
        ts.append(np.asarray(pose.translation))
        names.append(Path(im.name).stem)
        sizes.add((cam.width, cam.height))
    if len(sizes) != 1:
        raise StageError(
            f"{model_dir}: undistorted images have several sizes {sorted(sizes)}; use photos of one camera"
        )
    ((w, h),) = sizes
    return CameraSet(names, np.stack(Ks), np.stack(Rs), np.stack(ts), w, h), rec


@dataclass
class SfmPoints:
    """The points of a COLMAP model, in the SfM frame: positions ``xyz`` (N,3), colours ``rgb`` (N,3, 0..1) and,
    for each point, the stems of the images that observe it (``views``)."""

    xyz: np.ndarray
    rgb: np.ndarray
    views: list[list[str]]


def read_sfm_points(sparse_dir: Path) -> SfmPoints:
    """The points of the COLMAP model in ``sparse_dir`` (e.g. ``sfm/undistorted/sparse``)."""
    import pycolmap

    sparse_dir = Path(sparse_dir)
    if not sparse_dir.is_dir():
        raise StageError(f"{sparse_dir}: SfM model not found; run the sfm stage first")
    rec = pycolmap.Reconstruction(str(sparse_dir))
    stems = {iid: Path(im.name).stem for iid, im in rec.images.items()}
    points = list(rec.points3D.values())
    return SfmPoints(
        np.array([p.xyz for p in points], dtype=np.float64).reshape(-1, 3),
        np.array([p.color for p in points], dtype=np.float64).reshape(-1, 3) / 255.0,
        [sorted({stems[el.image_id] for el in p.track.elements}) for p in points],
    )
