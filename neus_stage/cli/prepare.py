"""The subcommands from the photos to the NeuS dataset and its object box: frames, sfm, masks, dataset,
visual-hull (each an ``_add_*`` that adds its parser and the ``_run_*`` it calls)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import StageError
from . import _command, _given, _setting

# ------------------------------------------------------------------------------------------- frames
_FRAMES = "neus_stage.video:extract_frames"


def _add_frames(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "frames", "a video of the object -> its sharp, distinct frames (NNNNN.jpg, report.json)")
    p.add_argument("--video", type=Path, required=True, help="video file (mp4, mov, mkv, avi, ...)")
    p.add_argument("--out", type=Path, required=True, help="folder for the kept frames and report.json")
    _setting(p, _FRAMES, "--target", type=int, help="frames to keep, spread over the camera's motion")
    _setting(
        p,
        _FRAMES,
        "--min",
        dest="min_frames",
        type=int,
        help="stop when fewer usable (sharp, distinct) frames than this remain",
    )
    _setting(
        p,
        _FRAMES,
        "--blur-ratio",
        type=float,
        help="drop a frame whose sharpness is below this share of the sharp frames around it",
    )
    _setting(
        p,
        _FRAMES,
        "--min-motion",
        type=float,
        help="drop a frame that moved less than this share of the picture's diagonal since the last "
        "kept one (a near-duplicate)",
    )
    p.set_defaults(func=_run_frames)


def _run_frames(args: argparse.Namespace) -> None:
    from ..video import extract_frames

    extract_frames(args.video, args.out, **_given(args, extract_frames))


# ---------------------------------------------------------------------------------------------- sfm
_SFM = "neus_stage.sfm:run_sfm"


def _add_sfm(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sfm", "pose the photos with COLMAP (pycolmap) and undistort them")
    p.add_argument("--photos", type=Path, required=True, help="folder of photos of one object")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (database, sparse model, undistorted images, report.json)",
    )
    _setting(
        p,
        _SFM,
        "--matcher",
        choices=["auto", "exhaustive", "retrieval", "sequential", "spatial", "vocabtree"],
        help="feature matching; auto = exhaustive up to --exhaustive-max photos, retrieval above (each photo "
        "with its most similar ones by a bag of words learnt from the photos' own features)",
    )
    _setting(p, _SFM, "--exhaustive-max", type=int, help="largest photo count matched exhaustively by --matcher auto")
    _setting(p, _SFM, "--mapper", choices=["incremental", "global"], help="COLMAP mapper")
    _setting(
        p,
        _SFM,
        "--camera-model",
        help="COLMAP camera model shared by all photos (OPENCV recovers f, principal point and distortion)",
    )
    _setting(p, _SFM, "--min-registered", type=float, help="stop when fewer than this share of photos register")
    _setting(p, _SFM, "--max-image-size", type=int, help="photos are downscaled for feature extraction above this size")
    _setting(
        p,
        _SFM,
        "--max-size",
        type=int,
        help="working image size of every stage (long side, px): larger photos are downscaled once (0: full size)",
    )
    _setting(
        p, _SFM, "--max-features", type=int, help="SIFT features kept per photo (matching time grows with their square)"
    )
    _setting(
        p,
        _SFM,
        "--first-octave",
        type=int,
        choices=[-1, 0],
        help="where SIFT's scale space starts: -1 the image doubled, 0 its own scale (faster, less accurate)",
    )
    _setting(p, _SFM, "--threads", type=int, help="CPU threads (-1: all)")
    p.set_defaults(func=_run_sfm)


def _run_sfm(args: argparse.Namespace) -> None:
    from ..sfm import run_sfm

    run_sfm(args.photos, args.out, **_given(args, run_sfm))


# -------------------------------------------------------------------------------------------- masks
_MASKS = "neus_stage.masks:compute_masks"


def _add_masks(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "masks", "foreground masks with rembg (or the user's masks), made consistent across views")
    p.add_argument("--images", type=Path, required=True, help="folder of (undistorted) images to mask")
    p.add_argument("--out", type=Path, required=True, help="output folder for <stem>.png masks and report.json")
    _setting(p, _MASKS, "--model", help="rembg model name whose .onnx file is installed (see `neus-stage doctor`)")
    _setting(p, _MASKS, "--user-masks", type=Path, help="use these masks instead of rembg (one <stem>.png per photo)")
    _setting(
        p,
        _MASKS,
        "--sfm",
        dest="sfm_dir",
        type=Path,
        help="sfm folder: cameras used to make masks consistent across views",
    )
    _setting(
        p,
        _MASKS,
        "--cameras",
        type=Path,
        help="a NeuS cameras_sphere.npz for --images (poses = reference): cameras for the multi-view repair",
    )
    _setting(p, _MASKS, "--threshold", type=float, help="foreground probability threshold")
    _setting(
        p,
        _MASKS,
        "--mode",
        choices=["auto", "rembg", "geometry", "user", "none"],
        help="auto: the user's masks, else rembg where consistent across views, else geometry-seeded or fused "
        "masks, else none (training then models the background); the others force one source",
    )
    _setting(
        p,
        _MASKS,
        "--no-multiview",
        dest="multiview",
        action="store_false",
        help="take the masks as they are: no check or repair against the views' voting hull",
    )
    p.set_defaults(func=_run_masks)


def _run_masks(args: argparse.Namespace) -> None:
    from ..masks import compute_masks

    compute_masks(args.images, args.out, **_given(args, compute_masks))


# ------------------------------------------------------------------------------------------ dataset
_DATASET = "neus_stage.dataset:build_dataset_from_sfm"
_SCALE = "neus_stage.scale:ScaleSettings"


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "dataset", "write the NeuS dataset (image/, mask/, cameras_sphere.npz)")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--masks", type=Path, required=True, help="folder of <stem>.png masks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sfm", type=Path, help="sfm folder (poses from COLMAP)")
    src.add_argument(
        "--reference-cameras", type=Path, help="a NeuS cameras_sphere.npz for --photos (poses = reference)"
    )
    p.add_argument("--photos", type=Path, help="photo folder, with --reference-cameras")
    _setting(p, _DATASET, "--margin", type=float, help="extra radius around the object in the unit sphere (share)")
    _setting(
        p,
        _SCALE,
        "--marker-length",
        type=float,
        help="side of an ArUco marker's black square lying in the scene, in metres (0: no marker); with --sfm",
    )
    _setting(p, _SCALE, "--marker-dictionary", help="OpenCV ArUco dictionary of the marker")
    _setting(p, _SCALE, "--marker-ids", help="only these marker ids, comma separated (default: any)")
    _setting(p, _SCALE, "--scale-factor", dest="factor", type=float, help="metres per SfM unit, where known (0: none)")
    _setting(
        p,
        _SCALE,
        "--known-length",
        nargs=3,
        metavar=("ID_A", "ID_B", "METRES"),
        help="the distance in metres between two SfM points (their ids in sfm/undistorted/sparse)",
    )
    p.set_defaults(func=_run_dataset)


def _scale_settings(args: argparse.Namespace):
    from ..scale import ScaleSettings

    given = _given(args, ScaleSettings)
    try:
        if "marker_ids" in given:
            given["marker_ids"] = tuple(int(x) for x in given["marker_ids"].split(",") if x.strip())
        if "known_length" in given:
            id_a, id_b, metres = given["known_length"]
            given["known_length"] = (int(id_a), int(id_b), float(metres))
    except ValueError as exc:
        raise StageError(
            f"--marker-ids / --known-length: not numbers ({exc}); give ids as integers and the length in metres"
        ) from exc
    return ScaleSettings(**given)


def _run_dataset(args: argparse.Namespace) -> None:
    from ..dataset import build_dataset_from_reference, build_dataset_from_sfm

    if args.sfm is not None:
        build_dataset_from_sfm(
            args.sfm, args.masks, args.out, scale=_scale_settings(args), **_given(args, build_dataset_from_sfm)
        )
    else:
        if args.photos is None:
            raise StageError("--reference-cameras needs --photos (the photos the cameras belong to)")
        build_dataset_from_reference(args.photos, args.reference_cameras, args.masks, args.out)


# --------------------------------------------------------------------------------------------- hull
_HULL = "neus_stage.hull:carve_visual_hull"


def _add_hull(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "visual-hull", "carve the visual hull: object box (bbox.json) and occupancy grid (hull.npz)")
    p.add_argument("--dataset", type=Path, required=True, help="NeuS dataset folder")
    p.add_argument("--bbox", type=Path, required=True, help="bbox.json to write")
    p.add_argument("--hull", type=Path, required=True, help="hull.npz to write")
    _setting(p, _HULL, "--resolution", type=int, help="voxels per axis of the hull grid")
    _setting(
        p,
        _HULL,
        "--max-background-votes",
        type=int,
        help="a voxel stays occupied while at most this many views that see it call it background",
    )
    _setting(
        p,
        _HULL,
        "--support",
        choices=["cut", "record", "off"],
        help="support plane under the object: cut = find it and bound the hull by it, record = find and record "
        "it only, off = no search",
    )
    _setting(
        p,
        _HULL,
        "--sparse",
        dest="sparse_dir",
        type=Path,
        help="SfM model whose points hold the support plane (poses = sfm); without it, points are triangulated "
        "from the dataset's images with its cameras held fixed",
    )
    p.set_defaults(func=_run_hull)


def _run_hull(args: argparse.Namespace) -> None:
    from ..hull import carve_visual_hull

    carve_visual_hull(args.dataset, args.bbox, args.hull, **_given(args, carve_visual_hull))


COMMANDS = (_add_frames, _add_sfm, _add_masks, _add_dataset, _add_hull)
