"""The report's sections, one function per stage's artifacts: each returns its HTML or raises
:class:`~neus_stage.report.html.Missing` saying what is absent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts.box import read_bbox_record, read_hull_file
from ..artifacts.meshes import read_mesh_decimated
from ..artifacts.reports import read_report, read_report_if_any
from ..benchmark import RULE_ORDER
from .figures import (
    ViewFrame,
    camera_figure,
    contact_sheet,
    hull_surface_points,
    read_error_cloud,
    read_sparse_points,
    render_mesh_views,
    training_figure,
)
from .html import Missing, df_table, esc, fmt, img_tag, kv_table, missing_note

log = logging.getLogger(__name__)




def rule_times(benchmarks_dir: Path, scene: str) -> pd.DataFrame:
    """One row per rule with a ``benchmarks/<rule>/<scene>.tsv`` (Snakemake's benchmark: the last run)."""
    rows = []
    for tsv in Path(benchmarks_dir).glob(f"*/{scene}.tsv"):
        t = pd.read_csv(tsv, sep="\t")
        if t.empty or "s" not in t:
            continue
        last = t.iloc[-1]
        row = {"rule": tsv.parent.name, "seconds": float(last["s"])}
        if "max_rss" in t and pd.notna(pd.to_numeric(last["max_rss"], errors="coerce")):
            row["peak memory (MB)"] = float(pd.to_numeric(last["max_rss"], errors="coerce"))
        if "cpu_time" in t and pd.notna(pd.to_numeric(last["cpu_time"], errors="coerce")):
            row["CPU time (s)"] = float(pd.to_numeric(last["cpu_time"], errors="coerce"))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["rule", "seconds"])
    order = {r: i for i, r in enumerate(RULE_ORDER)}
    df = pd.DataFrame(rows)
    df["_o"] = df["rule"].map(lambda r: order.get(r, len(order)))
    return df.sort_values(["_o", "rule"]).drop(columns="_o").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class SceneFiles:
    """Where a scene's artifacts are (the workflow's layout under ``results/<scene>/``)."""

    root: Path
    scene: str
    benchmarks: Path | None

    def p(self, rel: str) -> Path:
        return self.root / rel


@dataclass
class Context:
    files: SceneFiles
    max_faces: int
    frame: ViewFrame | None = None
    poses: np.ndarray | None = None
    Ks: np.ndarray | None = None
    box: tuple[np.ndarray, np.ndarray] | None = None


def _photos_section(ctx: Context) -> str:
    f = ctx.files
    overlay = f.p("masks/overlay.jpg")
    parts = []
    if overlay.is_file():
        parts.append(img_tag(overlay.read_bytes(), "image/jpeg", "photos with mask overlay", "wide"))
        parts.append("<p class='caption'>masks/overlay.jpg: the part of each photo outside its mask is tinted "
                     "red (up to 16 views, evenly spaced).</p>")
    elif f.p("dataset/image").is_dir():
        parts.append(img_tag(contact_sheet(f.p("dataset/image"), f.p("dataset/mask")), "image/jpeg",
                              "dataset images with mask overlay", "wide"))
        parts.append("<p class='caption'>dataset/image with dataset/mask: outside the mask tinted red "
                     "(masks/overlay.jpg not found).</p>")
    else:
        raise Missing("neither masks/overlay.jpg nor dataset/image/ exists: the masks and dataset stages have "
                      "not run")
    rep = f.p("masks/report.json")
    if rep.is_file():
        r = read_report_if_any(rep)
        shares = list((r.get("final_foreground_share") or {}).values())
        cons = r.get("consistency") or {}
        parts.append("<h3>Masks</h3>" + kv_table([
            ("source", r.get("source")),
            ("model", r.get("model")),
            ("images", r.get("n_images")),
            ("degenerate views", ", ".join(r.get("degenerate_views") or []) or "none"),
            ("mean foreground share", float(np.mean(shares)) if shares else None),
            ("median IoU with the multi-view hull", cons.get("median_iou")),
            ("time (s)", (r.get("timings") or {}).get("total_s")),
        ]))
    else:
        parts.append(missing_note("masks/report.json not found: no masks summary (masks given with the dataset?)"))
    return "\n".join(parts)


