"""The ``neus-stage`` command: one thin subcommand per workflow stage, each calling plain package functions.

Every subcommand logs to stderr (the workflow redirects it to the rule's log) and turns a StageError,
or an OSError such as a read-only or full disk, into a one-line message and exit status 2, never a
traceback (``-v`` logs the traceback of an OSError).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from .errors import StageError
from .logs import report_error, setup_logging

log = logging.getLogger("neus_stage")


def _path(s: str) -> Path:
    return Path(s)


# ------------------------------------------------------------------------------------------- frames
def _add_frames(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frames", help="a video of the object -> its sharp, distinct frames (NNNNN.jpg, report.json)")
    p.add_argument("--video", type=_path, required=True, help="video file (mp4, mov, mkv, avi, ...)")
    p.add_argument("--out", type=_path, required=True, help="folder for the kept frames and report.json")
    p.add_argument("--target", type=int, default=80, help="frames to keep, spread over the camera's motion")
    p.add_argument("--min", dest="min_frames", type=int, default=20,
                   help="stop when fewer usable (sharp, distinct) frames than this remain")
    p.add_argument("--blur-ratio", type=float, default=0.5,
                   help="drop a frame whose sharpness is below this share of the sharp frames around it")
    p.add_argument("--min-motion", type=float, default=0.002,
                   help="drop a frame that moved less than this share of the picture's diagonal since the last "
                   "kept one (a near-duplicate)")
    p.set_defaults(func=_run_frames)


def _run_frames(a: argparse.Namespace) -> None:
    from .video import extract_frames

    extract_frames(a.video, a.out, target=a.target, min_frames=a.min_frames, blur_ratio=a.blur_ratio,
                   min_motion=a.min_motion)


# ---------------------------------------------------------------------------------------------- sfm
def _add_sfm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sfm", help="pose the photos with COLMAP (pycolmap) and undistort them")
    p.add_argument("--photos", type=_path, required=True, help="folder of photos of one object")
    p.add_argument(
        "--out",
        type=_path,
        required=True,
        help="output folder (database, sparse model, undistorted images, report.json)",
    )
    p.add_argument(
        "--matcher",
        default="auto",
        choices=["auto", "exhaustive", "retrieval", "sequential", "spatial", "vocabtree"],
        help="feature matching; auto = exhaustive up to --exhaustive-max photos, retrieval above (each photo "
        "with its most similar ones by a bag of words learnt from the photos' own features)",
    )
    p.add_argument(
        "--exhaustive-max", type=int, default=40, help="largest photo count matched exhaustively by --matcher auto"
    )
    p.add_argument("--mapper", default="incremental", choices=["incremental", "global"], help="COLMAP mapper")
    p.add_argument(
        "--camera-model",
        default="OPENCV",
        help="COLMAP camera model shared by all photos (OPENCV recovers f, principal point and distortion)",
    )
    p.add_argument(
        "--min-registered", type=float, default=0.8, help="stop when fewer than this share of photos register"
    )
    p.add_argument(
        "--max-image-size", type=int, default=3200, help="photos are downscaled for feature extraction above this size"
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=1600,
        help="working image size of every stage (long side, px): larger photos are downscaled once (0: full size)",
    )
    p.add_argument("--threads", type=int, default=-1, help="CPU threads (-1: all)")
    p.set_defaults(func=_run_sfm)


def _run_sfm(a: argparse.Namespace) -> None:
    from .sfm import run_sfm

    run_sfm(
        a.photos,
        a.out,
        matcher=a.matcher,
        exhaustive_max=a.exhaustive_max,
        mapper=a.mapper,
        camera_model=a.camera_model,
        min_registered=a.min_registered,
        max_image_size=a.max_image_size,
        max_size=a.max_size,
        threads=a.threads,
    )


# -------------------------------------------------------------------------------------------- masks
def _add_masks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="foreground masks with rembg (or the user's masks), made consistent across views")
    p.add_argument("--images", type=_path, required=True, help="folder of (undistorted) images to mask")
    p.add_argument("--out", type=_path, required=True, help="output folder for <stem>.png masks and report.json")
    p.add_argument(
        "--model", default="u2netp", help="rembg model name whose .onnx file is installed (see `neus-stage doctor`)"
    )
    p.add_argument(
        "--user-masks", type=_path, default=None, help="use these masks instead of rembg (one <stem>.png per photo)"
    )
    p.add_argument(
        "--sfm", type=_path, default=None, help="sfm folder: cameras used to make masks consistent across views"
    )
    p.add_argument(
        "--cameras",
        type=_path,
        default=None,
        help="a NeuS cameras_sphere.npz for --images (poses = reference): cameras for the multi-view repair",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold")
    p.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "rembg", "geometry", "user", "none"],
        help="auto: the user's masks, else rembg where consistent across views, else geometry-seeded or fused "
        "masks, else none (training then models the background); the others force one source",
    )
    p.add_argument(
        "--no-multiview",
        dest="multiview",
        action="store_false",
        help="take the masks as they are: no check or repair against the views' voting hull",
    )
    p.set_defaults(func=_run_masks)


def _run_masks(a: argparse.Namespace) -> None:
    from .masks import compute_masks

    compute_masks(
        a.images,
        a.out,
        model=a.model,
        user_masks=a.user_masks,
        sfm_dir=a.sfm,
        cameras=a.cameras,
        threshold=a.threshold,
        mode=a.mode,
        multiview=a.multiview,
    )


# ------------------------------------------------------------------------------------------ dataset
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="write the NeuS dataset (image/, mask/, cameras_sphere.npz)")
    p.add_argument("--out", type=_path, required=True, help="dataset folder to write")
    p.add_argument("--masks", type=_path, required=True, help="folder of <stem>.png masks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sfm", type=_path, help="sfm folder (poses from COLMAP)")
    src.add_argument(
        "--reference-cameras", type=_path, help="a NeuS cameras_sphere.npz for --photos (poses = reference)"
    )
    p.add_argument("--photos", type=_path, default=None, help="photo folder, with --reference-cameras")
    p.add_argument(
        "--margin", type=float, default=0.1, help="extra radius around the object in the unit sphere (share)"
    )
    p.add_argument(
        "--marker-length", type=float, default=0.0,
        help="side of an ArUco marker's black square lying in the scene, in metres (0: no marker); with --sfm",
    )
    p.add_argument("--marker-dictionary", default="DICT_4X4_50", help="OpenCV ArUco dictionary of the marker")
    p.add_argument("--marker-ids", default="", help="only these marker ids, comma separated (default: any)")
    p.add_argument("--scale-factor", type=float, default=0.0, help="metres per SfM unit, where known (0: none)")
    p.add_argument(
        "--known-length", nargs=3, default=None, metavar=("ID_A", "ID_B", "METRES"),
        help="the distance in metres between two SfM points (their ids in sfm/undistorted/sparse)",
    )
    p.set_defaults(func=_run_dataset)


def _scale_settings(a: argparse.Namespace):
    from .scale import ScaleSettings

    try:
        ids = tuple(int(x) for x in a.marker_ids.split(",") if x.strip())
        known = None if a.known_length is None else (int(a.known_length[0]), int(a.known_length[1]),
                                                     float(a.known_length[2]))
    except ValueError as exc:
        raise StageError(f"--marker-ids / --known-length: not numbers ({exc}); give ids as integers and the "
                         "length in metres") from exc
    return ScaleSettings(marker_length=a.marker_length, marker_dictionary=a.marker_dictionary, marker_ids=ids,
                         factor=a.scale_factor, known_length=known)


def _run_dataset(a: argparse.Namespace) -> None:
    from .dataset import build_dataset_from_reference, build_dataset_from_sfm

    if a.sfm is not None:
        build_dataset_from_sfm(a.sfm, a.masks, a.out, margin=a.margin, scale=_scale_settings(a))
    else:
        if a.photos is None:
            raise StageError("--reference-cameras needs --photos (the photos the cameras belong to)")
        build_dataset_from_reference(a.photos, a.reference_cameras, a.masks, a.out)


# --------------------------------------------------------------------------------------------- hull
def _add_hull(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visual-hull", help="carve the visual hull: object box (bbox.json) and occupancy grid (hull.npz)"
    )
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder")
    p.add_argument("--bbox", type=_path, required=True, help="bbox.json to write")
    p.add_argument("--hull", type=_path, required=True, help="hull.npz to write")
    p.add_argument("--resolution", type=int, default=128, help="voxels per axis of the hull grid")
    p.add_argument(
        "--max-background-votes",
        type=int,
        default=1,
        help="a voxel stays occupied while at most this many views that see it call it background",
    )
    p.add_argument(
        "--support",
        default="cut",
        choices=["cut", "record", "off"],
        help="support plane under the object: cut = find it and bound the hull by it, record = find and record "
        "it only, off = no search",
    )
    p.add_argument(
        "--sparse",
        type=_path,
        default=None,
        help="SfM model whose points hold the support plane (poses = sfm); without it, points are triangulated "
        "from the dataset's images with its cameras held fixed",
    )
    p.set_defaults(func=_run_hull)


def _run_hull(a: argparse.Namespace) -> None:
    from .hull import carve_visual_hull

    carve_visual_hull(
        a.dataset,
        a.bbox,
        a.hull,
        resolution=a.resolution,
        max_background_votes=a.max_background_votes,
        support=a.support,
        sparse_dir=a.sparse,
    )


# -------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train NeuS (presets: neus = faithful, fast = hash grid on GPU, cpu = small)")
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder")
    p.add_argument("--hull", type=_path, default=None, help="hull.npz: initial occupancy grid (fast modes)")
    p.add_argument("--bbox", type=_path, default=None, help="bbox.json: object box in the normalised frame")
    p.add_argument("--out", type=_path, required=True, help="run folder: checkpoint.pt, config.yaml, renders, logs")
    p.add_argument("--preset", default="auto", help="neus | fast | cpu | auto (fast with CUDA, cpu otherwise)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config field (repeatable; unknown keys are errors)",
    )
    p.add_argument(
        "--config-json", default=None, help="overrides as one JSON object (the workflow passes its params this way)"
    )
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> None:
    from .train.config import parse_overrides, resolve_config
    from .train.trainer import train

    overrides = parse_overrides(a.overrides)
    if a.config_json:
        overrides = {**json.loads(a.config_json), **overrides}
    if not any((Path(a.dataset) / "mask").glob("*.png")) and "use_mask" not in overrides:
        # masks mode none (or a dataset without masks): train on whole images with the background modelled,
        # from NeuS's sphere rather than a hull (there is none)
        log.warning("%s has no masks: training with use_mask=false (the background is modelled) and "
                    "hull_prior=none", a.dataset)
        overrides = {"use_mask": False, "hull_prior": "none", **overrides}
        hull = None  # the visual-hull stage wrote the box only (no masks, no hull): train in bbox.json's box
    else:
        hull = a.hull
    cfg = resolve_config(a.preset, overrides)
    train(cfg, a.dataset, a.out, hull_path=hull, bbox_path=a.bbox)


# --------------------------------------------------------------------------------------------- mesh
def _add_mesh(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="marching cubes on the trained SDF: mesh.ply (world units) and mesh_clean.ply")
    p.add_argument("--checkpoint", type=_path, required=True, help="trained checkpoint.pt")
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder (scale_mat, masks for culling)")
    p.add_argument("--bbox", type=_path, required=True, help="bbox.json (the box to extract)")
    p.add_argument("--hull", type=_path, default=None, help="hull.npz: blocks outside it are skipped")
    p.add_argument("--out", type=_path, required=True, help="mesh to write (world units; .ply or .obj)")
    p.add_argument(
        "--clean", type=_path, default=None, help="clean mesh to write (cleaned, mask-culled; .ply or .obj)"
    )
    p.add_argument("--resolution", type=int, default=512, help="grid samples along the longest box side")
    p.add_argument("--block", type=int, default=128, help="block size for evaluating the SDF")
    p.add_argument(
        "--coarse",
        type=int,
        default=4,
        help="sample every COARSE-th point first and the full grid only near the surface (1: every sample)",
    )
    p.add_argument(
        "--dilation", type=int, default=12, help="mask dilation in pixels for culling (recorded in the output)"
    )
    p.add_argument(
        "--min-component",
        type=float,
        default=0.05,
        help="drop connected parts with fewer faces than this share of the largest",
    )
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument(
        "--cut-at-support",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the mesh where bbox.json says the object ends: a flat cap on the support plane, or (without a "
        "plane) the clean mesh without what no camera observes; --no-cut-at-support keeps the raw extent",
    )
    p.set_defaults(func=_run_mesh)


def _run_mesh(a: argparse.Namespace) -> None:
    from .mesh import mesh_from_checkpoint

    mesh_from_checkpoint(
        a.checkpoint,
        a.dataset,
        a.bbox,
        a.out,
        clean_path=a.clean,
        hull_path=a.hull,
        resolution=a.resolution,
        block=a.block,
        coarse=a.coarse,
        dilation=a.dilation,
        min_component=a.min_component,
        device=a.device,
        cut_at_support=a.cut_at_support,
    )


# ------------------------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the clean mesh as textured GLB and OBJ (decimated, UV-unwrapped, texture "
                       "baked from the photos)")
    p.add_argument("--mesh", type=_path, required=True, help="mesh to export (results/<scene>/mesh_clean.ply)")
    p.add_argument("--dataset", type=_path, required=True, help="the scene's NeuS dataset (photos, masks, cameras)")
    p.add_argument("--out", type=_path, required=True, help="folder for <name>.glb, .obj, .mtl, .png, export.json")
    p.add_argument("--name", default=None, help="file name stem (default: the mesh's folder name, the scene)")
    p.add_argument("--faces", type=int, default=200_000, help="decimate to this many faces (at least 1000)")
    p.add_argument("--texture-size", type=int, default=2048, help="texture side in texels (a power of two)")
    p.add_argument("--texture-from", default="photos", choices=["photos", "network"],
                   help="bake the texture from the photos, or from the trained colour network (--checkpoint)")
    p.add_argument("--checkpoint", type=_path, default=None, help="neus/checkpoint.pt, with --texture-from network")
    p.add_argument("--holdout-every", type=int, default=0,
                   help="leave every k-th view out of the texture and report their re-rendered PSNR (0: use all)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (the colour network)")
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> None:
    from .export import export_textured

    export_textured(a.mesh, a.dataset, a.out, name=a.name, faces=a.faces, texture_size=a.texture_size,
                    texture_from=a.texture_from, checkpoint=a.checkpoint, holdout_every=a.holdout_every,
                    device=a.device)


# ----------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Chamfer / F-score of a mesh: DTU protocol or against any ground truth")
    p.add_argument("--mesh", type=_path, required=True, help="mesh to score (.ply/.obj)")
    p.add_argument("--out", type=_path, required=True, help="eval.json to write")
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument("--gt", type=_path, help="ground-truth mesh or point cloud (generic Chamfer and F-score)")
    gt.add_argument("--dtu-root", type=_path, help="DTU evaluation root with ObsMask/ and Points/stl/")
    p.add_argument("--scan", type=int, default=None, help="DTU scan number, with --dtu-root")
    p.add_argument(
        "--dataset",
        type=_path,
        default=None,
        help="the scene's NeuS dataset: with --reference-cameras, map the mesh into the reference frame",
    )
    p.add_argument(
        "--reference-cameras",
        type=_path,
        default=None,
        help="reference cameras_sphere.npz: fit a similarity from the dataset's camera centres to these",
    )
    p.add_argument(
        "--icp",
        action="store_true",
        help="after the camera-centre similarity, refine the alignment by ICP with scaling against --gt",
    )
    p.add_argument(
        "--thresholds",
        default="",
        help="F-score thresholds, comma separated (default: 0.5%%,1%%,2%% of the GT box diagonal)",
    )
    p.add_argument(
        "--error-cloud", type=_path, default=None, help="write the mesh samples coloured by error to this .ply"
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a: argparse.Namespace) -> None:
    from .evaluate import evaluate_dtu, evaluate_generic
    from .frames import reference_alignment, refine_with_icp

    alignment = None
    if a.reference_cameras is not None:
        if a.dataset is None:
            raise StageError("--reference-cameras needs --dataset (the scene whose cameras are aligned)")
        alignment = reference_alignment(a.dataset, a.reference_cameras)
        alignment.details = {"method": "camera centres"}
        if a.icp:
            if a.gt is None:
                raise StageError("--icp needs --gt (a ground-truth surface to register against)")
            alignment = refine_with_icp(a.mesh, a.gt, alignment)
    thresholds = [float(x) for x in a.thresholds.split(",") if x.strip()] or None
    if a.dtu_root is not None:
        if a.scan is None:
            raise StageError("--dtu-root needs --scan (the DTU scan number, e.g. 65)")
        evaluate_dtu(a.mesh, a.dtu_root, a.scan, a.out, alignment=alignment)
    else:
        evaluate_generic(a.mesh, a.gt, a.out, alignment=alignment, thresholds=thresholds, error_cloud=a.error_cloud)


# -------------------------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render a test scene with known geometry: photos, masks, cameras, gt mesh")
    p.add_argument(
        "--out", type=_path, required=True, help="folder to write photos/, masks/, cameras_sphere.npz, gt.ply"
    )
    p.add_argument("--scene", default="mug", help="which object (see neus_stage.synth.SCENES)")
    p.add_argument("--views", type=int, default=30, help="number of photos")
    p.add_argument("--width", type=int, default=320, help="photo width in pixels")
    p.add_argument("--height", type=int, default=240, help="photo height in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (texture, camera jitter)")
    p.set_defaults(func=_run_synth)


def _run_synth(a: argparse.Namespace) -> None:
    from .synth import render_scene

    render_scene(a.out, scene=a.scene, n_views=a.views, width=a.width, height=a.height, seed=a.seed)


# ------------------------------------------------------------------------------------------- report
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page showing a scene's artifacts, stage by stage")
    p.add_argument("--scene-dir", type=_path, required=True, help="the scene's results folder (results/<scene>)")
    p.add_argument(
        "--benchmarks", type=_path, default=Path("benchmarks"), help="folder of <rule>/<scene>.tsv run times"
    )
    p.add_argument("--out", type=_path, default=None, help="HTML file to write (default: <scene-dir>/report.html)")
    p.add_argument(
        "--max-faces", type=int, default=20000, help="mesh previews are drawn from a mesh decimated to this size"
    )
    p.add_argument(
        "--quality", type=_path, default=None,
        help="also judge the scene without ground truth and write the verdict to this quality.json",
    )
    p.set_defaults(func=_run_report)


def _run_report(a: argparse.Namespace) -> None:
    from .report import build_report

    build_report(a.scene_dir, a.out, benchmarks_dir=a.benchmarks, max_faces=a.max_faces, quality_out=a.quality)


# ------------------------------------------------------------------------------------------ quality
def _add_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="judge a finished scene without ground truth: SfM points vs mesh, "
                       "held-out views, one-line verdict")
    p.add_argument("--scene-dir", type=_path, required=True, help="the scene's results folder (results/<scene>)")
    p.add_argument("--out", type=_path, default=None, help="quality.json to write (default: <scene-dir>/quality.json)")
    p.set_defaults(func=_run_quality)


def _run_quality(a: argparse.Namespace) -> None:
    from .quality import assess

    res = assess(a.scene_dir, a.out or Path(a.scene_dir) / "quality.json")
    print(f"quality: {res['line']}")


# ------------------------------------------------------------------------------------------- doctor
def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="what this machine has (CUDA, tinycudann, pycolmap, rembg models, SLURM)")
    p.set_defaults(func=_run_doctor)


def _run_doctor(a: argparse.Namespace) -> None:
    from .doctor import doctor

    print(doctor())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neus-stage", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the full log to FILE and show only progress, warnings and errors on the terminal "
        "(how the workflow's rules call every command)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_frames,
        _add_sfm,
        _add_masks,
        _add_dataset,
        _add_hull,
        _add_train,
        _add_mesh,
        _add_export,
        _add_evaluate,
        _add_synth,
        _add_report,
        _add_quality,
        _add_doctor,
    ):
        add(sub)
    return parser


# what to do about the OSErrors a user can fix; the stage is simply run again afterwards (it starts over)
_WHERE = "choose a results folder on a writable disk with room (snakemake -d DIR, or this command's --out)"
_OS_ERROR_FIXES = {
    errno.EACCES: f"no permission to write there: make the folder writable for this user (chmod/chown) or {_WHERE}",
    errno.EPERM: f"no permission to write there: make the folder writable for this user (chmod/chown) or {_WHERE}",
    errno.EROFS: f"the folder is on a read-only file system: {_WHERE}",
    errno.ENOSPC: f"the disk is full: free space there (df -h shows how much is left) or {_WHERE}",
    errno.EDQUOT: f"your disk quota is used up: free space (quota -s shows it) or {_WHERE}",
}
# the arguments naming what a command writes: where an error without a file name (a full disk) happened
_OUTPUT_ARGS = {"visual-hull": ("bbox", "hull")}
_DEFAULT_OUTPUT_ARGS = ("out", "clean", "error_cloud")


def os_error_message(exc: OSError, args: argparse.Namespace | None = None) -> str:
    """One line for an OSError: the path (the error's own, else the command's outputs), the cause, the fix."""
    path = exc.filename
    if path is None and args is not None:
        names = _OUTPUT_ARGS.get(getattr(args, "command", None), _DEFAULT_OUTPUT_ARGS)
        path = ", ".join(str(getattr(args, a)) for a in names if getattr(args, a, None) is not None) or None
    cause = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_ERROR_FIXES.get(exc.errno, "check this path and its disk, then run the command again")
    where = f"{path}: " if path is not None else "writing the results: "
    return " ".join(f"{where}{cause}; {fix}".split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log)
    status = 2
    try:
        args.func(args)
    except StageError as exc:
        message = str(exc)
    except OSError as exc:  # a read-only or full disk, a folder without write permission: no traceback
        log.debug("traceback of the error below", exc_info=True)
        message = os_error_message(exc, args)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; the stage starts over when run again
        log.debug("traceback of the interruption", exc_info=True)
        message = "interrupted (Ctrl-C); this stage's outputs are incomplete: run the same command again to redo it"
        status = 130
    else:
        return 0
    report_error(f"neus-stage {args.command}: error: {message}")
    return status


if __name__ == "__main__":
    sys.exit(main())
