"""Foreground masks: rembg (offline, from the project's model folder) or the user's masks, checked and made
consistent across views with a voting visual hull in the SfM frame.

Outputs in ``out_dir``: ``<stem>.png`` (uint8 0/255, the size of each image), ``report.json`` and a contact
sheet ``overlay.jpg`` (a .jpg so it never matches the ``*.png`` mask glob).

Multi-view consistency (with ``sfm_dir``, or known ``cameras``): every view votes on a voxel grid around the
object (the region of the SfM points that most views call foreground, or the cameras' bounding sphere); a
voxel is occupied when, of the views that see it, at most a small share call it background. The hull is
projected back into each view:

- outliers are views whose mask has an IoU below ``OUTLIER_IOU`` with a loosely voted hull (a part that a
  few views miss survives a loose vote; it would not survive the strict one, and then all views would
  disagree with the hull). The strict hull is then voted without them.
- rembg masks: a consistent view keeps its own fine boundary, restricted to the slightly dilated hull (drops
  background blobs the other views reject); an outlier (object cut by the frame, filling it, found only in
  part) takes the hull eroded by a voxel plus its own mask within a voxel of the hull's boundary.
- user masks are taken as given (only undistorted and checked); their agreement is reported.

Measured on rendered hard scenes (tests/test_hard_scenes.py): the ``parts`` scene's worst rembg view
(IoU 0.45, a whole part missed) comes out at 0.96; scenes where rembg is already right stay within 0.01.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from .artifacts.dataset import write_mask
from .artifacts.reports import read_report_if_any, write_report
from .errors import StageError
from .geometry.carving import vote
from .geometry.halfspace import voxel_centers
from .photos import IMAGE_SUFFIXES, list_photos, read_photo, to_rgb8
from .progress import track

log = logging.getLogger(__name__)

MODELS_ENV = "NEUS_STAGE_MODELS"
# a mask with less than this share of foreground is "all background", above 1 - this "all foreground"
DEGENERATE_SHARE = 0.005
# a view whose mask has an IoU below this with the projected hull is an outlier
OUTLIER_IOU = 0.8
# ... or, where the hull itself is loose (a narrow arc of views, a frame-filling object: every view's IoU is
# lower alike), below this share of the median IoU; masks pass with a median IoU of at least MIN_MEDIAN_IOU
RELATIVE_OUTLIER = 0.85
MIN_MEDIAN_IOU = 0.75
# stop when more than this share of views is degenerate or an outlier
MAX_BAD_SHARE = 0.5
HULL_RESOLUTION = 128
# a voxel stays occupied while at most max(1, this share of the views that see it) call it background
HULL_BACKGROUND_SHARE = 0.05
# the looser vote that outliers are judged against (see _make_consistent)
HULL_OUTLIER_SHARE = 0.2


def models_dir() -> Path:
    """The folder holding ``<name>/<name>.onnx`` model files (``$NEUS_STAGE_MODELS`` or the project's ``.models``)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / ".models"


def model_path(model: str) -> Path:
    return models_dir() / model / f"{model}.onnx"


@contextlib.contextmanager
def _offline_rembg(model: str):
    """Point rembg at the model file and make any download attempt a StageError.

    rembg 2.0.86 looks for ``<U2NET_HOME>/models/<name>/<name>.onnx`` and then the legacy
    ``<U2NET_HOME>/<name>.onnx`` (``U2NET_HOME`` wins over ``REMBG_HOME``); setting ``U2NET_HOME`` to
    ``<models>/<name>`` makes the second one our ``<models>/<name>/<name>.onnx``. When it finds no file it
    calls ``pooch.retrieve`` to download one: that is replaced for the duration by an error.
    """
    import pooch

    def refuse(*args, **kwargs):
        raise StageError(f"model {model} not installed (rembg wanted to download it): run `make setup`")

    saved_env = {k: os.environ.get(k) for k in ("U2NET_HOME", "REMBG_HOME")}
    saved_retrieve = pooch.retrieve
    os.environ["U2NET_HOME"] = str(model_path(model).parent)
    os.environ.pop("REMBG_HOME", None)
    pooch.retrieve = refuse
    try:
        yield
    finally:
        pooch.retrieve = saved_retrieve
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rembg_session(model: str = "u2netp"):
    """A rembg session for ``model`` loaded from the project's model folder, never from the internet."""
    path = model_path(model)
    if not path.is_file():
        raise StageError(
            f"model {model} not installed ({path} is missing): run `make setup` "
            f"(or set {MODELS_ENV} to a folder holding {model}/{model}.onnx)"
        )
    with _offline_rembg(model):
        from rembg import new_session  # first import compiles numba code once (about a minute)

        try:
            return new_session(model)
        except ValueError as exc:
            raise StageError(f"rembg has no model named '{model}' ({exc}); the default is u2netp") from exc


def _rembg_probabilities(session, images: dict[str, Path]) -> dict[str, np.ndarray]:
    probs = {}
    for stem, path in track(list(images.items()), "rembg", unit="views"):
        img = Image.fromarray(read_photo(path))
        (mask,) = session.predict(img)[:1]
        probs[stem] = np.asarray(mask.convert("L"), dtype=np.uint8)  # 0..255: a quarter of float32's memory
    return probs


# ------------------------------------------------------------------------------------------ user masks
def _find_user_masks(folder: Path, stems: list[str], sfm_dir: Path | None) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: mask folder not found; give one <stem>.png mask per photo")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found: dict[str, Path] = {}
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in found:
            raise StageError(f"{folder}: {found[p.stem].name} and {p.name} are both masks for '{p.stem}'; keep one")
        found[p.stem] = p
    dropped: set[str] = set()
    if sfm_dir is not None:
        dropped = set(read_report_if_any(Path(sfm_dir) / "report.json").get("dropped", []))
    missing = [s for s in stems if s not in found]
    extra = sorted(set(found) - set(stems) - dropped)
    if missing or extra:
        parts = []
        def names(xs: list[str]) -> str:
            return ", ".join(xs[:10]) + (" ..." if len(xs) > 10 else "")

        if missing:
            parts.append(f"no mask for {len(missing)} image(s): {names(missing)}")
        if extra:
            parts.append(f"{len(extra)} mask(s) match no image: {names(extra)}")
        raise StageError(
            f"{folder}: mask names do not match the photos ({'; '.join(parts)}); name each mask after its photo "
            "(photo 'IMG_0001.jpg' -> mask 'IMG_0001.png')"
        )
    return {s: found[s] for s in stems}


def _read_mask(path: Path) -> np.ndarray:
    """A boolean mask from a mask image: the alpha channel when it has a non-trivial one, else the grey level
    (white = object). Masks stored as 0/1 (not 0/255, common from numpy or labelling tools) are read as such."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if alpha.min() < 255:
                    return alpha >= 128
            grey = to_rgb8(im)[..., 0] if im.mode.startswith("I") or im.mode == "F" else np.asarray(im.convert("L"))
            if grey.max() == 1:  # a 0/1 label image
                return grey >= 1
            return grey >= 128
    except (OSError, SyntaxError, ValueError) as exc:
        raise StageError(f"{path}: cannot read this mask ({exc}); replace the file") from exc


def _refuse_bad_user_masks(masks: dict[str, np.ndarray], folder: Path) -> None:
    """User masks that are empty, full or inverted: one message naming the folder, what was found and the fix."""
    shares, empty, full = _degenerate(masks)
    n = len(masks)
    if len(empty) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks are empty (no pixel of 128 or more, nor 0/1 labels) in {len(empty)} of {n} views "
            f"({', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}); masks must be white (255, or 1 in 0/1 "
            "masks) on the object and black (0) elsewhere"
        )
    # a mask that covers every image border all round is background drawn white: the masks are inverted
    framed = [s for s, m in masks.items() if m[0].mean() > 0.9 and m[-1].mean() > 0.9 and m[:, 0].mean() > 0.9
              and m[:, -1].mean() > 0.9 and not m.all()]
    if len(framed) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks look inverted: in {len(framed)} of {n} views the white part covers every image "
            f"border all round (mean white share {np.mean(list(shares.values())):.2f}); masks must be white on the "
            "object and black on the background: invert them"
        )
    if len(full) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{folder}: the masks are all white in {len(full)} of {n} views; masks must be white on the object and "
            "black on the background"
        )
    bad = sorted(empty + full)
    if bad:
        log.warning("degenerate user masks (all white or all black) in %d view(s): %s", len(bad), ", ".join(bad))


def _undistorter(sfm_dir: Path):
    """(distorted camera, function mask -> undistorted mask) for the photos' camera in ``sfm_dir/sparse/0``."""
    import pycolmap

    rec = pycolmap.Reconstruction(Path(sfm_dir) / "sparse" / "0")
    (camera,) = list(rec.cameras.values())
    options = pycolmap.UndistortCameraOptions()  # the defaults pycolmap.undistort_images used in the sfm stage

    def undistort(mask: np.ndarray) -> np.ndarray:
        bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(mask.astype(np.uint8) * 255))
        out, _ = pycolmap.undistort_image(options, bitmap, camera)
        arr = out.to_array()
        return (arr[..., 0] if arr.ndim == 3 else arr) >= 128

    return camera, undistort


