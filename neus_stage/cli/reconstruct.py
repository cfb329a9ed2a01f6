"""The subcommands from the dataset to the results: train, mesh, export, evaluate; and the tools synth, report,
quality and doctor (each an ``_add_*`` that adds its parser and the ``_run_*`` it calls)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import StageError
from . import _command, _given, _setting

log = logging.getLogger("neus_stage")

# -------------------------------------------------------------------------------------------- train
_TRAIN = "neus_stage.train.trainer:train"


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "train", "train NeuS (presets: neus = faithful, fast = hash grid on GPU, cpu = small)")
    p.add_argument("--dataset", type=Path, required=True, help="NeuS dataset folder")
    _setting(p, _TRAIN, "--hull", dest="hull_path", type=Path, help="hull.npz: initial occupancy grid (fast modes)")
    _setting(p, _TRAIN, "--bbox", dest="bbox_path", type=Path, help="bbox.json: object box in the normalised frame")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.pt, config.yaml, renders, logs")
    _setting(
        p,
        "neus_stage.train.config:resolve_config",
        "--preset",
        help="neus | fast | cpu | auto (fast with CUDA, cpu otherwise)",
    )
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


def _run_train(args: argparse.Namespace) -> None:
    from ..artifacts.dataset import mask_files
    from ..train.config import parse_overrides, resolve_config
    from ..train.trainer import train

    overrides = parse_overrides(args.set_fields)
    if args.config_json:
        overrides = {**json.loads(args.config_json), **overrides}
    paths = _given(args, train)
    if not mask_files(args.dataset) and "use_mask" not in overrides:
        # masks mode none (or a dataset without masks): train on whole images with the background modelled,
        # from NeuS's sphere rather than a hull (there is none)
        log.warning(
            "%s has no masks: training with use_mask=false (the background is modelled) and hull_prior=none",
            args.dataset,
        )
        overrides = {"use_mask": False, "hull_prior": "none", **overrides}
        # the visual-hull stage wrote the box only (no masks, no hull): train in bbox.json's box
        paths.pop("hull_path", None)
    cfg = resolve_config(overrides=overrides, **_given(args, resolve_config))
    train(cfg, args.dataset, args.out, **paths)


# --------------------------------------------------------------------------------------------- mesh
_MESH = "neus_stage.mesh:mesh_from_checkpoint"


def _add_mesh(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "mesh", "marching cubes on the trained SDF: mesh.ply (world units) and mesh_clean.ply")
    p.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint.pt")
    p.add_argument("--dataset", type=Path, required=True, help="NeuS dataset folder (scale_mat, masks for culling)")
    p.add_argument("--bbox", type=Path, required=True, help="bbox.json (the box to extract)")
    _setting(p, _MESH, "--hull", dest="hull_path", type=Path, help="hull.npz: blocks outside it are skipped")
    p.add_argument("--out", type=Path, required=True, help="mesh to write (world units; .ply or .obj)")
    _setting(
        p,
        _MESH,
        "--clean",
        dest="clean_path",
        type=Path,
        help="clean mesh to write (cleaned, mask-culled; .ply or .obj)",
    )
    _setting(p, _MESH, "--resolution", type=int, help="grid samples along the longest box side")
    _setting(p, _MESH, "--block", type=int, help="block size for evaluating the SDF")
    _setting(
        p,
        _MESH,
        "--coarse",
        type=int,
        help="sample every COARSE-th point first and the full grid only near the surface (1: every sample)",
    )
    _setting(p, _MESH, "--dilation", type=int, help="mask dilation in pixels for culling (recorded in the output)")
    _setting(
        p,
        _MESH,
        "--min-component",
        type=float,
        help="drop connected parts with fewer faces than this share of the largest",
    )
    _setting(p, _MESH, "--device", help="cpu | cuda | auto")
    _setting(
        p,
        _MESH,
        "--cut-at-support",
        action=argparse.BooleanOptionalAction,
        help="end the mesh where bbox.json says the object ends: a flat cap on the support plane, or (without a "
        "plane) the clean mesh without what no camera observes; --no-cut-at-support keeps the raw extent",
    )
    p.set_defaults(func=_run_mesh)


def _run_mesh(args: argparse.Namespace) -> None:
    from ..mesh import mesh_from_checkpoint

    mesh_from_checkpoint(args.checkpoint, args.dataset, args.bbox, args.out, **_given(args, mesh_from_checkpoint))


# ------------------------------------------------------------------------------------------- export
_EXPORT = "neus_stage.export:export_textured"


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "export", "the clean mesh as textured GLB and OBJ (decimated, UV-unwrapped, texture baked from the photos)"
    )
    p.add_argument("--mesh", type=Path, required=True, help="mesh to export (results/<scene>/mesh_clean.ply)")
    p.add_argument("--dataset", type=Path, required=True, help="the scene's NeuS dataset (photos, masks, cameras)")
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.glb, .obj, .mtl, .png, export.json")
    _setting(p, _EXPORT, "--name", help="file name stem (default: the mesh's folder name, the scene)")
    _setting(p, _EXPORT, "--faces", type=int, help="decimate to this many faces (at least 1000)")
    _setting(p, _EXPORT, "--texture-size", type=int, help="texture side in texels (a power of two)")
    _setting(
        p,
        _EXPORT,
        "--texture-from",
        choices=["photos", "network"],
        help="bake the texture from the photos, or from the trained colour network (--checkpoint)",
    )
    _setting(p, _EXPORT, "--checkpoint", type=Path, help="neus/checkpoint.pt, with --texture-from network")
    _setting(
        p,
        _EXPORT,
        "--holdout-every",
        type=int,
        help="leave every k-th view out of the texture and report their re-rendered PSNR (0: use all)",
    )
    _setting(p, _EXPORT, "--device", help="cpu | cuda | auto (the colour network)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from ..export import export_textured

    export_textured(args.mesh, args.dataset, args.out, **_given(args, export_textured))


# ----------------------------------------------------------------------------------------- evaluate
_EVALUATE = "neus_stage.evaluate:evaluate_generic"


def _thresholds(s: str) -> list[float] | None:
    try:
        return [float(x) for x in s.split(",") if x.strip()] or None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{s!r}: give numbers, comma separated (e.g. 0.5,1,2)") from exc


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "evaluate", "Chamfer / F-score of a mesh: DTU protocol or against any ground truth")
    p.add_argument("--mesh", type=Path, required=True, help="mesh to score (.ply/.obj)")
    p.add_argument("--out", type=Path, required=True, help="eval.json to write")
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument("--gt", type=Path, help="ground-truth mesh or point cloud (generic Chamfer and F-score)")
    gt.add_argument("--dtu-root", type=Path, help="DTU evaluation root with ObsMask/ and Points/stl/")
    p.add_argument("--scan", type=int, help="DTU scan number, with --dtu-root")
    p.add_argument(
        "--dataset",
        type=Path,
        help="the scene's NeuS dataset: with --reference-cameras, map the mesh into the reference frame",
    )
    p.add_argument(
        "--reference-cameras",
        type=Path,
        help="reference cameras_sphere.npz: fit a similarity from the dataset's camera centres to these",
    )
    p.add_argument(
        "--icp",
        action="store_true",
        default=argparse.SUPPRESS,
        help="after the camera-centre similarity, refine the alignment by ICP with scaling against --gt",
    )
    _setting(
        p,
        _EVALUATE,
        "--thresholds",
        type=_thresholds,
        help="F-score thresholds, comma separated (default: 0.5%%,1%%,2%% of the GT box diagonal)",
    )
    _setting(p, _EVALUATE, "--error-cloud", type=Path, help="write the mesh samples coloured by error to this .ply")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate_dtu, evaluate_generic
    from ..frames import reference_alignment, refine_with_icp

    alignment = None
    if args.reference_cameras is not None:
        if args.dataset is None:
            raise StageError("--reference-cameras needs --dataset (the scene whose cameras are aligned)")
        alignment = reference_alignment(args.dataset, args.reference_cameras)
        alignment.details = {"method": "camera centres"}
        if "icp" in args:  # --icp given
            if args.gt is None:
                raise StageError("--icp needs --gt (a ground-truth surface to register against)")
            alignment = refine_with_icp(args.mesh, args.gt, alignment)
    if args.dtu_root is not None:
        if args.scan is None:
            raise StageError("--dtu-root needs --scan (the DTU scan number, e.g. 65)")
        evaluate_dtu(args.mesh, args.dtu_root, args.scan, args.out, alignment=alignment)
    else:
        evaluate_generic(args.mesh, args.gt, args.out, alignment=alignment, **_given(args, evaluate_generic))


# -------------------------------------------------------------------------------------------- synth
_SYNTH = "neus_stage.synth:render_scene"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "synth", "render a test scene with known geometry: photos, masks, cameras, gt mesh")
    p.add_argument(
        "--out", type=Path, required=True, help="folder to write photos/, masks/, cameras_sphere.npz, gt.ply"
    )
    _setting(p, _SYNTH, "--scene", help="which object (see neus_stage.synth.SCENES)")
    _setting(p, _SYNTH, "--views", dest="n_views", type=int, help="number of photos")
    _setting(p, _SYNTH, "--width", type=int, help="photo width in pixels")
    _setting(p, _SYNTH, "--height", type=int, help="photo height in pixels")
    _setting(p, _SYNTH, "--seed", type=int, help="random seed (texture, camera jitter)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> None:
    from ..synth import render_scene

    render_scene(args.out, **_given(args, render_scene))


# ------------------------------------------------------------------------------------------- report
_REPORT = "neus_stage.report:build_report"


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "report", "one self-contained HTML page showing a scene's artifacts, stage by stage")
    p.add_argument("--scene-dir", type=Path, required=True, help="the scene's results folder (results/<scene>)")
    _setting(
        p,
        _REPORT,
        "--benchmarks",
        dest="benchmarks_dir",
        type=Path,
        help="folder of <rule>/<scene>.tsv run times (the workflow writes benchmarks/; without it the report "
        "shows none)",
    )
    _setting(p, _REPORT, "--out", type=Path, help="HTML file to write (default: <scene-dir>/report.html)")
    _setting(p, _REPORT, "--max-faces", type=int, help="mesh previews are drawn from a mesh decimated to this size")
    _setting(
        p,
        _REPORT,
        "--quality",
        dest="quality_out",
        type=Path,
        help="also judge the scene without ground truth and write the verdict to this quality.json",
    )
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> None:
    from ..report import build_report

    build_report(args.scene_dir, **_given(args, build_report))


# ------------------------------------------------------------------------------------------ quality
def _add_quality(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "quality",
        "judge a finished scene without ground truth: SfM points vs mesh, held-out views, one-line verdict",
    )
    p.add_argument("--scene-dir", type=Path, required=True, help="the scene's results folder (results/<scene>)")
    p.add_argument("--out", type=Path, help="quality.json to write (default: <scene-dir>/quality.json)")
    p.set_defaults(func=_run_quality)


def _run_quality(args: argparse.Namespace) -> None:
    from ..quality import assess

    res = assess(args.scene_dir, args.out or Path(args.scene_dir) / "quality.json")
    print(f"quality: {res['line']}")


# ------------------------------------------------------------------------------------------- doctor
def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "doctor", "what this machine has (CUDA, tinycudann, pycolmap, rembg models, SLURM)")
    p.set_defaults(func=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> None:
    from ..doctor import doctor

    print(doctor())


COMMANDS = (_add_train, _add_mesh, _add_export, _add_evaluate, _add_synth, _add_report, _add_quality, _add_doctor)
