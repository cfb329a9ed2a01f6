"""The ``neus-stage`` command: one thin subcommand per workflow stage, each calling plain package functions.

Every subcommand logs to stderr (the workflow redirects it to the rule's log) and turns a StageError,
or an OSError such as a read-only or full disk, into a one-line message and exit status 2, never a
traceback (``-v`` logs the traceback of an OSError).

A stage setting's default lives in one place, the signature of the package function it feeds: each such
option is added by :func:`_setting` with ``default=argparse.SUPPRESS`` (an option not given is not passed,
so the function's own default applies), ``--help`` shows that default read from the signature
(:class:`_HelpFormatter`; the function's module is imported only when the help is formatted) and each
``_run_*`` passes the options given as keyword arguments (:func:`_given`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import json
import logging
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from .errors import StageError
from .logs import report_error, setup_logging

log = logging.getLogger("neus_stage")


def _path(s: str) -> Path:
    return Path(s)


# ------------------------------------------------------------------------------------- settings
@cache
def _feeds_function(feeds: str) -> Callable:
    """The function (or class) named by ``"module:name"``, e.g. ``"neus_stage.masks:compute_masks"``."""
    module, name = feeds.split(":")
    return getattr(importlib.import_module(module), name)


def _setting(p: argparse.ArgumentParser, feeds: str, *flags: str, **kwargs: Any) -> argparse.Action:
    """Add an optional setting for the parameter ``dest`` of the package function ``feeds`` ("module:name";
    ``dest=`` names the parameter where the flag differs).

    It has no default of its own (an option not given is left out of the namespace, so the function's
    default applies); ``--help`` shows the function's default. Nothing is imported here."""
    action = p.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
    action.feeds = feeds
    if action.nargs != 0 and action.metavar is None:  # named after the flag, not the parameter (--sfm SFM)
        action.metavar = flags[-1].lstrip("-").replace("-", "_").upper()
    return action


def setting_default(action: argparse.Action) -> Any:
    """The default of the function parameter a :func:`_setting` option feeds (``inspect.Parameter.empty``
    where the parameter has none)."""
    param = inspect.signature(_feeds_function(action.feeds)).parameters.get(action.dest)
    return inspect.Parameter.empty if param is None else param.default


