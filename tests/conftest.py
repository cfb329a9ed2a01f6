"""Shared fixtures: ``../shared`` data (skipped cleanly where absent) and small rendered scenes."""

from __future__ import annotations

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
