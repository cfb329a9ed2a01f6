# Helpers for the rules: the scene table, input functions, wildcard constraints.
import json
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from neus_stage.benchmark import dtu_scene_table, missing_dtu_data
from neus_stage.export import check_export_settings
from neus_stage.photos import is_video
from neus_stage.scenes import read_scene_table
from neus_stage.settings import find_path
from neus_stage.train.config import resolve_config

# relative paths of the config and the scene table: the working directory's, else the workflow's (the demo)
BASES = [Path.cwd(), Path(workflow.basedir)]


def _python():
    """The Python that runs every rule's command: the one running Snakemake, whose environment holds
    neus_stage's dependencies (so `.venv/bin/snakemake` works without an activated environment or
    `neus-stage` on PATH), or under --use-conda the rule environment's `python`; PYTHONPATH puts this
    checkout's neus_stage first, so the rules always run the code of the Snakefile that defines them.
    """
    in_conda = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    python = "python" if in_conda else shlex.quote(sys.executable)
    return f"PYTHONPATH={shlex.quote(str(workflow.basedir))}${{PYTHONPATH:+:$PYTHONPATH}} {python}"


# The head of every rule's shell command, its braces escaped for Snakemake's formatting: each rule's shell
# is this string joined to the rest of its command, so the command is part of the rule (Snakemake's lint
# asks that a shell command format no variable from outside its rule).
PYTHON = _python().replace("{", "{{").replace("}", "}}")
NEUS_STAGE = f"{PYTHON} -m neus_stage"

# The scene table, plus one row per DTU scan of benchmark.scans (data under dtu_root). Missing DTU data is
# a warning here, so that a dry run lists the jobs without the data; a real run stops before its first job
# (onstart in benchmark.smk) with the list of missing files.
DTU_ROOT = str(find_path(config["dtu_root"], *BASES)) if config["dtu_root"] else ""
_tables = (
    [read_scene_table(find_path(config["scenes"], *BASES), bases=BASES)]
    if config["scenes"]
    else []
)
if config["benchmark"]["scans"]:
    _tables.append(
        dtu_scene_table(
            DTU_ROOT,
            config["benchmark"]["scans"],
            poses=config["benchmark"]["poses"],
            strict=False,
        )
    )
    DTU_MISSING = missing_dtu_data(Path(DTU_ROOT), config["benchmark"]["scans"])
    if DTU_MISSING:
        logger.warning(
            f"DTU data: {len(DTU_MISSING)} path(s) missing under '{DTU_ROOT}' (first: {DTU_MISSING[0]}); "
            "a dry run lists the jobs, a real run stops before starting"
        )
else:
    DTU_MISSING = []
if not _tables:
    raise ValueError(
        "no scenes: set 'scenes' (a scene table) or 'benchmark.scans' (DTU scans) in the config"
    )
SCENES = pd.concat(_tables)
if SCENES.index.duplicated().any():
    raise ValueError(
        f"scene(s) {sorted(set(SCENES.index[SCENES.index.duplicated()]))} defined twice"
    )
_unknown = sorted(set(config["scene_overrides"]) - set(SCENES.index))
if _unknown:
    raise ValueError(
        f"scene_overrides names scene(s) {', '.join(_unknown)} that the scene table does not have "
        f"(its scenes: {', '.join(SCENES.index)}); fix the name or remove the entry"
    )
# a scene whose photos column names a video: the frames rule picks its frames into results/<scene>/frames,
# which every later stage reads as the scene's photos
SCENES["video"] = [p if p and is_video(p) else "" for p in SCENES["photos"]]
for _scene in SCENES.index[SCENES["video"] != ""]:
    SCENES.loc[_scene, "photos"] = f"results/{_scene}/frames"
# the export settings, checked before any job (the schema cannot say "a power of two")
check_export_settings(
    config["export"]["faces"],
    config["export"]["texture_size"],
    config["export"]["texture_from"],
    faces_name="export.faces",
    size_name="export.texture_size",
    source_name="export.texture_from",
)


wildcard_constraints:
    scene="|".join(SCENES.index),


def scene_row(wildcards):
    return SCENES.loc[wildcards.scene]


def video_file(wildcards):
    """The scene's video (the frames rule's input)."""
    return scene_row(wildcards)["video"]


def photo_files(wildcards):
    if scene_row(wildcards)["video"]:
        return [f"results/{wildcards.scene}/frames"]  # the frames rule's folder
    folder = Path(scene_row(wildcards)["photos"])
    # absent only in a dry run of the DTU benchmark without its data (see DTU_MISSING)
    if not folder.is_dir():
        return []
    return sorted(
        str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
    )


def _existing(path):
    """``path``, or no input where it is absent: only DTU rows in a dry run without data (see DTU_MISSING)."""
    return path if Path(path).exists() or not DTU_MISSING else []