class _HelpFormatter(argparse.HelpFormatter):
    """Each setting's help ends with its effective default, read from the signature of the function it feeds;
    a help text that says its default itself (what the function does without it) is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if getattr(action, "feeds", None) is None or "(default:" in text:
            return text
        try:
            default = setting_default(action)
        except ImportError:  # a missing optional dependency: the help without the default
            return text
        if default is inspect.Parameter.empty:
            return text
        shown = f"{action.dest}={default}" if action.nargs == 0 else f"{default}"  # a flag: which value it sets
        return f"{text} (default: {shown.replace('%', '%%')})"


def _command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, formatter_class=_HelpFormatter)


def _given(a: argparse.Namespace, func: Callable) -> dict[str, Any]:
    """The settings given on the command line for ``func``: the namespace's entries named like one of its
    parameters with a default (settings not given are absent from the namespace: ``func``'s defaults apply)."""
    params = inspect.signature(func).parameters
    return {k: v for k, v in vars(a).items()
            if k in params and params[k].default is not inspect.Parameter.empty}


# ------------------------------------------------------------------------------------------- frames
_FRAMES = "neus_stage.video:extract_frames"


def _add_frames(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "frames", "a video of the object -> its sharp, distinct frames (NNNNN.jpg, report.json)")
    p.add_argument("--video", type=_path, required=True, help="video file (mp4, mov, mkv, avi, ...)")
    p.add_argument("--out", type=_path, required=True, help="folder for the kept frames and report.json")
    _setting(p, _FRAMES, "--target", type=int, help="frames to keep, spread over the camera's motion")
    _setting(p, _FRAMES, "--min", dest="min_frames", type=int,
             help="stop when fewer usable (sharp, distinct) frames than this remain")
    _setting(p, _FRAMES, "--blur-ratio", type=float,
             help="drop a frame whose sharpness is below this share of the sharp frames around it")
    _setting(p, _FRAMES, "--min-motion", type=float,
             help="drop a frame that moved less than this share of the picture's diagonal since the last "
             "kept one (a near-duplicate)")
    p.set_defaults(func=_run_frames)


def _run_frames(a: argparse.Namespace) -> None:
    from .video import extract_frames

    extract_frames(a.video, a.out, **_given(a, extract_frames))


# ---------------------------------------------------------------------------------------------- sfm
_SFM = "neus_stage.sfm:run_sfm"


def _add_sfm(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sfm", "pose the photos with COLMAP (pycolmap) and undistort them")
    p.add_argument("--photos", type=_path, required=True, help="folder of photos of one object")
    p.add_argument(
        "--out",
        type=_path,
        required=True,
        help="output folder (database, sparse model, undistorted images, report.json)",
    )
    _setting(
        p, _SFM, "--matcher",
        choices=["auto", "exhaustive", "retrieval", "sequential", "spatial", "vocabtree"],
        help="feature matching; auto = exhaustive up to --exhaustive-max photos, retrieval above (each photo "
        "with its most similar ones by a bag of words learnt from the photos' own features)",
    )
    _setting(p, _SFM, "--exhaustive-max", type=int, help="largest photo count matched exhaustively by --matcher auto")
    _setting(p, _SFM, "--mapper", choices=["incremental", "global"], help="COLMAP mapper")
    _setting(
        p, _SFM, "--camera-model",
        help="COLMAP camera model shared by all photos (OPENCV recovers f, principal point and distortion)",
    )
    _setting(p, _SFM, "--min-registered", type=float, help="stop when fewer than this share of photos register")
    _setting(
        p, _SFM, "--max-image-size", type=int, help="photos are downscaled for feature extraction above this size"
    )
    _setting(
        p, _SFM, "--max-size", type=int,
        help="working image size of every stage (long side, px): larger photos are downscaled once (0: full size)",
    )
    _setting(p, _SFM, "--max-features", type=int,
             help="SIFT features kept per photo (matching time grows with their square)")
    _setting(p, _SFM, "--threads", type=int, help="CPU threads (-1: all)")
    p.set_defaults(func=_run_sfm)


def _run_sfm(a: argparse.Namespace) -> None:
    from .sfm import run_sfm

    run_sfm(a.photos, a.out, **_given(a, run_sfm))


# -------------------------------------------------------------------------------------------- masks
_MASKS = "neus_stage.masks:compute_masks"


def _add_masks(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "masks", "foreground masks with rembg (or the user's masks), made consistent across views")
    p.add_argument("--images", type=_path, required=True, help="folder of (undistorted) images to mask")
    p.add_argument("--out", type=_path, required=True, help="output folder for <stem>.png masks and report.json")
    _setting(
        p, _MASKS, "--model", help="rembg model name whose .onnx file is installed (see `neus-stage doctor`)"
    )
    _setting(
        p, _MASKS, "--user-masks", type=_path, help="use these masks instead of rembg (one <stem>.png per photo)"
    )
    _setting(
        p, _MASKS, "--sfm", dest="sfm_dir", type=_path,
        help="sfm folder: cameras used to make masks consistent across views",
    )
    _setting(
        p, _MASKS, "--cameras", type=_path,
        help="a NeuS cameras_sphere.npz for --images (poses = reference): cameras for the multi-view repair",
    )
    _setting(p, _MASKS, "--threshold", type=float, help="foreground probability threshold")
    _setting(
        p, _MASKS, "--mode",
        choices=["auto", "rembg", "geometry", "user", "none"],
        help="auto: the user's masks, else rembg where consistent across views, else geometry-seeded or fused "
        "masks, else none (training then models the background); the others force one source",
    )
    _setting(
        p, _MASKS, "--no-multiview",
        dest="multiview",
        action="store_false",
        help="take the masks as they are: no check or repair against the views' voting hull",
    )
    p.set_defaults(func=_run_masks)


def _run_masks(a: argparse.Namespace) -> None:
    from .masks import compute_masks

    compute_masks(a.images, a.out, **_given(a, compute_masks))


# ------------------------------------------------------------------------------------------ dataset
_DATASET = "neus_stage.dataset:build_dataset_from_sfm"
_SCALE = "neus_stage.scale:ScaleSettings"


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "dataset", "write the NeuS dataset (image/, mask/, cameras_sphere.npz)")
    p.add_argument("--out", type=_path, required=True, help="dataset folder to write")
    p.add_argument("--masks", type=_path, required=True, help="folder of <stem>.png masks")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sfm", type=_path, help="sfm folder (poses from COLMAP)")
    src.add_argument(
        "--reference-cameras", type=_path, help="a NeuS cameras_sphere.npz for --photos (poses = reference)"
    )
    p.add_argument("--photos", type=_path, help="photo folder, with --reference-cameras")
    _setting(
        p, _DATASET, "--margin", type=float, help="extra radius around the object in the unit sphere (share)"
    )
    _setting(
        p, _SCALE, "--marker-length", type=float,
        help="side of an ArUco marker's black square lying in the scene, in metres (0: no marker); with --sfm",
    )
    _setting(p, _SCALE, "--marker-dictionary", help="OpenCV ArUco dictionary of the marker")
    _setting(p, _SCALE, "--marker-ids", help="only these marker ids, comma separated (default: any)")
    _setting(p, _SCALE, "--scale-factor", dest="factor", type=float,
             help="metres per SfM unit, where known (0: none)")
    _setting(
        p, _SCALE, "--known-length", nargs=3, metavar=("ID_A", "ID_B", "METRES"),
        help="the distance in metres between two SfM points (their ids in sfm/undistorted/sparse)",
    )
    p.set_defaults(func=_run_dataset)


def _scale_settings(a: argparse.Namespace):
    from .scale import ScaleSettings

    given = _given(a, ScaleSettings)
    try:
        if "marker_ids" in given:
            given["marker_ids"] = tuple(int(x) for x in given["marker_ids"].split(",") if x.strip())
        if "known_length" in given:
            id_a, id_b, metres = given["known_length"]
            given["known_length"] = (int(id_a), int(id_b), float(metres))
    except ValueError as exc:
        raise StageError(f"--marker-ids / --known-length: not numbers ({exc}); give ids as integers and the "
                         "length in metres") from exc
    return ScaleSettings(**given)


def _run_dataset(a: argparse.Namespace) -> None:
    from .dataset import build_dataset_from_reference, build_dataset_from_sfm

    if a.sfm is not None:
        build_dataset_from_sfm(a.sfm, a.masks, a.out, scale=_scale_settings(a), **_given(a, build_dataset_from_sfm))
    else:
        if a.photos is None:
            raise StageError("--reference-cameras needs --photos (the photos the cameras belong to)")
        build_dataset_from_reference(a.photos, a.reference_cameras, a.masks, a.out)


# --------------------------------------------------------------------------------------------- hull
_HULL = "neus_stage.hull:carve_visual_hull"


def _add_hull(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "visual-hull", "carve the visual hull: object box (bbox.json) and occupancy grid (hull.npz)")
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder")
    p.add_argument("--bbox", type=_path, required=True, help="bbox.json to write")
    p.add_argument("--hull", type=_path, required=True, help="hull.npz to write")
    _setting(p, _HULL, "--resolution", type=int, help="voxels per axis of the hull grid")
    _setting(
        p, _HULL, "--max-background-votes",
        type=int,
        help="a voxel stays occupied while at most this many views that see it call it background",
    )
    _setting(
        p, _HULL, "--support",
        choices=["cut", "record", "off"],
        help="support plane under the object: cut = find it and bound the hull by it, record = find and record "
        "it only, off = no search",
    )
    _setting(
        p, _HULL, "--sparse",
        dest="sparse_dir",
        type=_path,
        help="SfM model whose points hold the support plane (poses = sfm); without it, points are triangulated "
        "from the dataset's images with its cameras held fixed",
    )
    p.set_defaults(func=_run_hull)


def _run_hull(a: argparse.Namespace) -> None:
    from .hull import carve_visual_hull

    carve_visual_hull(a.dataset, a.bbox, a.hull, **_given(a, carve_visual_hull))


# -------------------------------------------------------------------------------------------- train
_TRAIN = "neus_stage.train.trainer:train"


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "train", "train NeuS (presets: neus = faithful, fast = hash grid on GPU, cpu = small)")
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder")
    _setting(p, _TRAIN, "--hull", dest="hull_path", type=_path,
             help="hull.npz: initial occupancy grid (fast modes)")
    _setting(p, _TRAIN, "--bbox", dest="bbox_path", type=_path,
             help="bbox.json: object box in the normalised frame")
    p.add_argument("--out", type=_path, required=True, help="run folder: checkpoint.pt, config.yaml, renders, logs")
    _setting(p, "neus_stage.train.config:resolve_config", "--preset",
             help="neus | fast | cpu | auto (fast with CUDA, cpu otherwise)")
    p.add_argument(
        "--set",
        dest="set_fields",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config field (repeatable; unknown keys are errors)",
    )
    p.add_argument("--config-json", help="overrides as one JSON object (the workflow passes its params this way)")
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> None:
    from .artifacts.dataset import mask_files
    from .train.config import parse_overrides, resolve_config
    from .train.trainer import train

    overrides = parse_overrides(a.set_fields)
    if a.config_json:
        overrides = {**json.loads(a.config_json), **overrides}
    paths = _given(a, train)
    if not mask_files(a.dataset) and "use_mask" not in overrides:
        # masks mode none (or a dataset without masks): train on whole images with the background modelled,
        # from NeuS's sphere rather than a hull (there is none)
        log.warning("%s has no masks: training with use_mask=false (the background is modelled) and "
                    "hull_prior=none", a.dataset)
        overrides = {"use_mask": False, "hull_prior": "none", **overrides}
        # the visual-hull stage wrote the box only (no masks, no hull): train in bbox.json's box
        paths.pop("hull_path", None)
    cfg = resolve_config(overrides=overrides, **_given(a, resolve_config))
    train(cfg, a.dataset, a.out, **paths)


