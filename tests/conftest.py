"""Shared fixtures: ``../shared`` data (skipped cleanly where absent) and small rendered scenes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip on a user's fresh clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present (it sits beside the checkout in CI)")
    return SHARED


@pytest.fixture(scope="session")
def dtu_scan65(shared_data: Path) -> Path:
    path = shared_data / "dtu_scan65"
    if not path.is_dir():
        pytest.skip("../shared/data/dtu_scan65 is not present")
    return path


@pytest.fixture(scope="session")
def dtu_eval_fixture(shared_data: Path) -> Path:
    path = shared_data / "dtu_eval_fixture"
    if not path.is_dir():
        pytest.skip("../shared/data/dtu_eval_fixture is not present")
    return path


# ------------------------------------------------------------------ a small rendered scene (no ../shared needed)
MUG_VIEWS, MUG_W, MUG_H = 12, 96, 72


@pytest.fixture(scope="session")
def mug_render(tmp_path_factory) -> Path:
    """12 rendered photos (96x72) of the synthetic mug with true masks, reference cameras and gt.ply."""
    from neus_stage.synth import render_scene

    out = tmp_path_factory.mktemp("mug_render")
    render_scene(out, scene="mug", n_views=MUG_VIEWS, width=MUG_W, height=MUG_H, seed=0, gt_resolution=64)
    return out


@pytest.fixture(scope="session")
def mug_dataset(mug_render: Path, tmp_path_factory) -> dict[str, Path]:
    """The rendered mug as a NeuS dataset (poses = reference) with its visual hull (64^3) and bbox.json."""
    from neus_stage.dataset import build_dataset_from_reference
    from neus_stage.hull import carve_visual_hull

    root = tmp_path_factory.mktemp("mug_dataset")
    ds = root / "dataset"
    build_dataset_from_reference(mug_render / "photos", mug_render / "cameras_sphere.npz", mug_render / "masks", ds)
    carve_visual_hull(ds, root / "bbox.json", root / "hull.npz", resolution=64)
    return {"render": mug_render, "dataset": ds, "bbox": root / "bbox.json", "hull": root / "hull.npz"}


@pytest.fixture
def run_cli():
    """``neus_stage.cli.main`` in-process, restoring the root logger that its setup_logging replaces."""
    from neus_stage import cli

    def run(argv: list[str]) -> int:
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            return cli.main(argv)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

    return run
