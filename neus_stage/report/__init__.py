"""A per-scene HTML report: one self-contained page showing every stage's artifacts of ``results/<scene>/``.

Sections: photos with their masks, SfM and masks summaries, cameras with the sparse points, object box
and visual hull, training curves, validation renders, mesh previews (shaded, and coloured by error
where the evaluation wrote ``eval_errors.ply``), the evaluation table and each rule's run time.
Every image is embedded (base64 PNG/JPEG). A section whose artifact is absent says what is missing
(a scene without ground truth, or with reference poses and no ``sfm/``); a section that cannot be
drawn says why, and the rest of the report is still written.

Figures use matplotlib's object API (no pyplot, no global backend). Mesh previews are decimated with
open3d's quadric decimation, then drawn as Lambert-shaded ``Poly3DCollection``s (orthographic,
back faces culled): open3d's Filament ``OffscreenRenderer`` needs a Vulkan driver headless and takes
tens of seconds a frame on a CPU (Mesa lavapipe), so it is not used.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from ..artifacts.evaluation import read_error_cloud
from ..atomic import write_text_atomic
from ..errors import StageError
from .context import ReportContext, SceneFiles
from .figures import ViewFrame, hull_surface_points, render_mesh_views
from .html import CSS, Missing, Section, esc, missing_note
from .sections import SECTIONS
from .training_sections import rule_times

__all__ = [
    "SECTIONS",
    "ViewFrame",
    "build_report",
    "hull_surface_points",
    "read_error_cloud",
    "render_mesh_views",
    "rule_times",
]

log = logging.getLogger(__name__)


def build_report(
    scene_dir: Path,
    out: Path | None = None,
    *,
    benchmarks_dir: Path | None = Path("benchmarks"),
    scene: str | None = None,
    max_faces: int = 20000,
    quality_out: Path | None = None,
) -> dict[str, str]:
    """Write the scene's report (``scene_dir/report.html`` by default); returns {section: ok|missing|error}.

    Absent artifacts never fail the report: their sections say what is missing. Only a missing scene
    folder is an error. Rule run times come from ``benchmarks_dir`` (``benchmarks/`` of the working
    directory, where the workflow writes them; None: no run times). With ``quality_out``, the scene is first
    judged without ground truth
    (:func:`neus_stage.quality.assess`) and the verdict written there (the workflow's quality.json).
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise StageError(f"{scene_dir}: scene folder not found; give results/<scene> of a workflow run")
    if quality_out is not None:
        from ..quality import assess

        assess(scene_dir, quality_out)
    out = Path(out) if out is not None else scene_dir / "report.html"
    files = SceneFiles(scene_dir, scene or scene_dir.name, Path(benchmarks_dir) if benchmarks_dir else None)
    ctx = ReportContext.read(files, max_faces)

    sections = []
    for key, title, builder in SECTIONS:
        sec = Section(key, title)
        try:
            sec.body = builder(ctx)
        except Missing as exc:
            sec.status, sec.body = "missing", missing_note(str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken artifact must not cost the whole report
            log.warning("report section '%s' failed: %s: %s", key, type(exc).__name__, exc, exc_info=True)
            sec.status = "error"
            sec.body = f'<p class="error">{esc(title)} could not be shown: {esc(type(exc).__name__)}: {esc(exc)}</p>'
        log.info("section %-10s %s", key, sec.status)
        sections.append(sec)

    nav = " ".join(
        f'<a href="#{s.key}">{esc(s.title)}</a><span class="status-{s.status}">'
        f"{'' if s.status == 'ok' else f' ({s.status})'}</span>"
        for s in sections
    )
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(
        f'<section id="{s.key}" data-status="{s.status}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>'
        for s in sections
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>neus-stage report: {esc(files.scene)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>neus-stage report: {esc(files.scene)}</h1>\n"
        f"<p class='caption'>{esc(scene_dir)} &middot; generated {now}</p>\n<nav>{nav}</nav>\n{body}\n"
        "</body></html>\n"
    )
    write_text_atomic(out, page)
    status = {s.key: s.status for s in sections}
    log.info(
        "report: %s (%.0f kB; %d of %d sections shown)",
        out,
        out.stat().st_size / 1024,
        sum(v == "ok" for v in status.values()),
        len(status),
    )
    return status
