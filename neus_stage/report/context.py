"""What the report's sections are given: where the scene's files are, and what the report reads once for all."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts.box import read_world_box
from ..artifacts.reports import read_report_if_any
from ..errors import StageError
from .figures import ViewFrame, camera_poses, view_frame

log = logging.getLogger(__name__)


@dataclass
class SceneFiles:
    """Where a scene's artifacts are (the workflow's layout under ``results/<scene>/``) and its rule run times
    (``benchmarks/<rule>/<scene>.tsv``; None: not recorded)."""

    root: Path
    scene: str
    benchmarks: Path | None

    def path(self, rel: str) -> Path:
        """The path of the artifact ``rel`` (e.g. ``"sfm/report.json"``) in the scene's folder."""
        return self.root / rel


@dataclass
class ReportContext:
    """The inputs of every section builder: the scene's files, the most faces a mesh preview shows, and what
    :func:`neus_stage.report.build_report` reads once for several sections, each None where its artifact is
    absent: the shared view frame (cameras' up as z, the object's centre), the cameras (camera-to-world
    ``poses`` (N, 4, 4) and intrinsics ``Ks`` (N, 3, 3) of ``dataset/cameras_sphere.npz``) and the object
    box (min, max) of ``bbox.json`` in world units."""

    files: SceneFiles
    max_faces: int
    frame: ViewFrame | None = None
    poses: np.ndarray | None = None
    Ks: np.ndarray | None = None
    box: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def read(cls, files: SceneFiles, max_faces: int) -> ReportContext:
        """The context of a scene: its box and cameras where they exist, and the shared frame made of them
        (cameras' up as z, the object box's centre, or else the cameras' centroid, at the origin)."""
        ctx = cls(files, max_faces)
        bbox = files.path("bbox.json")
        if bbox.is_file():
            ctx.box = read_world_box(bbox)
        cams = files.path("dataset/cameras_sphere.npz")
        if cams.is_file():
            try:
                ctx.Ks, ctx.poses = camera_poses(cams)
            except StageError as exc:
                log.warning("%s", exc)
        if ctx.box is not None or ctx.poses is not None:
            center = (ctx.box[0] + ctx.box[1]) / 2 if ctx.box is not None else ctx.poses[:, :3, 3].mean(0)
            upright = (read_report_if_any(files.path("dataset/meta.json")).get("frame") or {}).get("name") == "upright"
            ctx.frame = view_frame(ctx.poses, center, np.array([0.0, 0.0, 1.0]) if upright else None)
        return ctx
