"""Undistortion of the sfm stage's images and model, as COLMAP's undistorter does it, faster.

The undistorted camera is COLMAP's own (``pycolmap.undistort_camera`` with the defaults of
``pycolmap.undistort_images``); every undistorted pixel centre is traced through that camera and the distorted
one (pycolmap's camera models) once per camera, and each image is then resampled bilinearly by OpenCV, a view
per core. ``pycolmap.undistort_images`` evaluates the camera model at every pixel of every image and encodes
the PNGs at a slow compression level: about 1 s per 2 MP photo per core, 99 s of the 200-photo run in the
README's scaling section. The result is the same (tests/test_sfm.py: the same camera and keypoints; pixels within
one grey level but at sharp edges, where OpenCV's bilinear weights, in steps of 1/32 px, differ by a few).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..threads import map_views

# PNG compression of the undistorted images: zlib's fastest level (the images are read a few times, by the
# masks and dataset stages; level 1 files are about 20% larger than COLMAP's)
PNG_LEVEL = 1


@dataclass(frozen=True)
class Undistortion:
    """One camera's undistortion: the distorted and undistorted (PINHOLE) cameras and OpenCV's remap tables."""

    camera: object
    undistorted: object
    maps: tuple[np.ndarray, np.ndarray]

    def image(self, array: np.ndarray) -> np.ndarray:
        """``array`` (the distorted camera's size; any channels) resampled into the undistorted camera, black
        where the distorted image has no pixel."""
        if array.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(
                f"image is {array.shape[1]}x{array.shape[0]}, its camera {self.camera.width}x{self.camera.height}"
            )
        return cv2.remap(array, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Pixel positions (n, 2) of the distorted camera in the undistorted one."""
        return _transfer(self.camera, self.undistorted, xy)


def _transfer(source, target, xy: np.ndarray) -> np.ndarray:
    """Pixel positions (n, 2) of camera ``source`` moved to camera ``target`` (same centre and orientation)
    through their normalised image plane (COLMAP's pixel convention: centres at +0.5)."""
    if len(xy) == 0:
        return np.zeros((0, 2))
    normalised = source.cam_from_img(np.asarray(xy, dtype=np.float64))
    return target.img_from_cam(np.c_[normalised, np.ones(len(normalised))], check_cheirality=False)


def undistortion(pycolmap, camera) -> Undistortion:
    """COLMAP's undistorted camera for ``camera`` and the remap tables from one to the other (pixel centres at
    +0.5, COLMAP's convention; OpenCV's at integers)."""
    undistorted = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), camera)
    undistorted.camera_id = camera.camera_id
    w, h = undistorted.width, undistorted.height
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    source = _transfer(undistorted, camera, np.c_[xs.ravel(), ys.ravel()]) - 0.5  # OpenCV's centres: integers
    map_x = source[:, 0].reshape(h, w).astype(np.float32)
    map_y = source[:, 1].reshape(h, w).astype(np.float32)
    return Undistortion(camera, undistorted, cv2.convertMaps(map_x, map_y, cv2.CV_16SC2))


def undistort_model(pycolmap, rec, undistortions: dict[int, Undistortion]):
    """A copy of ``rec`` with the undistorted cameras and every image's keypoints moved into them (COLMAP's
    UndistortReconstruction); poses and 3-D points unchanged."""
    out = pycolmap.Reconstruction(rec)
    for camera_id, u in undistortions.items():
        out.cameras[camera_id] = u.undistorted
    for image in out.images.values():
        points = image.points2D
        moved = undistortions[image.camera_id].points(np.array([p.xy for p in points]))
        for p, xy in zip(points, moved, strict=True):
            p.xy = xy
    return out


def undistort_images(
    rec, undistortions: dict[int, Undistortion], images_dir: Path, out_dir: Path, names: list[str]
) -> None:
    """Write the undistorted image of every image of ``rec`` named in ``names`` (as in ``images_dir``) to
    ``out_dir``, several at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    camera_of = {im.name: im.camera_id for im in rec.images.values()}

    def one(name: str) -> None:
        array = cv2.imread(str(images_dir / name), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise FileNotFoundError(f"{images_dir / name}: cannot read the image to undistort it")
        undistorted = undistortions[camera_of[name]].image(array)
        if not cv2.imwrite(str(out_dir / name), undistorted, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]):
            raise OSError(f"{out_dir / name}: cannot write the undistorted image")

    map_views(one, names, "undistorting images", unit="images")


def undistort(pycolmap, rec, images_dir: Path, out_dir: Path, names: list[str]):
    """Undistorted images (``out_dir/images``) and model (``out_dir/sparse``) of ``rec``, whose images are in
    ``images_dir``; the undistorted model."""
    undistortions = {camera_id: undistortion(pycolmap, camera) for camera_id, camera in rec.cameras.items()}
    undistort_images(rec, undistortions, images_dir, out_dir / "images", names)
    model = undistort_model(pycolmap, rec, undistortions)
    (out_dir / "sparse").mkdir(parents=True, exist_ok=True)
    model.write(out_dir / "sparse")
    return model