# --------------------------------------------------------------------------------------------- mesh
_MESH = "neus_stage.mesh:mesh_from_checkpoint"


def _add_mesh(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "mesh", "marching cubes on the trained SDF: mesh.ply (world units) and mesh_clean.ply")
    p.add_argument("--checkpoint", type=_path, required=True, help="trained checkpoint.pt")
    p.add_argument("--dataset", type=_path, required=True, help="NeuS dataset folder (scale_mat, masks for culling)")
    p.add_argument("--bbox", type=_path, required=True, help="bbox.json (the box to extract)")
    _setting(p, _MESH, "--hull", dest="hull_path", type=_path, help="hull.npz: blocks outside it are skipped")
    p.add_argument("--out", type=_path, required=True, help="mesh to write (world units; .ply or .obj)")
    _setting(
        p, _MESH, "--clean", dest="clean_path", type=_path,
        help="clean mesh to write (cleaned, mask-culled; .ply or .obj)",
    )
    _setting(p, _MESH, "--resolution", type=int, help="grid samples along the longest box side")
    _setting(p, _MESH, "--block", type=int, help="block size for evaluating the SDF")
    _setting(
        p, _MESH, "--coarse",
        type=int,
        help="sample every COARSE-th point first and the full grid only near the surface (1: every sample)",
    )
    _setting(
        p, _MESH, "--dilation", type=int, help="mask dilation in pixels for culling (recorded in the output)"
    )
    _setting(
        p, _MESH, "--min-component",
        type=float,
        help="drop connected parts with fewer faces than this share of the largest",
    )
    _setting(p, _MESH, "--device", help="cpu | cuda | auto")
    _setting(
        p, _MESH, "--cut-at-support",
        action=argparse.BooleanOptionalAction,
        help="end the mesh where bbox.json says the object ends: a flat cap on the support plane, or (without a "
        "plane) the clean mesh without what no camera observes; --no-cut-at-support keeps the raw extent",
    )
    p.set_defaults(func=_run_mesh)