def uses_sfm(wildcards):
    return scene_row(wildcards)["poses"] == "sfm"


def masks_inputs(wildcards):
    if uses_sfm(wildcards):
        inputs = {"sfm": f"results/{wildcards.scene}/sfm/report.json"}
    else:
        inputs = {"photos": photo_files(wildcards)}
        row = scene_row(wildcards)
        if config["masks"]["multiview"] and not row["masks"]:
            # the reference cameras repair rembg's masks
            inputs["cameras"] = row["cameras"]
    # user masks that the workflow makes (dtu_masks links a DTU release's masks under its photo names)
    if scene_row(wildcards)["masks"].startswith("results/"):
        inputs["user_masks"] = scene_row(wildcards)["masks"]
    return inputs


def q(path):
    """A path from the scene table or config, quoted for the shell (folders may hold spaces)."""
    return shlex.quote(str(path))


def masks_args(wildcards, input):
    """The masks command's arguments, built in one pass: the images (undistorted for SfM poses, whose camera
    also undistorts user masks), the cameras of the multi-view check, the user's masks, the mode.
    """
    row = scene_row(wildcards)
    mode = config["masks"]["mode"]
    if mode == "user" and not row["masks"]:
        raise ValueError(
            f"scene '{wildcards.scene}': masks.mode is 'user' but the scene table gives no 'masks' folder"
        )
    if uses_sfm(wildcards):
        sfm = Path(input.sfm).parent
        args = [f"--images {sfm / 'undistorted' / 'images'}", f"--sfm {sfm}"]
    else:
        args = [f"--images {q(row['photos'])}"]
        if "cameras" in input.keys():
            args.append(f"--cameras {q(input.cameras)}")
    if row["masks"]:
        args.append(f"--user-masks {q(row['masks'])}")
    args.append(f"--mode {mode}")
    if not config["masks"]["multiview"]:
        args.append("--no-multiview")
    return " ".join(args)


def dataset_inputs(wildcards):
    inputs = {"masks": f"results/{wildcards.scene}/masks"}
    if uses_sfm(wildcards):
        inputs["sfm"] = f"results/{wildcards.scene}/sfm/report.json"
    else:
        inputs["photos"] = photo_files(wildcards)
        inputs["cameras"] = _existing(scene_row(wildcards)["cameras"])
    return inputs


def scale_settings(wildcards):
    """The scene's scale keys: config scale, then scene_overrides.<scene>.scale."""
    settings = dict(config["scale"])
    settings.update(
        (config.get("scene_overrides") or {}).get(wildcards.scene, {}).get("scale", {})
    )
    return settings


def scale_args(wildcards):
    """The dataset command's metric-scale options (poses sfm): marker, known length, factor."""
    s = scale_settings(wildcards)
    args = [
        f"--marker-length {s['marker_length']}",
        f"--marker-dictionary {s['marker_dictionary']}",
    ]
    if s["marker_ids"]:
        args.append(f"--marker-ids {','.join(str(i) for i in s['marker_ids'])}")
    if s["factor"]:
        args.append(f"--scale-factor {s['factor']}")
    known = s.get("known_length") or {}
    if known:
        if set(known) != {"points", "metres"}:
            raise ValueError(
                f"scene '{wildcards.scene}': scale.known_length needs both 'points' (two SfM point ids) and "
                f"'metres', e.g. {{points: [12, 345], metres: 0.25}}; got {known}"
            )
        a, b = known["points"]
        args.append(f"--known-length {a} {b} {known['metres']}")
    return " ".join(args)


def dataset_args(wildcards, input):
    if uses_sfm(wildcards):
        return f"--sfm {Path(input.sfm).parent} {scale_args(wildcards)}"
    row = scene_row(wildcards)
    return f"--photos {q(row['photos'])} --reference-cameras {q(row['cameras'])}"


def hull_args(wildcards):
    """The support-plane search: the SfM points (poses sfm), else points triangulated with the reference cameras."""
    args = f"--support {config['visual_hull']['support']}"
    if uses_sfm(wildcards):
        args += f" --sparse results/{wildcards.scene}/sfm/undistorted/sparse"
    return args


def train_settings(wildcards):
    """Preset and field overrides for one scene: train.holdout_every, then config train.overrides, then
    scene_overrides."""
    overrides = {"holdout_every": config["train"]["holdout_every"]}
    overrides.update(config["train"].get("overrides") or {})
    overrides.update(
        (config.get("scene_overrides") or {}).get(wildcards.scene, {}).get("train", {})
    )
    preset = config["train"]["preset"]
    resolve_config(
        preset, overrides
    )  # unknown keys fail here, at DAG time, not after hours
    return {"preset": preset, "overrides": json.dumps(overrides, sort_keys=True)}