def _sfm_section(ctx: Context) -> str:
    f = ctx.files
    rep = f.p("sfm/report.json")
    if not rep.is_file():
        meta = f.p("dataset/meta.json")
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


def _cameras_section(ctx: Context) -> str:
    f = ctx.files
    notes = []
    if ctx.poses is None:
        raise Missing("dataset/cameras_sphere.npz not found: no cameras to draw (the dataset stage has not run)")
    points = colors = None
    sparse = f.p("sfm/sparse/0")
    if sparse.is_dir():
        points, colors = read_sparse_points(sparse)
        if f.p("dataset/meta.json").is_file():  # the SfM model's frame -> the dataset's (upright) world
            from ..frames import sfm_to_world

            points = sfm_to_world(f.p("dataset")).apply(points)
    else:
        notes.append("no sfm/sparse/0: no sparse points (poses from reference cameras, or SfM has not run)")
    hull = None
    if f.p("hull.npz").is_file():
        hull = hull_surface_points(f.p("hull.npz"))
    else:
        notes.append("hull.npz not found: no visual hull (the visual_hull stage has not run)")
    if ctx.box is None:
        notes.append("bbox.json not found: no object box")
    plane, inliers, support_line = _support(f)
    if points is None and f.p("hull.npz").is_file():
        points = read_hull_file(f.p("hull.npz")).support_points  # triangulated with the reference cameras
    png = camera_figure(ctx.poses, ctx.Ks, ctx.frame, points=points, point_colors=colors, box=ctx.box, hull=hull,
                        plane=plane, plane_inliers=inliers)
    units = read_report_if_any(f.p("dataset/meta.json")).get("units")
    cap = (f"{len(ctx.poses)} cameras from dataset/cameras_sphere.npz (frusta; camera 0 labelled), in world "
           f"units ({units or 'world units'}), z up (the world's z where the dataset is upright, else the cameras' "
           "mean up direction)"
           + (f"; {len(points)} sparse points from sfm/sparse/0" if points is not None and sparse.is_dir() else "")
           + (f"; {len(points)} points triangulated with these cameras (hull.npz)"
              if points is not None and not sparse.is_dir() else "")
           + (f"; {len(hull)} hull surface voxels from hull.npz" if hull is not None else "") + ".")
    return "\n".join([img_tag(png, "image/png", "cameras and sparse points", "wide"),
                      f"<p class='caption'>{esc(cap)}</p>",
                      *([f"<p class='caption'>{esc(support_line)}</p>"] if support_line else []),
                      *(missing_note(n) for n in notes)])


def _support(f: SceneFiles) -> tuple[tuple[np.ndarray, float] | None, np.ndarray | None, str]:
    """The support plane of bbox.json (world), its inlier points (hull.npz) and one line saying what bounds
    the object (the plane, or the visibility cull of the mesh stage, and why)."""
    if not f.p("bbox.json").is_file():
        return None, None, ""
    sup = read_bbox_record(f.p("bbox.json")).get("support")
    if not isinstance(sup, dict):
        return None, None, "Support: not searched (bbox.json from before the support search)."
    mesh_note = ""
    if f.p("mesh.json").is_file():
        m = read_report_if_any(f.p("mesh.json")).get("support") or {}
        vis = m.get("visibility")
        if vis:
            mesh_note = (f" The mesh stage removed {vis['area_removed']:.4g} world units^2 "
                         f"({vis['area_removed_share']:.1%} of the surface) that no camera observes.")
        elif m.get("cut"):
            mesh_note = f" The mesh ends on the plane (a flat cap {m.get('margin_world', 0):.3g} below it)."
        elif m:
            mesh_note = " The mesh keeps its raw extent (mesh.cut_at_support: false)."
    if sup.get("method") == "plane":
        src = sup.get("source", {})
        w = sup["plane"]["world"]
        line = (f"Support plane: {sup.get('message', '')} ({src.get('kind', '?')}: {src.get('points', '?')} points); "
                f"{'the hull is cut there' if sup.get('hull_cut') else 'recorded only (visual_hull.support: record)'}."
                + mesh_note)
        inl = None
        if f.p("hull.npz").is_file():
            h = read_hull_file(f.p("hull.npz"))
            if h.support_points is not None and h.support_inliers is not None:
                inl = h.support_points[h.support_inliers]
        return (np.asarray(w["normal"], dtype=np.float64), float(w["offset"])), inl, line
    if sup.get("method") == "none":
        return None, None, "Support: search switched off (visual_hull.support: off)." + mesh_note
    return None, None, (f"No support plane ({sup.get('reason', '?')}): {sup.get('message', '')}. The visual hull is "
                        "not cut; the mesh stage culls what no camera observes instead." + mesh_note)


