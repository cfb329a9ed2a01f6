"""The report's sections in page order: (key, title, builder) rows; each builder takes the
:class:`~neus_stage.report.context.ReportContext` and returns its HTML or raises
:class:`~neus_stage.report.html.Missing` saying what is absent.

The builders live by subject: :mod:`.input_sections` (photos, SfM, frame, cameras), :mod:`.training_sections`
(training, renders, run times) and :mod:`.mesh_sections` (mesh, quality, evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

from .context import ReportContext
from .input_sections import cameras_section, frame_section, photos_section, sfm_section
from .mesh_sections import evaluation_section, mesh_section, quality_section
from .training_sections import renders_section, timings_section, training_section

SECTIONS: list[tuple[str, str, Callable[[ReportContext], str]]] = [
    ("photos", "Photos and masks", photos_section),
    ("sfm", "Structure from motion", sfm_section),
    ("frame", "World frame and scale", frame_section),
    ("cameras", "Cameras, sparse points, object box and visual hull", cameras_section),
    ("training", "Training", training_section),
    ("renders", "Rendered views", renders_section),
    ("mesh", "Mesh", mesh_section),
    ("quality", "Quality without ground truth", quality_section),
    ("evaluation", "Evaluation", evaluation_section),
    ("timings", "Run times", timings_section),
]
