"""``render_scene``: one synthetic scene rendered to files (photos, true masks, NeuS cameras, the
ground-truth mesh, scene.json), and ``sdf_grid_mesh``, the marching cubes of a scene's SDF that gives it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..artifacts.dataset import write_cameras_sphere, write_mask
from ..artifacts.meshes import write_mesh
from ..artifacts.reports import write_report
from ..errors import StageError
from ..geometry.cameras import scale_mat_from_sphere
from ..geometry.extraction import marching_cubes_grid
from .catalogue import SCENES
from .render import FOCAL_35MM, render_view, scene_cameras, to_srgb8
from .scenes import Scene
from .sdf import SDF

log = logging.getLogger(__name__)

# EXIF Orientation values and the PIL transpose that turns the upright image into the stored one
# (ImageOps.exif_transpose applies the inverse when reading).
_EXIF_STORE = {
    6: Image.Transpose.ROTATE_90,  # stored turned 90 deg counter-clockwise; viewers turn it clockwise
    8: Image.Transpose.ROTATE_270,
    3: Image.Transpose.ROTATE_180,
}
SPHERE_MARGIN = 1.1
"""NeuS wants the object inside the unit sphere with some room: the scale_mat sphere is 10 % larger."""


# ----------------------------------------------------------------------------------- ground truth
def sdf_grid_mesh(sdf: SDF, center: np.ndarray, radius: float, resolution: int, chunk: int = 1 << 20):
    """Marching cubes (the package's :func:`~neus_stage.geometry.extraction.marching_cubes_grid`) of ``sdf`` sampled
    on a ``resolution``^3 grid over the cube around a sphere.

    Returns (vertices (V,3) world units, faces (F,3)) with outward-facing triangles (normals along +grad).
    """
    lo = np.asarray(center, dtype=np.float64) - radius
    xs = np.linspace(0.0, 2 * radius, resolution, dtype=np.float64)
    vol = np.empty((resolution, resolution, resolution), dtype=np.float32)
    gy, gz = np.meshgrid(xs, xs, indexing="ij")
    plane = np.stack([np.zeros(gy.size), gy.ravel(), gz.ravel()], 1)
    slab = max(1, chunk // plane.shape[0])
    for i0 in range(0, resolution, slab):
        i1 = min(resolution, i0 + slab)
        pts = np.concatenate([plane + [x, 0.0, 0.0] for x in xs[i0:i1]]) + lo
        vol[i0:i1] = sdf(pts.astype(np.float32)).reshape(i1 - i0, resolution, resolution)
    if not (vol.min() < 0 < vol.max()):
        raise StageError("the scene's SDF has no surface inside its bounding sphere")
    return marching_cubes_grid(vol, lo, float(xs[1] - xs[0]))


@dataclass
class _Truth:
    """The ground-truth mesh and the tight sphere around it (the cameras and scale_mat are placed by it)."""

    verts: np.ndarray
    faces: np.ndarray
    resolution: int
    bb_min: np.ndarray
    bb_max: np.ndarray
    center: np.ndarray
    radius: float


def _ground_truth(sc: Scene, resolution: int) -> _Truth:
    verts, faces = sdf_grid_mesh(sc.sdf, sc.bound_center, sc.bound_radius, resolution)
    bb_min, bb_max = verts.min(0), verts.max(0)
    center = 0.5 * (bb_min + bb_max)
    radius = float(np.linalg.norm(verts - center, axis=1).max())
    return _Truth(verts, faces, resolution, bb_min, bb_max, center, radius)


def _world_mats(K: np.ndarray, Rs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """NeuS world matrices (N,4,4): K [R | t] in the top three rows."""
    world_mats = np.tile(np.eye(4), (len(Rs), 1, 1))
    world_mats[:, :3, :3] = K @ Rs
    world_mats[:, :3, 3] = ts @ K.T
    return world_mats


# ------------------------------------------------------------------------------------------- photos
def _stored_orientation(i: int, exif_rotate: bool) -> int | None:
    """The EXIF Orientation photo ``i`` is stored with: every third photo turned (cycling through the
    orientations) with ``exif_rotate``, else none."""
    if not (exif_rotate and i % 3 == 1):
        return None
    orientations = list(_EXIF_STORE)
    return orientations[(i // 3) % len(orientations)]


def _write_photo(path: Path, pixels: np.ndarray, scene: str, orient: int | None) -> None:
    """JPEG q95 with the camera's EXIF (make, model, 35 mm focal length), stored turned for ``orient``."""
    photo = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x010F] = "neus-stage"  # Make
    exif[0x0110] = f"synth {scene}"  # Model
    exif.get_ifd(0x8769)[0xA405] = FOCAL_35MM  # FocalLengthIn35mmFilm (COLMAP's focal prior)
    if orient is not None:
        photo = photo.transpose(_EXIF_STORE[orient])
        exif[0x0112] = orient  # Orientation
    photo.save(path, quality=95, exif=exif.tobytes())