def _training_section(ctx: Context) -> str:
    f = ctx.files
    csv = f.p("neus/train_log.csv")
    if not csv.is_file():
        raise Missing("neus/train_log.csv not found: the train stage has not run")
    df = pd.read_csv(csv)
    if df.empty:
        raise Missing("neus/train_log.csv has no rows yet")
    metrics = read_report_if_any(f.p("neus/metrics.json"))
    held = "heldout_psnr" in metrics
    n_held = len(metrics.get("heldout_views") or [])
    if held:
        dot, dot_label = metrics["heldout_psnr"], f"mean of {n_held} held-out views"
    else:
        dot, dot_label = metrics.get("val_psnr"), f"training view {metrics.get('val_view', '?')} (not held out)"
    parts = [img_tag(training_figure(df, dot, dot_label), "image/png", "training curves", "wide")]
    cfg = {}
    if f.p("neus/config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load(f.p("neus/config.yaml").read_text()) or {}
    parts.append(kv_table([
        ("preset", cfg.get("preset")),
        ("steps", metrics.get("steps", int(df["step"].iloc[-1]) + 1)),
        ("time (s)", metrics.get("seconds", float(df["seconds"].iloc[-1]) if "seconds" in df else None)),
        ("device", metrics.get("device")),
        *([("held-out views (never trained on)", f"{n_held}: {', '.join(metrics.get('heldout_views') or [])}"),
           ("held-out PSNR (dB, mean)", metrics.get("heldout_psnr")),
           ("held-out mask IoU (mean)", metrics.get("heldout_mask_iou")),
           *([("held-out SSIM (mean)", metrics["heldout_ssim"])] if "heldout_ssim" in metrics else [])]
          if held else
          [("PSNR of a training view (dB; no view held out, so not a validation)", metrics.get("val_psnr")),
           ("mask IoU of that training view", metrics.get("val_mask_iou")),
           ("that training view", metrics.get("val_view"))]),
        ("training-batch PSNR (dB, last row of train_log.csv)", float(df["psnr"].iloc[-1]) if "psnr" in df else None),
        ("final inv_s", metrics.get("inv_s", float(df["inv_s"].iloc[-1]) if "inv_s" in df else None)),
        ("ray samples per second", metrics.get("samples_per_s")),
        ("config hash", cfg.get("hash")),
    ]))
    if not metrics:
        parts.append(missing_note("neus/metrics.json not found: training has not finished"))
    return "\n".join(parts)


def _renders_section(ctx: Context, n_latest: int = 3) -> str:
    folder = ctx.files.p("neus/renders")
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise Missing("no neus/renders/*.png: the train stage has not run (or wrote no validation render)")
    steps = [p for p in files if p.stem != "final"][-n_latest:]
    chosen = steps + [p for p in files if p.stem == "final"]
    metrics = read_report_if_any(ctx.files.p("neus/metrics.json"))
    which = (f"held-out view {metrics.get('val_view', '?')} (never trained on)" if "heldout_psnr" in metrics
             else f"training view {metrics.get('val_view', '?')} (no view held out)" if metrics else "first view")
    parts = [f"<p class='caption'>Each panel: ground truth | rendered colour | normals | opacity of {esc(which)}, "
             "the latest renders last.</p>"]
    for p in chosen:
        parts.append(f"<figure>{img_tag(p.read_bytes(), 'image/png', p.name, 'render')}"
                     f"<figcaption>{esc(p.name)}</figcaption></figure>")
    return "\n".join(parts)


def _error_values(ctx: Context, V: np.ndarray) -> tuple[np.ndarray, float | None, str] | None:
    """Per-vertex accuracy error of ``V`` (world) from eval_errors.ply, or None (with a note) when absent."""
    from scipy.spatial import cKDTree

    f = ctx.files
    cloud = f.p("eval_errors.ply")
    if not cloud.is_file():
        return None
    pts, err, vmax = read_error_cloud(cloud)
    ev = read_report_if_any(f.p("eval.json"))
    vmax = (ev.get("error_cloud") or {}).get("vmax", vmax)
    M = np.asarray((ev.get("alignment") or {}).get("matrix", np.eye(4)), dtype=np.float64)
    Vg = V @ M[:3, :3].T + M[:3, 3]  # the mesh in the ground truth's frame, where the errors were measured
    _, idx = cKDTree(pts).query(Vg, k=1)
    unit = ev.get("units", "ground-truth units")
    return err[idx], vmax, f"accuracy error ({unit})"


def _mesh_section(ctx: Context) -> str:
    f = ctx.files
    path = next((p for p in (f.p("mesh_clean.ply"), f.p("mesh.ply")) if p.is_file()), None)
    if path is None:
        raise Missing("neither mesh_clean.ply nor mesh.ply exists: the mesh stage has not run")
    V, F, n_faces = read_mesh_decimated(path, ctx.max_faces)
    frame = ctx.frame or ViewFrame(np.eye(3), (V.min(0) + V.max(0)) / 2)
    parts = []
    meta = read_report_if_any(f.p("mesh.json"))
    info = meta.get("mesh_clean" if path.name == "mesh_clean.ply" else "mesh", {}) if meta else {}
    parts.append(kv_table([
        ("mesh", path.name),
        ("faces", n_faces),
        ("vertices", info.get("vertices")),
        ("watertight", info.get("watertight")),
        ("resolution", meta.get("resolution")),
        ("shown with", f"{len(F)} faces (quadric decimation)" if len(F) < n_faces else f"{len(F)} faces"),
    ]))
    parts.append(img_tag(render_mesh_views(V, F, frame=frame), "image/png", f"{path.name} shaded", "wide"))
    parts.append(f"<p class='caption'>{esc(path.name)}, Lambert-shaded, orthographic; azimuth 0 looks from "
                 "camera 0's side, z up (the world's z in an upright dataset, else the cameras' up).</p>")
    errors = _error_values(ctx, V)
    if errors is None:
        parts.append(missing_note("eval_errors.ply not found: no error colouring (no ground truth for this scene, the "
                              "DTU protocol, or the evaluate stage has not run)"))
    else:
        vals, vmax, label = errors
        face_err = vals[F].mean(1)
        parts.append(img_tag(render_mesh_views(V, F, frame=frame, face_values=face_err, vmax=vmax,
                                                value_label=label), "image/png", "mesh coloured by error", "wide"))
        parts.append(f"<p class='caption'>coloured by the distance of each part of the mesh to the ground truth "
                     f"(eval_errors.ply; yellow = {fmt(vmax)} or more, the largest F-score threshold).</p>")
    parts.extend(_textured_view(ctx))
    return "\n".join(parts)


def _textured_view(ctx: Context) -> list[str]:
    """The textured export (export/export.json, export/preview.jpg): its numbers and photos beside the textured
    mesh re-rendered from their cameras."""
    f = ctx.files
    meta_path = f.p("export/export.json")
    if not meta_path.is_file():
        return [missing_note("export/export.json not found: no textured view (the export stage has not run)")]
    x = read_report(meta_path, "the export stage")
    psnr = x.get("psnr") or {}
    bake = x.get("bake") or {}
    parts = ["<h3>Textured export</h3>", kv_table([
        ("files", ", ".join(f"export/{v}" for v in (x.get("files") or {}).values())),
        ("faces", f"{x.get('faces')} (from {x.get('faces_in')}; target {x.get('target_faces')})"),
        ("texture", f"{x.get('texture_size')}^2 from the {x.get('texture_from')}"),
        ("surface seen by a photo", f"{100 * bake['seen_share']:.1f}%" if "seen_share" in bake else None),
        (f"re-render PSNR (dB), {psnr.get('kind', '')}", psnr.get("mean")),
        ("frame", (x.get("frame") or {}).get("description")),
    ])]
    preview = f.p("export/preview.jpg")
    if preview.is_file():
        views = (x.get("preview") or {}).get("views") or []
        per_view = psnr.get("views") or {}
        parts.append(img_tag(preview.read_bytes(), "image/jpeg", "photos beside the textured mesh", "wide"))
        parts.append("<p class='caption'>left: the photo; right: the textured mesh rendered from that photo's camera "
                     f"(views {', '.join(f'{v} ({fmt(per_view.get(v))} dB)' for v in views)}; PSNR inside the "
                     "mask).</p>")
    return parts


def _evaluation_section(ctx: Context) -> str:
    f = ctx.files
    ev = f.p("eval.json")
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
        ("accuracy / completeness, % of diagonal",
         f"{fmt(pct.get('accuracy'))} / {fmt(pct.get('completeness'))}" if pct else None),
        ("GT box diagonal", e.get("gt_bbox_diag")),
    ]
    al = e.get("alignment")
    if al:
        method = al.get("method", "similarity") + (" + ICP" if "icp" in al else "")
        rows += [("alignment (mesh to ground truth)", method), ("alignment scale", al.get("scale")),
                 ("alignment RMS (camera centres)", al.get("rms"))]
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


