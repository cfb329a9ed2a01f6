"""Rendered scenes posed by real COLMAP, shared by test_frame, test_scale and test_quality within one session
(built once under pytest's session folder): photos, sfm/ and the true masks undistorted for the SfM cameras."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"


def sfm_scene(base: Path, scene: str, views: int = 30, width: int = 320, height: int = 240) -> Path:
    """``base/frame_<scene>``: ``render/`` (photos, true masks, reference cameras, gt.ply; for ``demo`` the
    committed demo photos), ``sfm/`` (COLMAP) and ``masks/`` (the true masks, undistorted)."""
    from neus_stage.masks import compute_masks
    from neus_stage.sfm import run_sfm
    from neus_stage.synth import render_scene

    root = Path(base) / f"frame_{scene}"
    if (root / "done").is_file():
        return root
    if scene == "demo":
        render = DEMO
    else:
        render = root / "render"
        render_scene(render, scene=scene, n_views=views, width=width, height=height, seed=0, gt_resolution=96)
    run_sfm(render / "photos", root / "sfm", threads=2)
    compute_masks(
        root / "sfm" / "undistorted" / "images",
        root / "masks",
        user_masks=render / "masks",
        sfm_dir=root / "sfm",
        mode="user",
        multiview=False,
    )  # true masks: only undistorted
    (root / "render_dir").write_text(str(render))
    (root / "done").write_text("")
    return root


def render_dir(root: Path) -> Path:
    return Path((Path(root) / "render_dir").read_text())