def _run_mesh(a: argparse.Namespace) -> None:
    from .mesh import mesh_from_checkpoint

    mesh_from_checkpoint(a.checkpoint, a.dataset, a.bbox, a.out, **_given(a, mesh_from_checkpoint))


# ------------------------------------------------------------------------------------------- export
_EXPORT = "neus_stage.export:export_textured"


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "export", "the clean mesh as textured GLB and OBJ (decimated, UV-unwrapped, texture "
                 "baked from the photos)")
    p.add_argument("--mesh", type=_path, required=True, help="mesh to export (results/<scene>/mesh_clean.ply)")
    p.add_argument("--dataset", type=_path, required=True, help="the scene's NeuS dataset (photos, masks, cameras)")
    p.add_argument("--out", type=_path, required=True, help="folder for <name>.glb, .obj, .mtl, .png, export.json")
    _setting(p, _EXPORT, "--name", help="file name stem (default: the mesh's folder name, the scene)")
    _setting(p, _EXPORT, "--faces", type=int, help="decimate to this many faces (at least 1000)")
    _setting(p, _EXPORT, "--texture-size", type=int, help="texture side in texels (a power of two)")
    _setting(p, _EXPORT, "--texture-from", choices=["photos", "network"],
             help="bake the texture from the photos, or from the trained colour network (--checkpoint)")
    _setting(p, _EXPORT, "--checkpoint", type=_path, help="neus/checkpoint.pt, with --texture-from network")
    _setting(p, _EXPORT, "--holdout-every", type=int,
             help="leave every k-th view out of the texture and report their re-rendered PSNR (0: use all)")
    _setting(p, _EXPORT, "--device", help="cpu | cuda | auto (the colour network)")
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> None:
    from .export import export_textured

    export_textured(a.mesh, a.dataset, a.out, **_given(a, export_textured))