def _frame_section(ctx: Context) -> str:
    """How the world frame was found (up, base, centre) and its units (metric scale or SfM units)."""
    meta = read_report_if_any(ctx.files.p("dataset/meta.json"))
    if not meta:
        raise Missing("dataset/meta.json not found: the dataset stage has not run")
    fr = meta.get("frame")
    if not fr:
        raise Missing("dataset/meta.json records no world frame (written before the upright frame): the world is "
                      "the SfM model's frame; re-run the dataset stage")
    rows: list[tuple[str, object]] = [("world frame", fr.get("summary")), ("units", meta.get("units"))]
    if fr.get("name") == "upright":
        up, sc = fr.get("up") or {}, fr.get("scale") or {}
        rows += [("up (z)", up.get("how")), ("the cameras' up", (fr.get("camera_up") or {}).get("how")),
                 ("base (z = 0)", (fr.get("base") or {}).get("how")), ("centre (on the z axis)",
                                                                     (fr.get("centre") or {}).get("how")),
                 ("azimuth", fr.get("azimuth")), ("scale", sc.get("message")),
                 ("similarity from the SfM frame: scale", (fr.get("from_sfm") or {}).get("scale"))]
        for m in ((sc.get("marker") or {}).get("markers") or []):
            rows.append((f"marker id {m['id']}", f"{m['photos']} photos, side {m['side_sfm']:.5g} SfM units, corners "
                         f"reprojected within {m['reprojection_px']:.2f} px RMS, edges agree within "
                         f"{100 * m['edge_spread']:.2f}%"))
    return kv_table(rows) + ("<p class='caption'>dataset/meta.json: every artifact in world units (cameras, "
                              "bbox.json, meshes) uses this frame; frame.from_sfm maps the SfM model into it.</p>")


