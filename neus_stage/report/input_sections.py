"""The report's sections on the inputs: photos and masks, structure from motion, the world frame, and the
cameras with the sparse points, object box, visual hull and support plane. Each returns its HTML or raises
:class:`~neus_stage.report.html.Missing` saying what is absent."""

from __future__ import annotations

import numpy as np

from ..artifacts.box import read_bbox_record, read_hull_file
from ..artifacts.reports import read_report, read_report_if_any
from .camera_plot import camera_figure
from .context import ReportContext, SceneFiles
from .figures import contact_sheet, hull_surface_points, read_sparse_points
from .html import Missing, esc, fmt, img_tag, kv_table, missing_note


def photos_section(ctx: ReportContext) -> str:
    """The photos with their masks (masks/overlay.jpg, else a contact sheet of the dataset) and the masks summary."""
    f = ctx.files
    overlay = f.path("masks/overlay.jpg")
    parts = []
    if overlay.is_file():
        parts.append(img_tag(overlay.read_bytes(), "image/jpeg", "photos with mask overlay", "wide"))
        parts.append(
            "<p class='caption'>masks/overlay.jpg: the part of each photo outside its mask is tinted "
            "red (up to 16 views, evenly spaced).</p>"
        )
    elif f.path("dataset/image").is_dir():
        parts.append(
            img_tag(
                contact_sheet(f.path("dataset/image"), f.path("dataset/mask")),
                "image/jpeg",
                "dataset images with mask overlay",
                "wide",
            )
        )
        parts.append(
            "<p class='caption'>dataset/image with dataset/mask: outside the mask tinted red "
            "(masks/overlay.jpg not found).</p>"
        )
    else:
        raise Missing("neither masks/overlay.jpg nor dataset/image/ exists: the masks and dataset stages have not run")
    rep = f.path("masks/report.json")
    if rep.is_file():
        r = read_report_if_any(rep)
        shares = list((r.get("final_foreground_share") or {}).values())
        cons = r.get("consistency") or {}
        parts.append(
            "<h3>Masks</h3>"
            + kv_table(
                [
                    ("source", r.get("source")),
                    ("model", r.get("model")),
                    ("images", r.get("n_images")),
                    ("degenerate views", ", ".join(r.get("degenerate_views") or []) or "none"),
                    ("mean foreground share", float(np.mean(shares)) if shares else None),
                    ("median IoU with the multi-view hull", cons.get("median_iou")),
                    ("time (s)", (r.get("timings") or {}).get("total_s")),
                ]
            )
        )
    else:
        parts.append(missing_note("masks/report.json not found: no masks summary (masks given with the dataset?)"))
    return "\n".join(parts)


def sfm_section(ctx: ReportContext) -> str:
    """The structure-from-motion summary of sfm/report.json."""
    f = ctx.files
    rep = f.path("sfm/report.json")
    if not rep.is_file():
        meta = f.path("dataset/meta.json")
        source = read_report_if_any(meta).get("source")
        why = " (poses = reference: the cameras came with the photos)" if source and source != "sfm" else ""
        raise Missing(f"sfm/report.json not found: no structure-from-motion run for this scene{why}")
    r = read_report(rep, "the sfm stage")
    cam = r.get("camera") or {}
    rows = [
        ("photos", r.get("n_photos")),
        ("registered", r.get("n_registered")),
        ("dropped", ", ".join(r.get("dropped") or []) or "none"),
        ("mean reprojection error (px)", r.get("mean_reprojection_error_px")),
        ("mean track length", r.get("mean_track_length")),
        ("sparse points", r.get("n_points")),
        ("image size", r.get("image_size")),
        ("camera", f"{cam.get('model', '?')} {fmt(cam.get('params', []))}" if cam else None),
        ("matcher / mapper", f"{r.get('matcher')} / {r.get('mapper')}"),
        ("device", r.get("device")),
        ("time (s)", (r.get("timings") or {}).get("total_s")),
    ]
    return kv_table(rows)


def frame_section(ctx: ReportContext) -> str:
    """How the world frame was found (up, base, centre) and its units (metric scale or SfM units)."""
    meta = read_report_if_any(ctx.files.path("dataset/meta.json"))
    if not meta:
        raise Missing("dataset/meta.json not found: the dataset stage has not run")
    fr = meta.get("frame")
    if not fr:
        raise Missing(
            "dataset/meta.json records no world frame (written before the upright frame): the world is "
            "the SfM model's frame; re-run the dataset stage"
        )
    rows: list[tuple[str, object]] = [("world frame", fr.get("summary")), ("units", meta.get("units"))]
    if fr.get("name") == "upright":
        up, sc = fr.get("up") or {}, fr.get("scale") or {}
        rows += [
            ("up (z)", up.get("how")),
            ("the cameras' up", (fr.get("camera_up") or {}).get("how")),
            ("base (z = 0)", (fr.get("base") or {}).get("how")),
            ("centre (on the z axis)", (fr.get("centre") or {}).get("how")),
            ("azimuth", fr.get("azimuth")),
            ("scale", sc.get("message")),
            ("similarity from the SfM frame: scale", (fr.get("from_sfm") or {}).get("scale")),
        ]
        for m in (sc.get("marker") or {}).get("markers") or []:
            rows.append(
                (
                    f"marker id {m['id']}",
                    f"{m['photos']} photos, side {m['side_sfm']:.5g} SfM units, corners "
                    f"reprojected within {m['reprojection_px']:.2f} px RMS, edges agree within "
                    f"{100 * m['edge_spread']:.2f}%",
                )
            )
    return kv_table(rows) + (
        "<p class='caption'>dataset/meta.json: every artifact in world units (cameras, "
        "bbox.json, meshes) uses this frame; frame.from_sfm maps the SfM model into it.</p>"
    )