# ----------------------------------------------------------------------------------------- evaluate
_EVALUATE = "neus_stage.evaluate:evaluate_generic"


def _thresholds(s: str) -> list[float] | None:
    try:
        return [float(x) for x in s.split(",") if x.strip()] or None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{s!r}: give numbers, comma separated (e.g. 0.5,1,2)") from exc


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "evaluate", "Chamfer / F-score of a mesh: DTU protocol or against any ground truth")
    p.add_argument("--mesh", type=_path, required=True, help="mesh to score (.ply/.obj)")
    p.add_argument("--out", type=_path, required=True, help="eval.json to write")
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument("--gt", type=_path, help="ground-truth mesh or point cloud (generic Chamfer and F-score)")
    gt.add_argument("--dtu-root", type=_path, help="DTU evaluation root with ObsMask/ and Points/stl/")
    p.add_argument("--scan", type=int, help="DTU scan number, with --dtu-root")
    p.add_argument(
        "--dataset",
        type=_path,
        help="the scene's NeuS dataset: with --reference-cameras, map the mesh into the reference frame",
    )
    p.add_argument(
        "--reference-cameras",
        type=_path,
        help="reference cameras_sphere.npz: fit a similarity from the dataset's camera centres to these",
    )
    p.add_argument(
        "--icp",
        action="store_true",
        default=argparse.SUPPRESS,
        help="after the camera-centre similarity, refine the alignment by ICP with scaling against --gt",
    )
    _setting(
        p, _EVALUATE, "--thresholds",
        type=_thresholds,
        help="F-score thresholds, comma separated (default: 0.5%%,1%%,2%% of the GT box diagonal)",
    )
    _setting(
        p, _EVALUATE, "--error-cloud", type=_path, help="write the mesh samples coloured by error to this .ply"
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
        if "icp" in a:  # --icp given
            if a.gt is None:
                raise StageError("--icp needs --gt (a ground-truth surface to register against)")
            alignment = refine_with_icp(a.mesh, a.gt, alignment)
    if a.dtu_root is not None:
        if a.scan is None:
            raise StageError("--dtu-root needs --scan (the DTU scan number, e.g. 65)")
        evaluate_dtu(a.mesh, a.dtu_root, a.scan, a.out, alignment=alignment)
    else:
        evaluate_generic(a.mesh, a.gt, a.out, alignment=alignment, **_given(a, evaluate_generic))


# -------------------------------------------------------------------------------------------- synth
_SYNTH = "neus_stage.synth:render_scene"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "synth", "render a test scene with known geometry: photos, masks, cameras, gt mesh")
    p.add_argument(
        "--out", type=_path, required=True, help="folder to write photos/, masks/, cameras_sphere.npz, gt.ply"
    )
    _setting(p, _SYNTH, "--scene", help="which object (see neus_stage.synth.SCENES)")
    _setting(p, _SYNTH, "--views", dest="n_views", type=int, help="number of photos")
    _setting(p, _SYNTH, "--width", type=int, help="photo width in pixels")
    _setting(p, _SYNTH, "--height", type=int, help="photo height in pixels")
    _setting(p, _SYNTH, "--seed", type=int, help="random seed (texture, camera jitter)")
    p.set_defaults(func=_run_synth)