def _quality_section(ctx: Context) -> str:
    """The verdict without ground truth: SfM points against the mesh, held-out views (see neus_stage.quality)."""
    f = ctx.files
    q = read_report_if_any(f.p("quality.json"))
    if not q:
        if not (f.p("mesh_clean.ply").is_file() or f.p("mesh.ply").is_file()):
            raise Missing("no mesh yet: the quality is judged once the mesh stage has run")
        from ..quality import assess

        q = assess(f.root)
    g, h = q.get("geometry") or {}, q.get("heldout") or {}
    units = q.get("units", "world units")
    rows: list[tuple[str, object]] = [("verdict", q.get("line"))]
    if g.get("available"):
        rows += [("object points", f"{g['points']} ({g.get('kind')})"),
                 (f"distance to the mesh, median ({units})", f"{fmt(g['median'])} ({100 * g['median_share']:.2f}% "
                                                            "of the object size)"),
                 (f"distance to the mesh, 90th percentile ({units})",
                  f"{fmt(g['p90'])} ({100 * g['p90_share']:.2f}% of the object size)"),
                 ("points within 1% of the size", f"{100 * g['within_1pct_share']:.1f}%"),
                 (f"object size ({g.get('object_size_is')})", g.get("object_size")),
                 (f"points farther than {100 * g['far_share_limit']:.0f}% of the size", g.get("far_points"))]
        if g.get("photos_to_check"):
            rows.append(("photos seeing most far points", ", ".join(g["photos_to_check"])))
    else:
        rows.append(("geometry check", f"not available: {g.get('reason')}"))
    if h.get("available"):
        rows += [("held-out views (never trained on)", h["views"]), ("held-out PSNR (dB, mean)", h.get("psnr")),
                 ("held-out mask IoU (mean)", h.get("mask_iou")),
                 ("held-out SSIM (mean)", h.get("ssim") if h.get("ssim") is not None else h.get("ssim_note"))]
    else:
        rows.append(("held-out views", f"none: {h.get('reason')}"))
    rows.append(("training-batch PSNR (dB, last tenth of the steps; training views, for contrast)",
                 q.get("training_batch_psnr")))
    parts = [kv_table(rows)]
    if h.get("per_view"):
        parts.append("<h3>Held-out views</h3>" + df_table(pd.DataFrame(h["per_view"])))
    parts.append("<p class='caption'>quality.json. The SfM points were triangulated from the photos by COLMAP, "
                 "independently of the trained surface. Held-out views are never trained on (train.holdout_every); "
                 "their masks still shape the visual hull that bounds training and the mesh's mask culling.</p>")
    return "\n".join(parts)


