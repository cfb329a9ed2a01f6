"""The JSON records stages leave beside their outputs: ``sfm/report.json``, ``masks/report.json``,
``frames/report.json``, ``mesh.json``, ``eval.json``, ``export/export.json``, ``neus/metrics.json``,
``quality.json``.

``write_report`` is atomic (a stage killed midway leaves the previous record or none); ``read_report`` is
for a stage that needs the record (missing or broken: a StageError naming the file and the stage to re-run);
``read_report_if_any`` is for the report page and the quality verdict, which show what there is and say
what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import StageError


def write_report(path: Path, record: dict) -> None:
    """``record`` as indented JSON, all or nothing."""
    write_text_atomic(Path(path), json.dumps(record, indent=2) + "\n")


def read_report(path: Path, stage: str = "the stage that writes it") -> dict:
    """A JSON object from ``path``; a StageError naming the file and ``stage`` when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: missing; run {stage} first")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); re-run {stage}") from exc
    if not isinstance(record, dict):
        raise StageError(f"{path}: not a JSON object; re-run {stage}")
    return record


def read_report_if_any(path: Path) -> dict:
    """The JSON object of ``path``, or {} where it is missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
