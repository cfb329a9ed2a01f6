# Helpers for the rules: the scene table, input functions, wildcard constraints.
import json
from pathlib import Path

from neus_stage.scenes import read_scene_table
from neus_stage.train.config import resolve_config

SCENES = read_scene_table(config["scenes"])


wildcard_constraints:
    scene="|".join(SCENES.index),


def scene_row(wildcards):
    return SCENES.loc[wildcards.scene]


def photo_files(wildcards):
    folder = Path(scene_row(wildcards)["photos"])
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def uses_sfm(wildcards):
    return scene_row(wildcards)["poses"] == "sfm"


def masks_inputs(wildcards):
    if uses_sfm(wildcards):
        return {"sfm": f"results/{wildcards.scene}/sfm/report.json"}
    return {"photos": photo_files(wildcards)}


def masks_args(wildcards, input):
    row = scene_row(wildcards)
    if uses_sfm(wildcards):
        sfm = Path(input.sfm).parent
        args = f"--images {sfm / 'undistorted' / 'images'} --sfm {sfm}"
        if not config["masks"]["multiview"]:
            args = f"--images {sfm / 'undistorted' / 'images'}"
    else:
        args = f"--images {row['photos']}"
    if row["masks"]:
        args += f" --user-masks {row['masks']}"
        if uses_sfm(wildcards):
            args += f" --sfm {Path(input.sfm).parent}"
    return args


def dataset_inputs(wildcards):
    inputs = {"masks": f"results/{wildcards.scene}/masks"}
    if uses_sfm(wildcards):
        inputs["sfm"] = f"results/{wildcards.scene}/sfm/report.json"
    else:
        inputs["photos"] = photo_files(wildcards)
        inputs["cameras"] = scene_row(wildcards)["cameras"]
    return inputs


def dataset_args(wildcards, input):
    if uses_sfm(wildcards):
        return f"--sfm {Path(input.sfm).parent}"
    row = scene_row(wildcards)
    return f"--photos {row['photos']} --reference-cameras {row['cameras']}"


def train_settings(wildcards):
    """Preset and field overrides for one scene: config train.overrides, then scene_overrides."""
    overrides = dict(config["train"].get("overrides") or {})
    overrides.update((config.get("scene_overrides") or {}).get(wildcards.scene, {}).get("train", {}))
    preset = config["train"]["preset"]
    resolve_config(preset, overrides)  # unknown keys fail here, at DAG time, not after hours
    return {"preset": preset, "overrides": json.dumps(overrides, sort_keys=True)}


def evaluate_inputs(wildcards):
    row = scene_row(wildcards)
    inputs = {"mesh": f"results/{wildcards.scene}/mesh_clean.ply"}
    if row["gt"]:
        inputs["gt"] = row["gt"]
    if row["cameras"] and uses_sfm(wildcards):
        inputs["cameras"] = row["cameras"]
        inputs["dataset"] = f"results/{wildcards.scene}/dataset/meta.json"
    return inputs


def evaluate_args(wildcards, input):
    row = scene_row(wildcards)
    args = f"--gt {input.gt}" if row["gt"] else f"--dtu-root {config['dtu_root']} --scan {row['dtu_scan']}"
    if "cameras" in input.keys():
        args += f" --dataset {Path(input.dataset).parent} --reference-cameras {input.cameras}"
    if config["evaluate"]["thresholds"]:
        args += f" --thresholds {config['evaluate']['thresholds']}"
    return args


def final_targets():
    targets = []
    for _, row in SCENES.iterrows():
        if row["gt"] or row["dtu_scan"]:
            targets.append(f"results/{row['scene']}/eval.json")
        else:
            targets.append(f"results/{row['scene']}/mesh_clean.ply")
    return targets