def _run_synth(a: argparse.Namespace) -> None:
    from .synth import render_scene

    render_scene(a.out, **_given(a, render_scene))


# ------------------------------------------------------------------------------------------- report
_REPORT = "neus_stage.report:build_report"


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "report", "one self-contained HTML page showing a scene's artifacts, stage by stage")
    p.add_argument("--scene-dir", type=_path, required=True, help="the scene's results folder (results/<scene>)")
    _setting(
        p, _REPORT, "--benchmarks", dest="benchmarks_dir", type=_path,
        help="folder of <rule>/<scene>.tsv run times (the workflow writes benchmarks/; without it the report "
        "shows none)",
    )
    _setting(p, _REPORT, "--out", type=_path, help="HTML file to write (default: <scene-dir>/report.html)")
    _setting(
        p, _REPORT, "--max-faces", type=int, help="mesh previews are drawn from a mesh decimated to this size"
    )
    _setting(
        p, _REPORT, "--quality", dest="quality_out", type=_path,
        help="also judge the scene without ground truth and write the verdict to this quality.json",
    )
    p.set_defaults(func=_run_report)


def _run_report(a: argparse.Namespace) -> None:
    from .report import build_report

    build_report(a.scene_dir, **_given(a, build_report))


# ------------------------------------------------------------------------------------------ quality
def _add_quality(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "quality", "judge a finished scene without ground truth: SfM points vs mesh, "
                 "held-out views, one-line verdict")
    p.add_argument("--scene-dir", type=_path, required=True, help="the scene's results folder (results/<scene>)")
    p.add_argument("--out", type=_path, help="quality.json to write (default: <scene-dir>/quality.json)")
    p.set_defaults(func=_run_quality)


def _run_quality(a: argparse.Namespace) -> None:
    from .quality import assess

    res = assess(a.scene_dir, a.out or Path(a.scene_dir) / "quality.json")
    print(f"quality: {res['line']}")


# ------------------------------------------------------------------------------------------- doctor
def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "doctor", "what this machine has (CUDA, tinycudann, pycolmap, rembg models, SLURM)")
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
_DEFAULT_OUTPUT_ARGS = ("out", "clean_path", "error_cloud")


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