def evaluate_inputs(wildcards):
    row = scene_row(wildcards)
    inputs = {"mesh": f"results/{wildcards.scene}/mesh_clean.ply"}
    if row["gt"]:
        inputs["gt"] = row["gt"]
    if row["cameras"] and uses_sfm(wildcards):
        inputs["cameras"] = _existing(row["cameras"])
        inputs["dataset"] = f"results/{wildcards.scene}/dataset/meta.json"
    return inputs


def evaluate_args(wildcards, input):
    row = scene_row(wildcards)
    args = (
        f"--gt {q(input.gt)}"
        if row["gt"]
        else f"--dtu-root {q(DTU_ROOT)} --scan {row['dtu_scan']}"
    )
    if "cameras" in input.keys():
        args += f" --dataset {Path(input.dataset).parent} --reference-cameras {q(input.cameras)}"
    if "cameras" in input.keys() and row["gt"] and config["evaluate"]["icp"]:
        args += " --icp"
    if config["evaluate"]["thresholds"]:
        args += f" --thresholds {config['evaluate']['thresholds']}"
    return args


def dtu_scenes():
    """Scenes with a DTU scan number (the benchmark's rows)."""
    return [s for s, row in SCENES.iterrows() if row["dtu_scan"]]


def dtu_masks_input(wildcards):
    folder = Path(DTU_ROOT) / wildcards.scene / "mask"
    return str(folder) if folder.is_dir() else []


def has_evaluation(row):
    """A scene is evaluated when it has a ground truth (gt) or is a DTU scan."""
    return bool(row["gt"] or row["dtu_scan"])


def export_inputs(wildcards):
    """The clean mesh and the dataset's photos and cameras; the checkpoint where the colour network paints."""
    scene = wildcards.scene
    inputs = {
        "mesh": f"results/{scene}/mesh_clean.ply",
        "cameras": f"results/{scene}/dataset/cameras_sphere.npz",
    }
    if config["export"]["texture_from"] == "network":
        inputs["checkpoint"] = f"results/{scene}/neus/checkpoint.pt"
    return inputs


def report_inputs(wildcards):
    """The report comes last: after the evaluation where there is one, else after the mesh; and after the
    textured export, whose view it shows."""
    scene = wildcards.scene
    export = {"export": f"results/{scene}/export/export.json"}
    if has_evaluation(scene_row(wildcards)):
        return {"eval": f"results/{scene}/eval.json", **export}
    return {"mesh": f"results/{scene}/mesh_clean.ply", **export}


def final_targets():
    targets = []
    for _, row in SCENES.iterrows():
        if has_evaluation(row):
            targets.append(f"results/{row['scene']}/eval.json")
        else:
            targets.append(f"results/{row['scene']}/mesh_clean.ply")
        targets.append(f"results/{row['scene']}/export/{row['scene']}.glb")
        targets.append(f"results/{row['scene']}/report.html")
    return targets


def run_summary():
    """What a finished run leaves, per scene: the mesh, the report and the evaluation (printed at the end)."""
    lines = []
    for scene in SCENES.index:
        res = Path("results") / scene
        mesh, report, ev = (
            res / "mesh_clean.ply",
            res / "report.html",
            res / "eval.json",
        )
        if not mesh.is_file():
            continue
        lines.append(f"{scene}: mesh {mesh.resolve()}")
        if report.is_file():
            lines.append(f"{scene}: report {report.resolve()}")
        export = res / "export" / "export.json"
        if export.is_file():
            x = json.loads(export.read_text())
            lines.append(
                f"{scene}: textured mesh {(export.parent / x['files']['glb']).resolve()} and "
                f"{x['files']['obj']} ({x['faces']} faces, {x['texture_size']}^2 texture)"
            )
        masks_report = res / "masks" / "report.json"
        if masks_report.is_file():
            m = json.loads(masks_report.read_text())
            if m.get("mode") == "none":
                lines.append(
                    f"{scene}: WARNING: trained without masks: {m.get('why', '')}"
                )
        meta = res / "dataset" / "meta.json"
        if meta.is_file():
            frame = json.loads(meta.read_text()).get("frame") or {}
            if frame.get("summary"):
                lines.append(f"{scene}: world frame: {frame['summary']}")
        quality = res / "quality.json"
        if quality.is_file():
            lines.append(
                f"{scene}: quality: {json.loads(quality.read_text())['line']} ({quality})"
            )
        if ev.is_file():
            e = json.loads(ev.read_text())
            if "chamfer_pct_diag" in e:
                lines.append(
                    f"{scene}: Chamfer {e['chamfer_pct_diag']['overall']:.2f}% of the ground truth's diagonal ({ev})"
                )
            elif "overall" in e:
                lines.append(
                    f"{scene}: Chamfer {e['overall']:.3f} (DTU protocol, mm) ({ev})"
                )
    return lines
