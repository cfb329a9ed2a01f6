"""The report's sections on the results: the mesh (shaded, coloured by error, the textured export), the
quality verdict without ground truth and the evaluation against one. Each returns its HTML or raises
:class:`~neus_stage.report.html.Missing` saying what is absent."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..artifacts.evaluation import read_error_cloud
from ..artifacts.meshes import read_mesh_decimated
from ..artifacts.reports import read_report, read_report_if_any
from .context import ReportContext
from .figures import ViewFrame, render_mesh_views
from .html import Missing, df_table, esc, fmt, img_tag, kv_table, missing_note


def _error_values(ctx: ReportContext, V: np.ndarray) -> tuple[np.ndarray, float | None, str] | None:
    """Per-vertex accuracy error of ``V`` (world) from eval_errors.ply, or None (with a note) when absent."""
    from scipy.spatial import cKDTree

    f = ctx.files
    cloud = f.path("eval_errors.ply")
    if not cloud.is_file():
        return None
    pts, err, vmax = read_error_cloud(cloud)
    ev = read_report_if_any(f.path("eval.json"))
    vmax = (ev.get("error_cloud") or {}).get("vmax", vmax)
    M = np.asarray((ev.get("alignment") or {}).get("matrix", np.eye(4)), dtype=np.float64)
    Vg = V @ M[:3, :3].T + M[:3, 3]  # the mesh in the ground truth's frame, where the errors were measured
    _, idx = cKDTree(pts).query(Vg, k=1)
    unit = ev.get("units", "ground-truth units")
    return err[idx], vmax, f"accuracy error ({unit})"


def mesh_section(ctx: ReportContext) -> str:
    """The mesh shaded, coloured by its error where eval_errors.ply exists, and the textured export."""
    f = ctx.files
    path = next((p for p in (f.path("mesh_clean.ply"), f.path("mesh.ply")) if p.is_file()), None)
    if path is None:
        raise Missing("neither mesh_clean.ply nor mesh.ply exists: the mesh stage has not run")
    V, F, n_faces = read_mesh_decimated(path, ctx.max_faces)
    frame = ctx.frame or ViewFrame(np.eye(3), (V.min(0) + V.max(0)) / 2)
    parts = []
    meta = read_report_if_any(f.path("mesh.json"))
    info = meta.get("mesh_clean" if path.name == "mesh_clean.ply" else "mesh", {}) if meta else {}
    parts.append(
        kv_table(
            [
                ("mesh", path.name),
                ("faces", n_faces),
                ("vertices", info.get("vertices")),
                ("watertight", info.get("watertight")),
                ("resolution", meta.get("resolution")),
                ("shown with", f"{len(F)} faces (quadric decimation)" if len(F) < n_faces else f"{len(F)} faces"),
            ]
        )
    )
    parts.append(img_tag(render_mesh_views(V, F, frame=frame), "image/png", f"{path.name} shaded", "wide"))
    parts.append(
        f"<p class='caption'>{esc(path.name)}, Lambert-shaded, orthographic; azimuth 0 looks from "
        "camera 0's side, z up (the world's z in an upright dataset, else the cameras' up).</p>"
    )
    errors = _error_values(ctx, V)
    if errors is None:
        parts.append(
            missing_note(
                "eval_errors.ply not found: no error colouring (no ground truth for this scene, the "
                "DTU protocol, or the evaluate stage has not run)"
            )
        )
    else:
        vals, vmax, label = errors
        face_err = vals[F].mean(1)
        parts.append(
            img_tag(
                render_mesh_views(V, F, frame=frame, face_values=face_err, vmax=vmax, value_label=label),
                "image/png",
                "mesh coloured by error",
                "wide",
            )
        )
        parts.append(
            f"<p class='caption'>coloured by the distance of each part of the mesh to the ground truth "
            f"(eval_errors.ply; yellow = {fmt(vmax)} or more, the largest F-score threshold).</p>"
        )
    parts.extend(_textured_view(ctx))
    return "\n".join(parts)


def _textured_view(ctx: ReportContext) -> list[str]:
    """The textured export (export/export.json, export/preview.jpg): its numbers and photos beside the textured
    mesh re-rendered from their cameras."""
    f = ctx.files
    meta_path = f.path("export/export.json")
    if not meta_path.is_file():
        return [missing_note("export/export.json not found: no textured view (the export stage has not run)")]
    x = read_report(meta_path, "the export stage")
    psnr = x.get("psnr") or {}
    bake = x.get("bake") or {}
    parts = [
        "<h3>Textured export</h3>",
        kv_table(
            [
                ("files", ", ".join(f"export/{v}" for v in (x.get("files") or {}).values())),
                ("faces", f"{x.get('faces')} (from {x.get('faces_in')}; target {x.get('target_faces')})"),
                ("texture", f"{x.get('texture_size')}^2 from the {x.get('texture_from')}"),
                ("surface seen by a photo", f"{100 * bake['seen_share']:.1f}%" if "seen_share" in bake else None),
                (f"re-render PSNR (dB), {psnr.get('kind', '')}", psnr.get("mean")),
                ("frame", (x.get("frame") or {}).get("description")),
            ]
        ),
    ]
    preview = f.path("export/preview.jpg")
    if preview.is_file():
        views = (x.get("preview") or {}).get("views") or []
        per_view = psnr.get("views") or {}
        parts.append(img_tag(preview.read_bytes(), "image/jpeg", "photos beside the textured mesh", "wide"))
        parts.append(
            "<p class='caption'>left: the photo; right: the textured mesh rendered from that photo's camera "
            f"(views {', '.join(f'{v} ({fmt(per_view.get(v))} dB)' for v in views)}; PSNR inside the "
            "mask).</p>"
        )
    return parts


def quality_section(ctx: ReportContext) -> str:
    """The verdict without ground truth: SfM points against the mesh, held-out views (see neus_stage.quality)."""
    f = ctx.files
    q = read_report_if_any(f.path("quality.json"))
    if not q:
        if not (f.path("mesh_clean.ply").is_file() or f.path("mesh.ply").is_file()):
            raise Missing("no mesh yet: the quality is judged once the mesh stage has run")
        from ..quality import assess

        q = assess(f.root)
    g, h = q.get("geometry") or {}, q.get("heldout") or {}
    units = q.get("units", "world units")
    rows: list[tuple[str, object]] = [("verdict", q.get("line"))]
    if g.get("available"):
        rows += [
            ("object points", f"{g['points']} ({g.get('kind')})"),
            (
                f"distance to the mesh, median ({units})",
                f"{fmt(g['median'])} ({100 * g['median_share']:.2f}% of the object size)",
            ),
            (
                f"distance to the mesh, 90th percentile ({units})",
                f"{fmt(g['p90'])} ({100 * g['p90_share']:.2f}% of the object size)",
            ),
            ("points within 1% of the size", f"{100 * g['within_1pct_share']:.1f}%"),
            (f"object size ({g.get('object_size_is')})", g.get("object_size")),
            (f"points farther than {100 * g['far_share_limit']:.0f}% of the size", g.get("far_points")),
        ]
        if g.get("photos_to_check"):
            rows.append(("photos seeing most far points", ", ".join(g["photos_to_check"])))
    else:
        rows.append(("geometry check", f"not available: {g.get('reason')}"))
    if h.get("available"):
        rows += [
            ("held-out views (never trained on)", h["views"]),
            ("held-out PSNR (dB, mean)", h.get("psnr")),
            ("held-out mask IoU (mean)", h.get("mask_iou")),
            ("held-out SSIM (mean)", h.get("ssim") if h.get("ssim") is not None else h.get("ssim_note")),
        ]
    else:
        rows.append(("held-out views", f"none: {h.get('reason')}"))
    rows.append(
        (
            "training-batch PSNR (dB, last tenth of the steps; training views, for contrast)",
            q.get("training_batch_psnr"),
        )
    )
    parts = [kv_table(rows)]
    if h.get("per_view"):
        parts.append("<h3>Held-out views</h3>" + df_table(pd.DataFrame(h["per_view"])))
    parts.append(
        "<p class='caption'>quality.json. The SfM points were triangulated from the photos by COLMAP, "
        "independently of the trained surface. Held-out views are never trained on (train.holdout_every); "
        "their masks still shape the visual hull that bounds training and the mesh's mask culling.</p>"
    )
    return "\n".join(parts)


def evaluation_section(ctx: ReportContext) -> str:
    """The scores of eval.json: Chamfer, its parts, the alignment and the F-scores."""
    f = ctx.files
    ev = f.path("eval.json")
    if not ev.is_file():
        raise Missing("eval.json not found: no evaluation (the scene has no ground truth, or evaluate has not run)")
    e = read_report(ev, "the evaluate stage")
    pct = e.get("chamfer_pct_diag") or {}
    rows = [
        ("protocol", e.get("protocol")),
        ("ground truth", e.get("gt") or (f"DTU scan {e['scan']}" if "scan" in e else None)),
        ("units", e.get("units")),
        ("accuracy (mean)", e.get("accuracy")),
        ("completeness (mean)", e.get("completeness")),
        ("Chamfer (overall)", e.get("overall")),
        ("accuracy / completeness median", f"{fmt(e.get('accuracy_median'))} / {fmt(e.get('completeness_median'))}"),
        ("Chamfer, % of the GT box diagonal", pct.get("overall")),
        (
            "accuracy / completeness, % of diagonal",
            f"{fmt(pct.get('accuracy'))} / {fmt(pct.get('completeness'))}" if pct else None,
        ),
        ("GT box diagonal", e.get("gt_bbox_diag")),
    ]
    al = e.get("alignment")
    if al:
        method = al.get("method", "similarity") + (" + ICP" if "icp" in al else "")
        rows += [
            ("alignment (mesh to ground truth)", method),
            ("alignment scale", al.get("scale")),
            ("alignment RMS (camera centres)", al.get("rms")),
        ]
        for k, v in al.items():
            if k in {"method", "scale", "rms", "matrix"} or isinstance(v, list):
                continue
            items = v.items() if isinstance(v, dict) else [("", v)]
            rows += [(f"{k} {kk}".strip(), vv) for kk, vv in items if not isinstance(vv, (dict, list))]
    parts = [kv_table(rows)]
    fs = pd.DataFrame(e.get("fscores") or [])
    if not fs.empty:
        fs = fs.rename(columns={"threshold_pct_diag": "threshold (% diag)"})
        parts.append("<h3>F-score</h3>" + df_table(fs))
    return "\n".join(parts)