def _timings_section(ctx: Context) -> str:
    f = ctx.files
    if f.benchmarks is None or not Path(f.benchmarks).is_dir():
        raise Missing(f"benchmarks folder {f.benchmarks} not found: no rule times (stages run by hand?)")
    df = rule_times(f.benchmarks, f.scene)
    df = df[df["rule"] != "report"]  # a previous report's time, if any: this one's is written after it ends
    if df.empty:
        raise Missing(f"no {f.benchmarks}/<rule>/{f.scene}.tsv files: no rule times")
    total = pd.DataFrame([{"rule": "total", "seconds": df["seconds"].sum()}])
    return df_table(pd.concat([df, total], ignore_index=True)) + (
        "<p class='caption'>From Snakemake's benchmark files (wall-clock seconds, peak resident memory); the "
        "report's own time is not included.</p>")


SECTIONS: list[tuple[str, str, Callable[[Context], str]]] = [
    ("photos", "Photos and masks", _photos_section),
    ("sfm", "Structure from motion", _sfm_section),
    ("frame", "World frame and scale", _frame_section),
    ("cameras", "Cameras, sparse points, object box and visual hull", _cameras_section),
    ("training", "Training", _training_section),
    ("renders", "Rendered views", _renders_section),
    ("mesh", "Mesh", _mesh_section),
    ("quality", "Quality without ground truth", _quality_section),
    ("evaluation", "Evaluation", _evaluation_section),
    ("timings", "Run times", _timings_section),
]