def cameras_section(ctx: ReportContext) -> str:
    """The cameras drawn with the sparse points, object box, visual hull and support plane."""
    f = ctx.files
    notes = []
    if ctx.poses is None:
        raise Missing("dataset/cameras_sphere.npz not found: no cameras to draw (the dataset stage has not run)")
    points = colors = None
    sparse = f.path("sfm/sparse/0")
    if sparse.is_dir():
        points, colors = read_sparse_points(sparse)
        if f.path("dataset/meta.json").is_file():  # the SfM model's frame -> the dataset's (upright) world
            from ..frames import sfm_to_world

            points = sfm_to_world(f.path("dataset")).apply(points)
    else:
        notes.append("no sfm/sparse/0: no sparse points (poses from reference cameras, or SfM has not run)")
    hull = None
    if f.path("hull.npz").is_file():
        hull = hull_surface_points(f.path("hull.npz"))
    else:
        notes.append("hull.npz not found: no visual hull (the visual_hull stage has not run)")
    if ctx.box is None:
        notes.append("bbox.json not found: no object box")
    plane, inliers, support_line = _support_summary(f)
    if points is None and f.path("hull.npz").is_file():
        points = read_hull_file(f.path("hull.npz")).support_points  # triangulated with the reference cameras
    png = camera_figure(
        ctx.poses,
        ctx.Ks,
        ctx.frame,
        points=points,
        point_colors=colors,
        box=ctx.box,
        hull=hull,
        plane=plane,
        plane_inliers=inliers,
    )
    units = read_report_if_any(f.path("dataset/meta.json")).get("units")
    cap = (
        f"{len(ctx.poses)} cameras from dataset/cameras_sphere.npz (frusta; camera 0 labelled), in world "
        f"units ({units or 'world units'}), z up (the world's z where the dataset is upright, else the cameras' "
        "mean up direction)"
        + (f"; {len(points)} sparse points from sfm/sparse/0" if points is not None and sparse.is_dir() else "")
        + (
            f"; {len(points)} points triangulated with these cameras (hull.npz)"
            if points is not None and not sparse.is_dir()
            else ""
        )
        + (f"; {len(hull)} hull surface voxels from hull.npz" if hull is not None else "")
        + "."
    )
    return "\n".join(
        [
            img_tag(png, "image/png", "cameras and sparse points", "wide"),
            f"<p class='caption'>{esc(cap)}</p>",
            *([f"<p class='caption'>{esc(support_line)}</p>"] if support_line else []),
            *(missing_note(n) for n in notes),
        ]
    )


def _support_summary(f: SceneFiles) -> tuple[tuple[np.ndarray, float] | None, np.ndarray | None, str]:
    """The support plane of bbox.json (world), its inlier points (hull.npz) and one line saying what bounds
    the object (the plane, or the visibility cull of the mesh stage, and why)."""
    if not f.path("bbox.json").is_file():
        return None, None, ""
    sup = read_bbox_record(f.path("bbox.json")).get("support")
    if not isinstance(sup, dict):
        return None, None, "Support: not searched (bbox.json from before the support search)."
    mesh_note = ""
    if f.path("mesh.json").is_file():
        m = read_report_if_any(f.path("mesh.json")).get("support") or {}
        vis = m.get("visibility")
        if vis:
            mesh_note = (
                f" The mesh stage removed {vis['area_removed']:.4g} world units^2 "
                f"({vis['area_removed_share']:.1%} of the surface) that no camera observes."
            )
        elif m.get("cut"):
            mesh_note = f" The mesh ends on the plane (a flat cap {m.get('margin_world', 0):.3g} below it)."
        elif m:
            mesh_note = " The mesh keeps its raw extent (mesh.cut_at_support: false)."
    if sup.get("method") == "plane":
        src = sup.get("source", {})
        w = sup["plane"]["world"]
        line = (
            f"Support plane: {sup.get('message', '')} ({src.get('kind', '?')}: {src.get('points', '?')} points); "
            f"{'the hull is cut there' if sup.get('hull_cut') else 'recorded only (visual_hull.support: record)'}."
            + mesh_note
        )
        inl = None
        if f.path("hull.npz").is_file():
            h = read_hull_file(f.path("hull.npz"))
            if h.support_points is not None and h.support_inliers is not None:
                inl = h.support_points[h.support_inliers]
        return (np.asarray(w["normal"], dtype=np.float64), float(w["offset"])), inl, line
    if sup.get("method") == "none":
        return None, None, "Support: search switched off (visual_hull.support: off)." + mesh_note
    return (
        None,
        None,
        (
            f"No support plane ({sup.get('reason', '?')}): {sup.get('message', '')}. The visual hull is "
            "not cut; the mesh stage culls what no camera observes instead." + mesh_note
        ),
    )
