"""The NeuS dataset stage: image/, mask/ and cameras_sphere.npz in the official convention.

Views are keyed by the photo's stem. Only registered views are written, and meta.json records each
view's index in the sorted photo folder, so a dropped photo never shifts the pairing of images, masks
and cameras (nor the matching against reference cameras).

The bounding sphere (scale_mat) is found without a manual crop: a first guess from the SfM points that
project inside the masks, then a coarse visual hull carved around it; the sphere encloses the hull.

World frame (poses = sfm): COLMAP's frame made upright (:mod:`neus_stage.geometry.upright`: z up from the
support plane or the cameras, the object's base at z = 0, its centre on the z axis, camera 0 on the -y
side) and metric where a marker, a known length or a factor gives the scale (:mod:`neus_stage.scale`).
Every file of the dataset is in that frame; meta.json ``frame.from_sfm`` holds the similarity from the
SfM model's frame (:func:`neus_stage.frames.sfm_to_world` maps SfM points with it). With reference
cameras the world is theirs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .artifacts.dataset import read_cameras_sphere, read_masks, write_cameras_sphere, write_mask, write_meta
from .artifacts.reports import read_report, read_report_if_any
from .artifacts.sfm import read_sfm_cameras
from .errors import StageError
from .frames import transform_camera_set
from .geometry.cameras import CameraSet, Similarity, scale_mat_from_sphere
from .geometry.visual_hull import carve
from .photos import check_photos, list_photos, read_photo
from .scale import ScaleResult, ScaleSettings, resolve_scale

log = logging.getLogger(__name__)


def _check_mask_sizes(masks: np.ndarray, folder: Path, w: int, h: int) -> None:
    if masks.shape[1:] != (h, w):
        raise StageError(
            f"{folder}: masks are {masks.shape[2]}x{masks.shape[1]} but images are {w}x{h}; "
            "masks must have the size of the photos"
        )


def masks_mode(masks_dir: Path) -> tuple[str, str]:
    """(mode, why) the masks stage recorded in ``masks_dir/report.json``: ``none`` means the scene has no
    masks (training models the background); a folder without a report holds the user's own masks."""
    report = Path(masks_dir) / "report.json"
    if not report.is_file():
        return "user", "masks given as a folder"
    data = read_report(report, "the masks stage")
    return str(data.get("mode") or data.get("source") or "rembg"), str(data.get("why", ""))