def _load_user_masks(user_masks: Path, images: dict[str, Path], sizes: dict[str, tuple[int, int]],
                     sfm_dir: Path | None) -> tuple[dict[str, np.ndarray], int]:
    paths = _find_user_masks(user_masks, list(images), sfm_dir)
    undistort = None
    camera = None
    n_undistorted = 0
    masks = {}
    for stem, path in paths.items():
        m = _read_mask(path)
        w, h = sizes[stem]
        if m.shape != (h, w):
            if sfm_dir is not None and undistort is None and (Path(sfm_dir) / "sparse" / "0").is_dir():
                camera, undistort = _undistorter(sfm_dir)
            same_aspect = abs(m.shape[1] / m.shape[0] - (camera.width / camera.height if camera else 0)) < 0.01
            if camera is not None and m.shape != (camera.height, camera.width) and same_aspect:
                # masks of the original photos, which the sfm stage brought to the working size: scale alike
                m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
                    (camera.width, camera.height), Image.Resampling.BILINEAR)) >= 128
            if undistort is not None and m.shape == (camera.height, camera.width):
                m = undistort(m)
                n_undistorted += 1
            if m.shape != (h, w):
                raise StageError(
                    f"{path}: mask is {m.shape[1]}x{m.shape[0]} but its image is {w}x{h}; give masks the size of "
                    "the original photos (they are undistorted like the photos when --sfm is given)"
                )
        masks[stem] = m
    if n_undistorted:
        log.info("undistorted %d user masks with the sfm camera", n_undistorted)
    return masks, n_undistorted