def _render_views(
    out_dir: Path,
    scene: str,
    sc: Scene,
    cameras: tuple[np.ndarray, np.ndarray, np.ndarray],
    size: tuple[int, int],
    rng: np.random.Generator,
    exif_rotate: bool,
) -> tuple[list[str], dict[str, int], list[float]]:
    """Render and write every view's photo and mask; (names, EXIF orientations of turned photos, mask
    fractions)."""
    K, Rs, ts = cameras
    names, rotated, mask_fracs = [], {}, []
    for i in tqdm(range(len(Rs)), desc=f"render {scene}", unit="view", disable=None):
        image, mask = render_view(sc, K, Rs[i], ts[i], *size)
        name = f"{i:03d}"
        names.append(name)
        orient = _stored_orientation(i, exif_rotate)
        _write_photo(out_dir / "photos" / f"{name}.jpg", to_srgb8(image, rng), scene, orient)
        if orient is not None:
            rotated[name] = orient
        write_mask(out_dir / "masks" / f"{name}.png", mask)
        mask_fracs.append(float(mask.mean()))
        log.debug("view %s: object covers %.1f %% of the frame", name, 100 * mask.mean())
    return names, rotated, mask_fracs


# ---------------------------------------------------------------------------------------- top level
def _scene_record(
    request: dict,
    rotated: dict[str, int],
    truth: _Truth,
    K: np.ndarray,
    floor_z: float | None,
    names: list[str],
    mask_fracs: list[float],
) -> dict:
    """The content of scene.json: the request, the object's box and spheres, the intrinsics, the views."""
    return {
        **request,
        "exif_rotated": rotated,
        "units": "world units; the mug is 1.0 tall (read as decimetres); z is up",
        "object_bbox": {"min": truth.bb_min.tolist(), "max": truth.bb_max.tolist()},
        "object_sphere": {"center": truth.center.tolist(), "radius": truth.radius},
        "scale_mat_sphere": {"center": truth.center.tolist(), "radius": SPHERE_MARGIN * truth.radius},
        "intrinsics": {
            "focal_35mm": FOCAL_35MM,
            "fx": K[0, 0],
            "fy": K[1, 1],
            "cx": K[0, 2],
            "cy": K[1, 2],
            "pixel_convention": "integer pixel centres (NeuS/OpenCV): cx = (width - 1) / 2",
        },
        "floor_z": floor_z,
        "gt": {
            "file": "gt.ply",
            "resolution": truth.resolution,
            "vertices": len(truth.verts),
            "faces": len(truth.faces),
        },
        "mask_fraction": {"min": min(mask_fracs), "mean": float(np.mean(mask_fracs)), "max": max(mask_fracs)},
        "photos": [f"{n}.jpg" for n in names],
    }


def _check_request(scene: str, n_views: int, width: int, height: int) -> None:
    if scene not in SCENES:
        raise StageError(f"unknown synthetic scene '{scene}'; choose one of: {', '.join(SCENES)}")
    if n_views < 1 or width < 16 or height < 16:
        raise StageError(f"need at least 1 view of 16x16 pixels, got {n_views} views of {width}x{height}")


def render_scene(
    out_dir: Path,
    *,
    scene: str = "mug",
    n_views: int = 30,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    exif_rotate: bool = False,
    gt_resolution: int = 256,
) -> dict:
    """Render a synthetic scene into ``out_dir`` and return its description (also written as scene.json).

    Writes ``photos/NNN.jpg`` (JPEG q95; with ``exif_rotate`` every third photo is stored turned, with an
    EXIF Orientation tag that brings it back upright), ``masks/NNN.png`` (0/255, of the upright photo),
    ``cameras_sphere.npz`` (NeuS convention; scale_mat = a sphere around the object), ``gt.ply`` (the
    object's surface in world units, marching cubes of the SDF on a ``gt_resolution``^3 grid) and
    ``scene.json``.
    """
    _check_request(scene, n_views, width, height)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sc = SCENES[scene](rng)

    # ground truth first: its bounding box gives the tight object sphere (cameras, scale_mat)
    truth = _ground_truth(sc, gt_resolution)
    write_mesh(out_dir / "gt.ply", truth.verts, truth.faces)
    K, Rs, ts = scene_cameras(sc, truth.center, truth.radius, n_views, width, height, rng)
    scale_mat = scale_mat_from_sphere(truth.center, SPHERE_MARGIN * truth.radius)
    write_cameras_sphere(out_dir / "cameras_sphere.npz", _world_mats(K, Rs, ts), scale_mat)
    names, rotated, mask_fracs = _render_views(out_dir, scene, sc, (K, Rs, ts), (width, height), rng, exif_rotate)

    request = {"scene": scene, "n_views": n_views, "width": width, "height": height, "seed": seed}
    info = _scene_record(request, rotated, truth, K, sc.floor_z, names, mask_fracs)
    write_report(out_dir / "scene.json", info)  # deterministic for a given seed
    info["render_seconds"] = round(time.perf_counter() - t_start, 2)
    log.info(
        "rendered %s: %d views %dx%d in %.1f s -> %s", scene, n_views, width, height, info["render_seconds"], out_dir
    )
    return info