def _write_views(
    out_dir: Path, stems: list[str], images: list[np.ndarray] | list[Path], masks: np.ndarray | None
) -> None:
    """image/<stem>.png and mask/<stem>.png; without masks (masks mode none) mask/ stays empty."""
    for sub in ("image", "mask"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
        (out_dir / sub).mkdir(parents=True)
    for i, (stem, img) in enumerate(zip(stems, images)):
        if isinstance(img, Path):
            if img.suffix.lower() == ".png":
                shutil.copyfile(img, out_dir / "image" / f"{stem}.png")
            else:
                Image.open(img).convert("RGB").save(out_dir / "image" / f"{stem}.png")
        else:
            Image.fromarray(img).save(out_dir / "image" / f"{stem}.png")
        if masks is not None:
            write_mask(out_dir / "mask" / f"{stem}.png", masks[i])


def build_dataset_from_reference(photos_dir: Path, cameras: Path, masks_dir: Path, out_dir: Path) -> dict:
    """poses = reference: the user's photos with a given cameras_sphere.npz (one camera per sorted photo)."""
    photos = list_photos(photos_dir)
    w, h = check_photos(photos)
    world_mats, scale_mat = read_cameras_sphere(cameras, n_views=len(photos))
    stems = [p.stem for p in photos]
    mode, why = masks_mode(masks_dir)
    masks = None if mode == "none" else read_masks(masks_dir, stems)
    if masks is not None:
        _check_mask_sizes(masks, Path(masks_dir), w, h)
    out_dir = Path(out_dir)
    _write_views(out_dir, stems, [read_photo(p) for p in photos], masks)
    write_cameras_sphere(out_dir / "cameras_sphere.npz", world_mats, scale_mat)
    meta = {
        "source": "reference",
        "cameras": str(cameras),
        "image_size": [w, h],
        "views": [{"name": s, "photo": p.name, "photo_index": i} for i, (s, p) in enumerate(zip(stems, photos))],
        "scale_mat": scale_mat.tolist(),
        "units": "reference units",
        "frame": {
            "name": "reference",
            "units": "reference units",
            "summary": f"the reference cameras' frame and units, as given ({cameras})",
        },
        "masks": mode,
        "masks_why": why,
    }
    write_meta(out_dir, meta)
    log.info("dataset: %d views from reference cameras %s", len(stems), cameras)
    return meta


def object_points(rec, names: list[str], masks: np.ndarray, min_share: float = 0.5) -> np.ndarray:
    """SfM points observed inside the masks in at least ``min_share`` of their observations."""
    index = {n: i for i, n in enumerate(names)}
    h, w = masks.shape[1:]
    pts = []
    for p in rec.points3D.values():
        hits = total = 0
        for el in p.track.elements:
            im = rec.images[el.image_id]
            xy = im.points2D[el.point2D_idx].xy
            u, v = int(round(xy[0] - 0.5)), int(round(xy[1] - 0.5))
            i = index.get(Path(im.name).stem)
            if i is None or not (0 <= u < w and 0 <= v < h):
                continue
            total += 1
            hits += bool(masks[i, v, u])
        if total >= 2 and hits >= min_share * total:
            pts.append(p.xyz)
    return np.array(pts).reshape(-1, 3)


def object_sphere(
    cams: CameraSet, masks: np.ndarray, seed_points: np.ndarray, margin: float
) -> tuple[np.ndarray, float, dict, np.ndarray]:
    """Centre and radius of a sphere enclosing the masks' visual hull, and the hull's voxel centres (V,3), in
    the frame of ``cams``."""
    if len(seed_points) >= 10:
        c0 = np.median(seed_points, 0)
        r0 = 1.5 * float(np.percentile(np.linalg.norm(seed_points - c0, axis=1), 99))
    else:  # no texture on the object: the point closest to every optical axis, a generous radius
        axes = cams.R[:, 2, :]
        A = sum(np.eye(3) - np.outer(a, a) for a in axes)
        b = sum((np.eye(3) - np.outer(a, a)) @ c for a, c in zip(axes, cams.centers))
        c0 = np.linalg.solve(A, b)
        r0 = 0.5 * float(np.median(np.linalg.norm(cams.centers - c0, axis=1)))
    P = cams.world_mats[:, :3, :4]
    for _ in range(4):
        lo, hi = c0 - r0, c0 + r0
        # only voxels that most views see: a voxel seen by a few views at their image edges is barely constrained
        occ, _ = carve(P, masks, lo, hi, 64, max_background_votes=1, min_views=max(3, len(masks) // 2))
        if not occ.any():
            raise StageError(
                "the masks' visual hull is empty around the SfM points: the masks and the camera "
                "poses disagree (check masks/report.json and sfm/report.json)"
            )
        idx = np.argwhere(occ)
        if idx.min() > 0 and idx.max() < 63:
            break
        r0 *= 2.0  # the hull touches the carving box: it was too small
    else:
        raise StageError("the masks' visual hull keeps growing: masks may include the background; check masks/")
    size = (hi - lo) / 64
    corners_lo, corners_hi = lo + idx.min(0) * size, lo + (idx.max(0) + 1) * size
    center = (corners_lo + corners_hi) / 2
    vox = lo + (idx + 0.5) * size
    radius = float(np.linalg.norm(vox - center, axis=1).max() + np.linalg.norm(size)) * (1 + margin)
    return (
        center,
        radius,
        {"hull_box_sfm": [corners_lo.tolist(), corners_hi.tolist()], "seed_points": len(seed_points)},
        vox,
    )


def sphere_without_masks(cams: CameraSet, rec, margin: float) -> tuple[np.ndarray, float, dict, np.ndarray]:
    """Centre and radius of a sphere around the object when there are no masks: the SfM points that stand
    where the cameras converge (in at least half the views, nearer than the cameras, above a floor; see
    :func:`neus_stage.segment.classify_points`), or a sphere half as large as the cameras' distance; and
    those object points (K,3)."""
    from .geometry.mask_hull import convergence_point
    from .segment import classify_points

    centre = convergence_point(cams)
    pts = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
    if centre is None:
        if not len(pts):
            raise StageError(
                "the cameras do not converge on one region and the SfM model has no points: no "
                "object to bound; photograph the object from all around it"
            )
        centre = np.median(pts, axis=0)
    reach = float(np.median(np.linalg.norm(cams.centers - centre, axis=1)))
    sizes = dict.fromkeys(cams.names, (cams.width, cams.height))
    labels = classify_points(cams, rec, sizes, centre) if len(pts) >= 30 else None
    obj = labels.xyz[labels.label == 1] if labels is not None else np.zeros((0, 3))
    if len(obj) >= 20:
        c = np.median(obj, axis=0)
        r = float(np.percentile(np.linalg.norm(obj - c, axis=1), 98)) * 1.1
        how = f"{len(obj)} SfM points where the cameras converge"
    else:
        c, r, how = centre, 0.5 * reach, "half the cameras' distance around their convergence point"
    r = min(r, 0.8 * float(np.linalg.norm(cams.centers - c, axis=1).min()))
    return (
        c,
        r * (1 + margin),
        {"sphere_from": how, "seed_points": len(obj), "points": None if labels is None else labels.info},
        obj,
    )


def sfm_points(rec) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """All SfM points (N,3) and the same by point id."""
    by_id = {int(i): np.asarray(p.xyz, dtype=np.float64) for i, p in rec.points3D.items()}
    return np.array(list(by_id.values())).reshape(-1, 3), by_id


def upright_world(
    cams: CameraSet,
    rec,
    object_pts: np.ndarray,
    voxels: np.ndarray | None,
    images: list[Path],
    scale: ScaleSettings | None,
) -> tuple[Similarity, dict, ScaleResult]:
    """The similarity from the SfM frame to the scene's world (upright, the object's base at z = 0 and its
    centre on the z axis, in metres where ``scale`` gives them) and its record for meta.json."""
    from .geometry.upright import upright_frame

    pts, by_id = sfm_points(rec)
    res = resolve_scale(scale or ScaleSettings(), images, cams.names, cams.world_mats, by_id)
    cam_up = -cams.R[:, 1, :]  # minus each camera's y axis, in the SfM frame
    frame = upright_frame(cams.centers, cam_up, pts, object_pts, voxels, scale=res.factor, camera_x=cams.R[:, 0, :])
    sim = frame.similarity
    record = {
        "name": "upright",
        "from_sfm": sim.to_json(),
        "units": res.units,
        **frame.record,
        "scale": res.to_json(),
        "summary": (
            f"z up from the {frame.record['up']['from']}, base at z = 0 from the "
            f"{frame.record['base']['from']}, centred on the {frame.record['centre']['from']}; "
            + (res.message if res.method != "none" else f"units: {res.message}")
        ),
    }
    log.info("world frame: %s", record["summary"])
    return sim, record, res


def build_dataset_from_sfm(
    sfm_dir: Path, masks_dir: Path, out_dir: Path, *, margin: float = 0.1, scale: ScaleSettings | None = None
) -> dict:
    """poses = sfm: the registered, undistorted views with COLMAP's cameras, made upright (and metric where
    ``scale`` allows), and an automatic sphere."""
    sfm_dir, masks_dir, out_dir = Path(sfm_dir), Path(masks_dir), Path(out_dir)
    cams_sfm, rec = read_sfm_cameras(sfm_dir)
    mode, why = masks_mode(masks_dir)
    voxels = None
    if mode == "none":
        masks = None
        center, radius, info, seeds = sphere_without_masks(cams_sfm, rec, margin)
        log.warning("no masks (%s): the bounding sphere comes from the SfM points and the cameras' convergence", why)
    else:
        masks = read_masks(masks_dir, cams_sfm.names)
        _check_mask_sizes(masks, masks_dir, cams_sfm.width, cams_sfm.height)
        seeds = object_points(rec, cams_sfm.names, masks)
        center, radius, info, voxels = object_sphere(cams_sfm, masks, seeds, margin)
    img_dir = sfm_dir / "undistorted" / "images"
    images = []
    for n in cams_sfm.names:
        matches = sorted(img_dir.glob(f"{n}.*"))
        if not matches:
            raise StageError(f"{img_dir}: undistorted image for '{n}' missing; re-run the sfm stage")
        images.append(matches[0])
    # everything from here on in the upright world frame
    sim, frame, scale_res = upright_world(cams_sfm, rec, seeds, voxels, images, scale)
    cams = transform_camera_set(cams_sfm, sim)
    center, radius = sim.apply(center), radius * sim.scale
    scale_mat = scale_mat_from_sphere(center, radius)
    _write_views(out_dir, cams.names, images, masks)
    write_cameras_sphere(out_dir / "cameras_sphere.npz", cams.world_mats, scale_mat)
    report = read_report_if_any(sfm_dir / "report.json")
    photo_names = report.get("photos") or []
    if not photo_names and report.get("photos_dir"):
        photo_names = [p.name for p in list_photos(Path(report["photos_dir"]))]
    photo_index = {Path(p).stem: i for i, p in enumerate(photo_names)}
    meta = {
        "source": "sfm",
        "image_size": [cams.width, cams.height],
        "views": [
            {
                "name": n,
                "photo": photo_names[photo_index[n]] if n in photo_index else None,
                "photo_index": photo_index.get(n),
            }
            for n in cams.names
        ],
        "dropped": report.get("dropped", []),
        "scale_mat": scale_mat.tolist(),
        "units": scale_res.units,
        "frame": frame,
        "masks": mode,
        "masks_why": why,
        "sphere": {"center": center.tolist(), "radius": radius, "margin": margin},
        **info,
    }
    write_meta(out_dir, meta)
    log.info(
        "dataset: %d views, sphere centre %s radius %.4g %s (from %d object points)",
        len(cams.names),
        np.round(center, 4),
        radius,
        scale_res.units,
        len(seeds),
    )
    return meta