# --------------------------------------------------------------------------------------- voting hull
class _Views:
    """Undistorted pinhole cameras of the images, by stem: K (3x3, COLMAP pixel convention), R, t (world ->
    camera); ``rec`` is the SfM model (its points seed the object region) or None for reference cameras."""

    def __init__(self, stems: list[str], K: dict[str, np.ndarray], R: dict[str, np.ndarray],
                 t: dict[str, np.ndarray], rec=None, image_ids: dict[str, int] | None = None):
        self.stems, self.K, self.R, self.t = stems, K, R, t
        self.rec, self.image_ids = rec, image_ids or {}

    def project_float(self, stem: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates (u, v) of world points (COLMAP: pixel i covers [i, i+1)) and their depth."""
        Xc = X @ self.R[stem].T + self.t[stem]
        z = Xc[:, 2]
        zs = np.where(z > 1e-9, z, 1e-9)
        K = self.K[stem]
        return K[0, 0] * Xc[:, 0] / zs + K[0, 2], K[1, 1] * Xc[:, 1] / zs + K[1, 2], z

    def project(self, stem: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel indices (col, row) of world points (COLMAP: pixel i covers [i, i+1)) and their depth."""
        u, v, z = self.project_float(stem, X)
        return np.floor(u).astype(np.int64), np.floor(v).astype(np.int64), z


def views_from_sfm(sfm_dir: Path, stems: list[str], sizes: dict[str, tuple[int, int]]) -> _Views:
    """The registered views among ``stems`` from ``sfm_dir/undistorted/sparse``."""
    import pycolmap

    sparse = Path(sfm_dir) / "undistorted" / "sparse"
    if not sparse.is_dir():
        raise StageError(f"{sparse}: no undistorted model; run the sfm stage first (neus-stage sfm)")
    rec = pycolmap.Reconstruction(sparse)
    by_stem = {Path(im.name).stem: im for im in rec.images.values() if im.has_pose}
    registered = [s for s in stems if s in by_stem]
    K, R, t = {}, {}, {}
    for s in registered:
        im = by_stem[s]
        cam = im.camera
        if (cam.width, cam.height) != sizes[s]:
            raise StageError(
                f"image {s} is {sizes[s][0]}x{sizes[s][1]} but the sfm camera is {cam.width}x{cam.height}; "
                "with --sfm, mask the undistorted images (<sfm>/undistorted/images)"
            )
        K[s] = cam.calibration_matrix()
        pose = im.cam_from_world()
        R[s] = pose.rotation.matrix()
        t[s] = np.asarray(pose.translation)
    return _Views(registered, K, R, t, rec=rec, image_ids={s: by_stem[s].image_id for s in registered})


def views_from_camera_set(cams, rec=None) -> _Views:
    """Views of a :class:`neus_stage.geometry.cameras.CameraSet` (NeuS pixel convention) with the SfM model ``rec``."""
    K, R, t = {}, {}, {}
    for i, s in enumerate(cams.names):
        k = cams.K[i].copy()
        k[:2, 2] += 0.5  # NeuS puts the centre of pixel 0 at 0, COLMAP (``project``) at 0.5
        K[s], R[s], t[s] = k, cams.R[i], cams.t[i]
    ids = {}
    if rec is not None:
        ids = {Path(im.name).stem: im.image_id for im in rec.images.values() if Path(im.name).stem in K}
    return _Views(list(cams.names), K, R, t, rec=rec, image_ids=ids)


def views_from_cameras_sphere(path: Path, stems: list[str]) -> tuple[_Views, np.ndarray, np.ndarray]:
    """Views from a NeuS ``cameras_sphere.npz`` (view i = ``stems[i]``, the sorted images) and the box around
    its scale_mat sphere, which holds the object."""
    from .artifacts.dataset import read_cameras_sphere
    from .geometry.cameras import decompose_projection

    world_mats, scale_mat = read_cameras_sphere(path, n_views=len(stems))
    K, R, t = {}, {}, {}
    for s, wm in zip(stems, world_mats):
        k, pose = decompose_projection(wm[:3, :4])
        k = k.copy()
        k[:2, 2] += 0.5  # NeuS puts the centre of pixel 0 at 0, COLMAP (``project``) at 0.5
        K[s], R[s] = k, pose[:3, :3].T
        t[s] = -R[s] @ pose[:3, 3]
    c, r = scale_mat[:3, 3], scale_mat[0, 0]
    return _Views(list(stems), K, R, t), c - r, c + r


def convergence_point(views: _Views, stems: list[str] | None = None) -> np.ndarray | None:
    """The point nearest to every optical axis (least squares): where the cameras of an object capture
    converge. None where the axes are close to parallel (a frontal capture) or the point is behind cameras."""
    stems = views.stems if stems is None else stems
    M, b = np.zeros((3, 3)), np.zeros(3)
    centres, axes = [], []
    for s in stems:
        a = views.R[s][2]  # the camera's z axis (viewing direction) in the world
        c = -views.R[s].T @ views.t[s]
        P = np.eye(3) - np.outer(a, a)
        M += P
        b += P @ c
        centres.append(c)
        axes.append(a)
    w = np.linalg.eigvalsh(M)
    if w[0] < 0.05 * w[-1]:
        return None
    x = np.linalg.solve(M, b)
    in_front = np.einsum("ij,ij->i", x - np.array(centres), np.array(axes)) > 0
    return x if in_front.mean() >= 0.8 else None


def _occupied_bounds(occ: np.ndarray, lo: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(occ)
    return lo + idx.min(0) * voxel, lo + (idx.max(0) + 1) * voxel


def object_region(views: _Views, masks: dict[str, np.ndarray], voters: list[str], resolution: int = 48,
                  max_rounds: int = 5) -> tuple[np.ndarray, np.ndarray, dict]:
    """Box (lo, hi) holding the object, found from the silhouettes themselves: a coarse loose voting hull of
    the well-seen voxels is carved in a cube around the cameras' convergence point reaching 80% of the way to
    the nearest camera (the object lies between the cameras), then again in the padded box of what it kept,
    until the box stops shrinking.

    The SfM points do not bound the object: on a textured floor most points lie on the floor, and the few on
    the object may cover only a textured band of it (boxing them cut the object's hull in half)."""
    centres = np.array([-views.R[s].T @ views.t[s] for s in voters])
    c0 = convergence_point(views, voters)
    how = "camera convergence"
    if c0 is None:
        pts = np.array([p.xyz for p in views.rec.points3D.values()]) if views.rec is not None else np.zeros((0, 3))
        if len(pts) == 0:
            raise StageError("the cameras do not converge on one region and there are no SfM points to place the "
                             "object; photograph the object from all around it")
        c0, how = np.median(pts, axis=0), "median of the SfM points"
    distances = np.linalg.norm(centres - c0, axis=1)
    reach = float(np.median(distances))
    # How far from c0 the object can reach: in every view it lies inside its silhouette, which bounds it
    # across the view (the farthest mask pixel from c0's image, at c0's depth); along the view only other
    # views bound it, and a hull from a narrow arc of views is long in depth. Objects are about as deep as
    # they are wide: the box is a cube of 1.25 x the widest silhouette radius, and never reaches 80% of the
    # way to the nearest camera (the object lies between the cameras).
    radius = 0.0
    for s in voters:
        ys, xs = np.nonzero(masks[s])
        if len(xs) == 0:
            continue
        u, v, z = views.project_float(s, c0[None])
        if z[0] <= 0:
            continue
        px = np.sqrt(((np.array([xs.min(), xs.max() + 1]) - u[0]) ** 2).max()
                     + ((np.array([ys.min(), ys.max() + 1]) - v[0]) ** 2).max())
        radius = max(radius, float(px / views.K[s][0, 0] * z[0]))
    half = min(0.8 * distances.min(), 1.25 * radius) if radius > 0 else 0.8 * distances.min()
    lo, hi = c0 - half, c0 + half
    min_views = well_seen(voters)
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        seen, background, _, voxel = hull_votes(views, masks, lo, hi, resolution, voters=voters)
        occ = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=min_views)
        if not occ.any():
            raise StageError(
                f"the masks' visual hull is empty: no region is foreground in {min_views} or more of the "
                f"{len(voters)} views that see it; the masks and the camera poses disagree (check the masks, "
                "overlay.jpg, and sfm/report.json)"
            )
        olo, ohi = _occupied_bounds(occ, lo, voxel)
        pad = 2 * voxel + 0.05 * (ohi - olo)
        new_lo, new_hi = np.maximum(olo - pad, lo), np.minimum(ohi + pad, hi)
        shrunk = np.prod(new_hi - new_lo) < 0.7 * np.prod(hi - lo)
        lo, hi = new_lo, new_hi
        if not shrunk:
            break
    return lo, hi, {"centre_from": how, "reach": reach, "silhouette_radius": radius, "rounds": rounds}


def hull_votes(views: _Views, masks: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray,
               resolution: int = HULL_RESOLUTION, voters: list[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Votes on a voxel grid over [lo, hi]: (seen, background) counts (nx,ny,nz) of the voters that see each
    voxel and of those whose mask calls it background, the voxel centres (N,3) and the voxel size.

    A voxel that more voters call background than :func:`hull_occupancy` ever allows is carved whatever the
    rest say, so it is not projected into the remaining views (its counts stop there)."""
    voters = views.stems if voters is None else voters
    # ``resolution`` voxels along the box's middle side (a hull that is long in depth, as from a narrow arc of
    # views, keeps its resolution across), at most ``resolution``^3 voxels
    extent = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    size = max(float(np.median(extent)) / resolution, float(np.prod(extent)) ** (1 / 3) / resolution)
    n = np.maximum(np.ceil(extent / size).astype(int), 1)
    X = voxel_centers(lo, lo + n * size, tuple(n)).reshape(-1, 3)

    def lookup(s: str):  # one view of the carver: COLMAP pixel corners, the mask as it is
        m = masks[s]

        def look(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c, r, z = views.project(s, points)
            inside = (z > 0) & (c >= 0) & (c < m.shape[1]) & (r >= 0) & (r < m.shape[0])
            fg = np.zeros(len(points), bool)
            fg[inside] = m[r[inside], c[inside]]
            return inside, fg

        return look

    seen, background = vote(X, (lookup(s) for s in voters), max(0, (len(voters) - 1) // 4), dtype=np.int16)
    return seen.reshape(n), background.reshape(n), X, size


def well_seen(voters: list[str]) -> int:
    """Views a voxel must be seen by to count in a hull that masks are compared with: a quarter of them (as
    the visual-hull stage), at least 3. Voxels that few views see are barely carved (the space between a
    frame-filling object and the cameras): with them the hull of DTU scan 24's reference masks projects to a
    median IoU of 0.80 with those masks, without them 0.89."""
    return max(3, len(voters) // 4)


def hull_occupancy(seen: np.ndarray, background: np.ndarray, background_share: float = HULL_BACKGROUND_SHARE,
                   min_views: int = 3) -> np.ndarray:
    """Occupied voxels: seen by >= min_views voters, at most max(1, background_share x seen) of which say
    background, but never a quarter of them (a voxel seen by only 3 views, at the grid's corners, must be
    foreground in all of them)."""
    allowed = np.minimum(np.maximum(1, np.floor(background_share * seen)), np.floor((seen - 1) / 4))
    return (seen >= min_views) & (background <= allowed)


def project_hull(views: _Views, stem: str, occ: np.ndarray, X: np.ndarray, voxel: float,
                 shape: tuple[int, int]) -> np.ndarray:
    """Silhouette of the occupied voxels in view ``stem``, drawn at the voxels' own resolution.

    The surface voxels' centres are splatted into a grid whose cells are as large as the largest voxel
    footprint in this view (so neighbouring voxels leave no gap), closed over diagonal gaps, and the grid is
    upsampled bilinearly and thresholded at one half, which puts the silhouette's edge half a cell outside
    the outermost voxel centres, where the voxels' own edges are. The cost is one projection per surface
    voxel, whatever the image size (splatting a square of the footprint's side per voxel, as before, took
    minutes a view on 2 MP photos of a frame-filling object)."""
    import cv2

    surface = occ & ~ndimage.binary_erosion(occ, border_value=0)
    P = X[surface.reshape(-1)]
    h, w = shape
    if len(P) == 0:
        return np.zeros(shape, bool)
    u, v, z = views.project_float(stem, P)
    ok = z > 0
    u, v, z = u[ok], v[ok], z[ok]
    if len(u) == 0:
        return np.zeros(shape, bool)
    K = views.K[stem]
    cell = float(max(1.0, voxel * max(K[0, 0], K[1, 1]) / np.percentile(z, 2)))
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2  # one spare cell on every side
    gi = np.floor(v / cell).astype(np.int64) + 1
    gj = np.floor(u / cell).astype(np.int64) + 1
    keep = (gi >= 0) & (gi < gh) & (gj >= 0) & (gj < gw)
    grid = np.zeros((gh, gw), np.uint8)
    grid[gi[keep], gj[keep]] = 1
    grid = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    grid = grid.astype(bool)
    # pixel (x, y) (COLMAP: centre at x + 0.5) lies at grid coordinate (x + 0.5) / cell + 1 - 0.5 in cell
    # centre units: sample the grid there bilinearly
    xs = (np.arange(w) + 0.5) / cell + 0.5
    ys = (np.arange(h) + 0.5) / cell + 0.5
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    map_y = np.broadcast_to(ys[:, None], (h, w)).astype(np.float32)
    up = cv2.remap(grid.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return up >= 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _footprint_px(views: _Views, stem: str, voxel: float, centre: np.ndarray) -> int:
    _, _, z = views.project(stem, centre[None])
    K = views.K[stem]
    return max(1, int(round(voxel * K[0, 0] / max(float(z[0]), 1e-9))))


# ------------------------------------------------------------------------------------------- checks
def _degenerate(masks: dict[str, np.ndarray]) -> tuple[dict[str, float], list[str], list[str]]:
    shares = {s: float(m.mean()) for s, m in masks.items()}
    empty = [s for s, v in shares.items() if v < DEGENERATE_SHARE]
    full = [s for s, v in shares.items() if v > 1 - DEGENERATE_SHARE]
    return shares, empty, full


def _refuse_degenerate(masks: dict[str, np.ndarray], source: str) -> tuple[dict[str, float], list[str]]:
    shares, empty, full = _degenerate(masks)
    n = len(masks)
    if len(empty) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{source} masks are empty (all background) in {len(empty)} of {n} views; the object was not found: "
            "use photos where the object stands out from a plain background, another --model, or give your own "
            "masks (--user-masks)"
        )
    if len(full) > MAX_BAD_SHARE * n:
        raise StageError(
            f"{source} masks are all foreground in {len(full)} of {n} views; the object fills the frame or the "
            "background was taken for the object: step back so the whole object is in view, or give your own "
            "masks (--user-masks)"
        )
    bad = sorted(empty + full)
    if bad:
        log.warning("degenerate masks (all foreground or all background) in %d view(s): %s", len(bad), ", ".join(bad))
    return shares, bad


# ---------------------------------------------------------------------------------------------- main
def _contact_sheet(images: dict[str, Path], masks: dict[str, np.ndarray], path: Path, n_max: int = 16) -> None:
    stems = list(images)
    if len(stems) > n_max:
        stems = [stems[i] for i in np.linspace(0, len(stems) - 1, n_max).round().astype(int)]
    thumbs = []
    for s in stems:
        img = read_photo(images[s]).astype(np.float32)
        m = masks[s]
        img[~m] = 0.35 * img[~m] + 0.65 * np.array([255, 0, 0], np.float32)
        t = Image.fromarray(img.astype(np.uint8))
        t.thumbnail((200, 200))
        thumbs.append(t)
    cols = min(4, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    tw = max(t.width for t in thumbs)
    th = max(t.height for t in thumbs)
    sheet = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    for i, t in enumerate(thumbs):
        sheet.paste(t, ((i % cols) * tw, (i // cols) * th))
    sheet.save(path, quality=85)


MODES = ("auto", "rembg", "geometry", "user", "none")
# rembg is taken as it is (repaired) when its masks pass the check, with this median IoU with the hull and
# at least this share of the object points' observations inside and of the background points' outside
REMBG_TRUST = 0.9


def _degenerate_reason(masks: dict[str, np.ndarray], source: str) -> str | None:
    _, empty, full = _degenerate(masks)
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


def _geometry_candidates(views: _Views, images: dict[str, Path], sizes: dict[str, tuple[int, int]],
                         rembg_masks: dict[str, np.ndarray] | None, rounds: int = 1
                         ) -> tuple[dict[str, dict[str, np.ndarray]], dict, dict]:
    """Geometry-seeded masks (and, with rembg's, fused ones), each refined over ``rounds`` of hull <-> masks:
    the views' masks vote a loose hull, whose projection is the next round's probable object."""
    from .segment import classify_points, segment_views, view_seeds

    centre = convergence_point(views)
    if centre is None:
        centre = np.median(np.array([p.xyz for p in views.rec.points3D.values()]), axis=0)
    labels = classify_points(views, sizes, centre)
    seeds = view_seeds(views, labels)
    pictures = {s: images[s] for s in views.stems}  # read view by view: memory flat in the photo count
    starts = {"geometry": None}
    if rembg_masks is not None:
        starts["fused"] = {s: rembg_masks[s] for s in views.stems}
    out = {}
    for name, priors in starts.items():
        masks = segment_views(pictures, seeds, priors, desc=f"{name} masks")
        for r in range(rounds):
            voters = [s for s in views.stems if masks[s].mean() > DEGENERATE_SHARE]
            if len(voters) < 3:
                break
            lo, hi, _ = object_region(views, masks, voters)
            seen, background, X, voxel = hull_votes(views, masks, lo, hi, resolution=96, voters=voters)
            loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(voters))
            if not loose.any():
                break
            priors = {s: project_hull(views, s, loose, X, voxel, masks[s].shape) for s in views.stems}
            masks = segment_views(pictures, seeds, priors, desc=f"{name} masks, round {r + 2}")
        out[name] = masks
    return out, seeds, labels.info


def compute_masks(
    images_dir: Path,
    out_dir: Path,
    *,
    mode: str = "auto",
    model: str = "u2netp",
    user_masks: Path | None = None,
    sfm_dir: Path | None = None,
    cameras: Path | None = None,
    threshold: float = 0.5,
    multiview: bool = True,
    candidates_dir: Path | None = None,
) -> dict:
    """Write ``out_dir/<stem>.png`` (0/255) for every image of ``images_dir`` and ``out_dir/report.json``.

    ``mode``: ``user`` (the masks of ``user_masks``, one ``<stem>.<ext>`` per image; masks of the original
    photos are undistorted with the camera of ``sfm_dir``), ``rembg`` (``model``, loaded offline),
    ``geometry`` (seeded by the SfM points, see :mod:`neus_stage.segment`), ``none`` (no masks: training
    models the background), or ``auto``: the user's masks where given, else rembg where its masks are
    consistent across views and agree with the SfM points, else the more consistent of the geometry-seeded
    and the fused (rembg + geometry) masks, else none. With ``multiview`` and cameras (``sfm_dir``, or a NeuS
    ``cameras`` file, view i = the i-th sorted image), masks are checked against a voting visual hull of all
    views and repaired. With ``candidates_dir``, every candidate's masks (``rembg``, ``geometry``, ``fused``)
    are also written there as ``<candidate>/<stem>.png``, before any repair. An explicit mode that cannot be
    honoured is a StageError; ``auto`` goes on without masks and says why (in the log, on the terminal and in
    ``report.json``).
    """
    t0 = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if mode not in MODES:
        raise StageError(f"unknown masks mode '{mode}'; choose one of {', '.join(MODES)}")
    if not 0.0 < threshold < 1.0:
        raise StageError(f"threshold must lie between 0 and 1, got {threshold}")
    if sfm_dir is not None and cameras is not None:
        raise StageError("give either an sfm folder or reference cameras for the multi-view check, not both")
    if mode == "user" and user_masks is None:
        raise StageError("masks mode 'user' needs a mask folder (the scene table's 'masks' column, or --user-masks)")
    if user_masks is not None and mode == "auto":
        mode = "user"
    requested = mode
    images = {p.stem: p for p in list_photos(images_dir, min_photos=1)}
    sizes = {}
    for s, p in images.items():
        with Image.open(p) as im:
            sizes[s] = ImageOps.exif_transpose(im).size
    timings: dict[str, float] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()

    views, region = None, None
    if (multiview or mode == "geometry") and mode != "none":
        if cameras is not None:
            views, lo, hi = views_from_cameras_sphere(Path(cameras), list(images))
            region = (lo, hi)
        elif sfm_dir is not None:
            views = views_from_sfm(Path(sfm_dir), list(images), sizes)
    has_points = views is not None and views.rec is not None and views.rec.num_points3D() >= 30
    if mode == "geometry" and not has_points:
        raise StageError(
            "masks mode 'geometry' seeds the masks with SfM points: it needs poses from sfm (a scene with "
            "reference cameras has none); use masks mode auto, rembg or user"
        )

    report: dict = {"images_dir": str(images_dir), "n_images": len(images), "mode_requested": requested,
                    "threshold": threshold, "model": None, "user_masks_undistorted": 0, "candidates": {}}
    final: dict[str, np.ndarray] | None = None
    why = ""
    consistency = None
    t = time.perf_counter()
    if mode == "user":
        masks, report["user_masks_undistorted"] = _load_user_masks(Path(user_masks), images, sizes, sfm_dir)
        _refuse_bad_user_masks(masks, Path(user_masks))
        final, why = masks, "the user's masks"
        if views is not None:  # checked and reported, never changed
            check = check_consistency(views, masks, _degenerate(masks)[1] + _degenerate(masks)[2], region)
            report["candidates"]["user"] = check.summary()
            if not check.passed:
                raise StageError(
                    f"{user_masks}: {check.failure()}; the masks do not outline one object seen from every photo: "
                    "check the masks (names, order, which photo each belongs to) or leave the 'masks' column empty "
                    "to compute them"
                )
            consistency = {"n_views": len(check.ious), "iou_with_hull": {s: round(v, 4) for s, v in check.ious.items()},
                           "median_iou": check.median_iou, "min_iou": float(min(check.ious.values())),
                           "outliers": check.outliers, "adjusted": False, "region": check.region_info}
    elif mode != "none":
        candidates: dict[str, dict[str, np.ndarray]] = {}
        checks: dict[str, Consistency] = {}
        failures: dict[str, str] = {}
        probs = None
        seeds = None
        if mode in ("auto", "rembg"):
            session = rembg_session(model)
            report["model"] = model
            log.info("rembg %s on %d images", model, len(images))
            probs = _rembg_probabilities(session, images)
            candidates["rembg"] = {s: p >= threshold * 255 for s, p in probs.items()}
            del probs
        timings["rembg_s"] = round(time.perf_counter() - t, 2)

        def evaluate(name: str) -> None:
            masks = candidates[name]
            reason = _degenerate_reason(masks, name)
            if reason is None and views is not None:
                bad = _degenerate(masks)[1] + _degenerate(masks)[2]
                if name not in checks:
                    checks[name] = check_consistency(views, masks, bad, region)
                reason = None if checks[name].passed else checks[name].failure()
                agreement = None
                if seeds is not None:
                    from .segment import seed_agreement

                    agreement = seed_agreement(masks, seeds)
                report["candidates"][name] = {**checks[name].summary(), "seeds": agreement,
                                              "score": round(_score(checks[name], agreement), 4)}
            if reason is not None:
                failures[name] = reason
                report["candidates"].setdefault(name, {})["failed"] = reason
                log.info("%s masks: %s", name, reason)

        if "rembg" in candidates:
            evaluate("rembg")
        # rembg as it is where it is consistent across views and splits few SfM points between object and
        # background (the demo, the teapot): no need for the slower geometry-seeded masks
        rembg_good = "rembg" in candidates and "rembg" not in failures and (
            views is None or (checks["rembg"].median_iou >= REMBG_TRUST and (
                not has_points or _agrees(candidates["rembg"], views))))
        if has_points and (mode == "geometry" or (mode == "auto" and not rembg_good)):
            t = time.perf_counter()
            geo, seeds, points_info = _geometry_candidates(views, images, sizes, candidates.get("rembg"))
            report["points"] = points_info
            timings["geometry_s"] = round(time.perf_counter() - t, 2)
            candidates.update(geo)
            for name in list(candidates):
                evaluate(name)  # rembg again: now scored against the SfM points' labels too
        if candidates_dir is not None:  # every candidate as it was judged, to see why one was chosen
            for name, masks in candidates.items():
                for stem, m in masks.items():
                    write_mask(Path(candidates_dir) / name / f"{stem}.png", m)
        allowed = [n for n in candidates if n not in failures
                   and (mode == "auto" or n == mode or (mode == "geometry" and n == "fused"))]
        if allowed:
            if rembg_good and mode == "auto" and seeds is None:
                chosen = "rembg"
            elif views is None:
                chosen = allowed[0]
            else:
                chosen = max(allowed, key=lambda n: report["candidates"][n]["score"])
            mode = "rembg" if chosen == "rembg" else "geometry"
            report["chosen"] = chosen
            if chosen in checks:
                iou = checks[chosen].median_iou
                why = f"{chosen} masks, consistent across views (median IoU {iou:.3f} with the hull)"
            else:
                why = f"{chosen} masks (no cameras to check them against)"
            others = [f"{n}: {report['candidates'][n].get('score', 'failed')}" for n in candidates if n != chosen]
            if others:
                why += f"; score {report['candidates'][chosen]['score']} against " + ", ".join(others)
            masks = candidates[chosen]
            _, empty, full = _degenerate(masks)
            report["degenerate_views"] = sorted(empty + full)
            if views is not None and multiview and chosen == "rembg":
                final, consistency = repair(views, masks, checks[chosen])
            else:  # geometry-seeded masks were made consistent round by round; repairing them only fattens them
                final = masks
                if chosen in checks:
                    c = checks[chosen]
                    consistency = {"n_views": len(c.ious), "iou_with_hull": {v: round(x, 4) for v, x in c.ious.items()},
                                   "median_iou": c.median_iou, "min_iou": float(min(c.ious.values())),
                                   "outliers": c.outliers, "adjusted": False, "region": c.region_info,
                                   "region_lo": c.lo.tolist(), "region_hi": c.hi.tolist()}
        elif requested == "auto":
            mode = "none"
            why = "no masks are consistent across views (" + "; ".join(f"{n}: {r}" for n, r in failures.items()) + (
                "); the scene is trained without masks (the background is modelled)")
            log.warning("masks: %s", why)
        else:
            raise StageError(
                f"masks mode '{requested}': {failures.get(requested) or next(iter(failures.values()))}; the masks do "
                "not outline one object seen from every photo: check the masks (overlay.jpg), or use masks mode "
                "auto (which goes on without masks) or give your own"
            )
    else:
        why = "masks mode none: the scene is trained without masks"
    timings["masks_s"] = round(time.perf_counter() - t, 2)

    if final is not None:
        for s, m in final.items():
            write_mask(out_dir / f"{s}.png", m)
        with contextlib.suppress(Exception):  # the contact sheet is a convenience, never a failure
            _contact_sheet(images, final, out_dir / "overlay.jpg")
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    report.update({
        "mode": mode,
        "why": why,
        "source": {"user": "user", "rembg": "rembg", "geometry": "geometry", "none": None}[mode],
        "final_foreground_share": None if final is None else {s: round(float(m.mean()), 5) for s, m in final.items()},
        "consistency": consistency,
        "timings": timings,
    })
    write_report(out_dir / "report.json", report)
    if final is None:
        log.info("masks done in %.1f s: none (%s)", timings["total_s"], why)
    else:
        log.info("masks done in %.1f s: %d views, mode %s (%s), mean foreground share %.3f", timings["total_s"],
                 len(final), mode, why, float(np.mean([m.mean() for m in final.values()])))
    return report


def _agrees(masks: dict[str, np.ndarray], views: _Views) -> bool:
    """Whether masks hold most observations of the SfM points that most of each point's views call
    foreground... computed cheaply: the share of points seen in >= 2 views whose observations the masks
    agree on (all inside or all outside) is at least REMBG_TRUST. Masks that cut an object in two (rembg
    on a frame-filling scene) split many points' observations between inside and outside."""
    rec = views.rec
    stem_of = {iid: s for s, iid in views.image_ids.items()}
    agree = total = 0
    for p in rec.points3D.values():
        votes = []
        for el in p.track.elements:
            s = stem_of.get(el.image_id)
            if s is None:
                continue
            x, y = rec.image(el.image_id).point2D(el.point2D_idx).xy
            m = masks[s]
            c, r = int(x), int(y)
            if 0 <= r < m.shape[0] and 0 <= c < m.shape[1]:
                votes.append(bool(m[r, c]))
        if len(votes) >= 2:
            total += 1
            agree += all(votes) or not any(votes)
    return total == 0 or agree / total >= REMBG_TRUST


def outlier_threshold(ious: dict[str, float]) -> float:
    """IoU with the hull below which a view is an outlier: OUTLIER_IOU, or RELATIVE_OUTLIER x the median where
    every view's IoU is lower (a loose hull, not wrong masks)."""
    return min(OUTLIER_IOU, RELATIVE_OUTLIER * float(np.median(list(ious.values()))))


@dataclass
class Consistency:
    """Masks against the loose voting hull of all views: per-view IoU, outliers, and whether they pass."""

    lo: np.ndarray
    hi: np.ndarray
    region_info: dict
    voters: list[str]
    ious: dict[str, float]
    outliers: list[str]
    occupied: bool
    votes: tuple | None = None  # (seen, background, X, voxel) of the voters, for the repair
    allowed: np.ndarray | None = None  # voxels the hull may hold (above the support plane), or None: all

    @property
    def median_iou(self) -> float:
        return float(np.median(list(self.ious.values())))

    @property
    def passed(self) -> bool:
        return (self.occupied and self.median_iou >= MIN_MEDIAN_IOU
                and len(self.outliers) <= MAX_BAD_SHARE * len(self.ious))

    def failure(self) -> str:
        if not self.occupied:
            return ("the masks disagree across views: their visual hull is empty (no region is foreground in the "
                    "views that see it)")
        return (
            f"the masks disagree across views: {len(self.outliers)} of {len(self.ious)} views have an IoU below "
            f"{outlier_threshold(self.ious):.2f} with the visual hull of all views (median {self.median_iou:.2f}, "
            f"at least {MIN_MEDIAN_IOU} needed)"
        )

    def summary(self) -> dict:
        return {"median_iou": round(self.median_iou, 4), "min_iou": round(min(self.ious.values()), 4),
                "outliers": len(self.outliers), "passed": self.passed}


def check_consistency(views: _Views, masks: dict[str, np.ndarray], degenerate: list[str],
                      region: tuple[np.ndarray, np.ndarray] | None = None) -> Consistency:
    """Each view's mask against the loose voting hull of all (non-degenerate) views, carved in ``region`` or
    in the box the silhouettes themselves bound (:func:`object_region`).

    Outliers are found against a loose hull: a part that a few views miss (the rembg masks of the ``parts``
    scene: three views of 36 with SfM cameras) is carved away by a strict vote, and then every view would
    disagree with the hull."""
    if len(views.stems) < 3:
        raise StageError("fewer than 3 of the masked images have a camera; check --images/--sfm")
    voters = [s for s in views.stems if s not in degenerate]
    if region is None:
        lo, hi, region_info = object_region(views, masks, voters)
    else:
        (lo, hi), region_info = region, {"centre_from": "reference cameras' sphere"}
    seen, background, X, voxel = hull_votes(views, masks, lo, hi, voters=voters)
    loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(voters))
    ious = {s: _iou(masks[s], project_hull(views, s, loose, X, voxel, masks[s].shape)) for s in views.stems}
    above = _above_support(views, X, loose.shape, lo, hi)
    if above is not None:
        # No camera sees under an object on a table, so the hull continues below it as a cone, which low views
        # see beside the object (they call it background, rightly): cut at the support plane, where that
        # explains the masks at least as well (a plane through the object would make them agree less)
        cut = loose & above
        ious_cut = {s: _iou(masks[s], project_hull(views, s, cut, X, voxel, masks[s].shape)) for s in views.stems}
        use = bool(cut.any() and np.median(list(ious_cut.values())) >= np.median(list(ious.values())) - 0.005)
        region_info = {**region_info, "support_cut": use}
        if use:
            ious, loose = ious_cut, cut
        else:
            above = None
    limit = outlier_threshold(ious)
    outliers = sorted(s for s, v in ious.items() if v < limit)
    return Consistency(lo, hi, region_info, voters, ious, outliers, bool(loose.any()), (seen, background, X, voxel),
                       above)


def _above_support(views: _Views, X: np.ndarray, shape: tuple[int, int, int], lo: np.ndarray, hi: np.ndarray
                   ) -> np.ndarray | None:
    """Voxels (grid ``shape`` of centres ``X``) above the support plane of the SfM points, less a margin that
    keeps a thin base plate (3% of the box's height along the plane's normal, at least two point tolerances);
    None without SfM points or a plane."""
    if views.rec is None or views.rec.num_points3D() < 30:
        return None
    from .geometry.support import fit_support_plane

    pts = np.array([p.xyz for p in views.rec.points3D.values()])
    centres = np.array([-views.R[s].T @ views.t[s] for s in views.stems])
    ups = np.array([-views.R[s][1] for s in views.stems])
    plane = fit_support_plane(pts, centres, ups)
    if plane is None:
        return None
    extent = float(np.abs(np.asarray(hi) - np.asarray(lo)) @ np.abs(plane.normal))
    margin = max(2.0 * plane.tolerance, 0.03 * extent)
    return (plane.height(X) > -margin).reshape(shape)


def restore_missing_parts(own: np.ndarray, hull: np.ndarray, footprint: int,
                          evidence: np.ndarray | None = None) -> np.ndarray:
    """The parts of a view's silhouette its mask lost: where the projected hull of the other views, eroded by
    three voxel footprints, holds a region the mask lacks (at least 1% of the hull's area), grown back within the
    hull. A loose hull projects a little wider than the object all round (a narrow arc of views, a one-sided
    capture); that band is thinner than the erosion and is never added to a mask that is right.

    With ``evidence`` (pixel positions (K,2) of this view's observations of SfM points inside the hull), a region
    is restored only where the view itself saw the object there (at least 3 such points): a hull can be fat by
    more than the erosion near an object's base seen from one side (DTU scan 65's lowest views), and there the
    view saw the table, not the object."""
    k = 3 * max(1, footprint)
    core = ndimage.binary_erosion(hull, iterations=k)
    missing = core & ~own
    labels, n = ndimage.label(missing)
    if n == 0:
        return np.zeros_like(own)
    sizes = ndimage.sum(missing, labels, np.arange(1, n + 1))
    ok = sizes >= max(0.01 * hull.sum(), k * k)
    if evidence is not None:
        c = np.clip(np.floor(evidence[:, 0]).astype(int), 0, own.shape[1] - 1)
        r = np.clip(np.floor(evidence[:, 1]).astype(int), 0, own.shape[0] - 1)
        hits = np.bincount(labels[r, c], minlength=n + 1)[1:]
        ok &= hits >= 3
    seeds = np.isin(labels, 1 + np.flatnonzero(ok))
    return ndimage.binary_dilation(seeds, iterations=k, mask=hull) if seeds.any() else seeds


def _observations_in(views: _Views, occ: np.ndarray, lo: np.ndarray, voxel: float) -> dict[str, np.ndarray]:
    """Per view, the pixel positions of its observations of the SfM points that lie in the occupied voxels."""
    rec = views.rec
    stem_of = {iid: s for s, iid in views.image_ids.items()}
    out: dict[str, list] = {s: [] for s in views.stems}
    for p in rec.points3D.values():
        idx = np.floor((p.xyz - lo) / voxel).astype(int)
        if np.any(idx < 0) or np.any(idx >= occ.shape) or not occ[tuple(idx)]:
            continue
        for el in p.track.elements:
            s = stem_of.get(el.image_id)
            if s is not None:
                out[s].append(rec.image(el.image_id).point2D(el.point2D_idx).xy)
    return {s: np.array(v).reshape(-1, 2) for s, v in out.items()}


def repair(views: _Views, masks: dict[str, np.ndarray], check: Consistency) -> tuple[dict[str, np.ndarray], dict]:
    """Masks made consistent with the other views, and the report of the check.

    Every view keeps its own fine boundary, restricted to the loose hull dilated by 2 voxels: blobs that the
    other views see through (a shadow, a patch of floor) are cut off, while a thin part that a few views
    missed (a spout) stays, as it does in the loose hull. An outlier also gets back the parts it lost (a
    whole part of the object, half of it): :func:`restore_missing_parts` against the strict hull of the
    consistent views."""
    lo, hi = check.lo, check.hi
    outliers = set(check.outliers)
    if outliers:
        log.warning("masks inconsistent with the other views, redrawn from the projected hull: %s",
                    ", ".join(sorted(outliers)))
    seen, background, X, voxel = check.votes or hull_votes(views, masks, lo, hi, voters=check.voters)
    loose = hull_occupancy(seen, background, HULL_OUTLIER_SHARE, min_views=well_seen(check.voters))
    if outliers:
        seen, background, X, voxel = hull_votes(views, masks, lo, hi,
                                                voters=[s for s in check.voters if s not in outliers])
    strict = hull_occupancy(seen, background, min_views=well_seen(check.voters))
    if check.allowed is not None:
        loose, strict = loose & check.allowed, strict & check.allowed
    evidence = _observations_in(views, strict, lo, voxel) if outliers and views.rec is not None else None
    final = dict(masks)
    centre = 0.5 * (lo + hi)
    for s in track(views.stems, "repairing masks", unit="views"):
        d = _footprint_px(views, s, voxel, centre)
        own = masks[s] & ndimage.binary_dilation(project_hull(views, s, loose, X, voxel, masks[s].shape),
                                                 iterations=2 * d)
        if s in outliers:
            own |= restore_missing_parts(masks[s], project_hull(views, s, strict, X, voxel, masks[s].shape), d,
                                         None if evidence is None else evidence.get(s, np.zeros((0, 2))))
        final[s] = own
    consistency = {
        "n_views": len(views.stems),
        "hull_resolution": list(strict.shape),
        "voxel_size": voxel,
        "region_lo": lo.tolist(),
        "region_hi": hi.tolist(),
        "region": check.region_info,
        "occupied_voxels": int(strict.sum()),
        "background_share": {"outliers": HULL_OUTLIER_SHARE, "repair": HULL_BACKGROUND_SHARE},
        "iou_with_hull": {s: round(v, 4) for s, v in check.ious.items()},
        "median_iou": check.median_iou,
        "min_iou": float(min(check.ious.values())),
        "outliers": sorted(outliers),
        "adjusted": True,
    }
    return final, consistency
