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

import base64
import datetime as _dt
import html
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .artifacts.box import read_bbox_record, read_hull_file, read_world_box
from .cameras import decompose_projection, load_cameras_sphere
from .errors import StageError

log = logging.getLogger(__name__)

#: the workflow's rules in pipeline order (the run-time table follows it; other rules come after)
RULE_ORDER = ["sfm", "dtu_masks", "masks", "neus_dataset", "visual_hull", "train", "mesh", "evaluate", "report"]
#: mesh preview viewpoints: (elevation, azimuth) in degrees; azimuth 0 looks from the first camera's side
VIEWS = [(20.0, 0.0), (20.0, 90.0), (20.0, 180.0), (60.0, 270.0)]


class Missing(Exception):
    """A section's artifact is absent: the message says which and why (shown instead of the section)."""


@dataclass
class Section:
    key: str
    title: str
    body: str = ""
    status: str = "ok"  # ok | missing | error


# ---------------------------------------------------------------------------------------------- helpers
def _esc(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: object) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_fmt(v) for v in x)
    return str(x)


def _img_tag(data: bytes, mime: str, alt: str, css: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{b64}" alt="{_esc(alt)}"{f" class={css!r}" if css else ""}>'


def _figure(fig) -> bytes:
    """PNG bytes of a matplotlib Figure (object API: works headless without pyplot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in rows if v is not None)
    return f'<table class="kv">{body}</table>'


def _df_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="grid", float_format=lambda v: f"{v:.4g}", na_rep="")


def _missing(text: str) -> str:
    return f'<p class="missing">{_esc(text)}</p>'


# ------------------------------------------------------------------------------------------- the frame
@dataclass
class ViewFrame:
    """A world -> plot rotation (the cameras' mean up direction becomes +z) and the object's centre."""

    R: np.ndarray  # (3,3) rows: plot x, y, z axes in world coordinates
    center: np.ndarray  # (3,) world

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) @ self.R.T


def camera_poses(cameras_npz: Path) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (N,3,3) and camera-to-world poses (N,4,4) in the world frame of a ``cameras_sphere.npz``."""
    world_mats, _ = load_cameras_sphere(cameras_npz)
    Ks, poses = zip(*(decompose_projection(wm[:3, :4]) for wm in world_mats))
    return np.stack(Ks), np.stack(poses)


def view_frame(poses: np.ndarray | None, center: np.ndarray, up: np.ndarray | None = None) -> ViewFrame:
    """Up = ``up`` (the world's z in an upright dataset) or the cameras' mean up direction (photos are mostly
    taken upright), x towards the first camera."""
    if poses is None or len(poses) == 0:
        return ViewFrame(np.eye(3), np.asarray(center, dtype=np.float64))
    if up is None:
        up = -poses[:, :3, 1].mean(0)  # OpenCV cameras: y points down in the image
    if np.linalg.norm(up) < 1e-9:
        up = np.array([0.0, 0.0, 1.0])
    z = up / np.linalg.norm(up)
    x = poses[0, :3, 3] - center
    x = x - (x @ z) * z
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    return ViewFrame(np.stack([x, np.cross(z, x), z]), np.asarray(center, dtype=np.float64))


def _box_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(12,2,3) edges of an axis-aligned box."""
    c = np.array([[hi[i] if (k >> i) & 1 else lo[i] for i in range(3)] for k in range(8)])
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return np.stack([c[[a, b]] for a, b in pairs])


def _set_equal(ax, pts: np.ndarray, pad: float = 0.05, zoom: float = 1.0) -> None:
    lo, hi = pts.min(0), pts.max(0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + pad) + 1e-9
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_box_aspect((1, 1, 1), zoom=zoom)


# ---------------------------------------------------------------------------------------------- inputs
def read_sparse_points(sparse_dir: Path, max_points: int = 8000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points (n,3) and colours (n,3, 0..1) of a COLMAP model, a random subset of at most ``max_points``."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(sparse_dir))
    pts = [(p.xyz, p.color) for p in rec.points3D.values()]
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    xyz = np.array([p[0] for p in pts], dtype=np.float64)
    rgb = np.array([p[1] for p in pts], dtype=np.float64) / 255.0
    if len(xyz) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, rgb


def hull_surface_points(hull_npz: Path, max_points: int = 6000, seed: int = 0) -> np.ndarray:
    """World coordinates of the visual hull's surface voxels (occupied with a free 6-neighbour)."""
    from scipy.ndimage import binary_erosion

    h = read_hull_file(hull_npz)
    occ = h.occupancy
    surface = occ & ~binary_erosion(occ, border_value=0)
    idx = np.argwhere(surface)
    if len(idx) > max_points:
        idx = idx[np.sort(np.random.default_rng(seed).choice(len(idx), max_points, replace=False))]
    norm = h.bounds_min + (idx + 0.5) * h.voxel()
    if h.scale_mat is None:
        raise Missing(f"{hull_npz} holds no scale_mat: run the visual-hull stage again")
    s = h.scale_mat
    return norm * s[0, 0] + s[:3, 3]


def read_error_cloud(path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Points (n,3), per-point errors (n,) and the colour scale's top (from the header comment, if any) of
    the binary PLY the evaluate stage writes (``x y z red green blue error``)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise StageError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise StageError(f"{path}: expected a binary little-endian PLY (as the evaluate stage writes)")
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1", "int": "<i4"}
    props, n, vmax = [], 0, None
    for line in header:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:1] == ["property"] and len(parts) == 3:
            props.append((parts[2], types[parts[1]]))
        elif parts[:1] == ["comment"] and "0.." in line:
            try:
                vmax = float(line.rsplit("0..", 1)[1])
            except ValueError:
                vmax = None
    names = [p[0] for p in props]
    if "error" not in names:
        raise StageError(f"{path}: no per-point 'error' property")
    rec = np.frombuffer(data, dtype=np.dtype(props), count=n, offset=end + len(b"end_header\n"))
    pts = np.stack([rec["x"], rec["y"], rec["z"]], 1).astype(np.float64)
    return pts, rec["error"].astype(np.float64), vmax


def load_mesh(path: Path, max_faces: int = 20000) -> tuple[np.ndarray, np.ndarray, int]:
    """Vertices, faces (decimated to at most ``max_faces`` by quadric decimation) and the original face count."""
    import open3d as o3d

    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        m = o3d.io.read_triangle_mesh(str(path))
        n_faces = len(m.triangles)
        if n_faces == 0:
            raise StageError(f"{path}: no faces")
        if n_faces > max_faces:
            m = m.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
        m.remove_unreferenced_vertices()
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64), n_faces


# ----------------------------------------------------------------------------------------------- figures
def render_mesh_views(
    V: np.ndarray,
    F: np.ndarray,
    *,
    frame: ViewFrame | None = None,
    views: list[tuple[float, float]] = VIEWS,
    face_values: np.ndarray | None = None,
    vmax: float | None = None,
    value_label: str = "",
    panel_px: int = 300,
) -> bytes:
    """PNG of a mesh seen from ``views`` (elevation, azimuth in degrees), orthographic, Lambert-shaded.

    With ``face_values`` the faces are coloured by them (viridis, 0 .. ``vmax``; shading kept dimmer) and a
    colour bar is added. ``frame`` maps the world to the plot axes (z up); default: centred, axes unchanged.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    frame = frame or ViewFrame(np.eye(3), V.mean(0))
    P = frame.apply(V)
    tri = P[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-30
    if face_values is not None:
        vmax = float(vmax) if vmax and vmax > 0 else float(np.percentile(face_values, 99) or 1.0)
        base = colormaps["viridis"](np.clip(face_values / vmax, 0, 1))[:, :3]
    else:
        base = np.tile([0.78, 0.80, 0.86], (len(F), 1))
    dpi = 100
    fig = Figure(figsize=(panel_px * len(views) / dpi, panel_px / dpi + (0.6 if face_values is not None else 0)),
                 dpi=dpi)
    for i, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
        e, a = np.radians(elev), np.radians(azim)
        eye = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        right = np.array([-np.sin(a), np.cos(a), 0.0])
        light = eye + 0.5 * np.array([0.0, 0.0, 1.0]) + 0.4 * right
        light /= np.linalg.norm(light)
        front = n @ eye > 0  # back faces culled (marching-cubes meshes are oriented outwards)
        lambert = np.clip(n[front] @ light, 0, 1)
        shade = (0.25 + 0.75 * lambert) if face_values is None else (0.55 + 0.45 * lambert)
        colors = np.clip(base[front] * shade[:, None], 0, 1)
        # edges in the face colour cover the anti-aliasing seams between triangles, through which the
        # faces drawn earlier (behind) would show as a faint ghost
        coll = Poly3DCollection(tri[front], facecolors=colors, edgecolors=colors, linewidths=0.6)
        ax.add_collection3d(coll)
        _set_equal(ax, P, pad=0.0, zoom=1.25)
        ax.set_proj_type("ortho")
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
        ax.set_title(f"elev {elev:.0f}°, azim {azim:.0f}°", fontsize=8)
    if face_values is not None:
        from matplotlib.cm import ScalarMappable

        cax = fig.add_axes([0.3, 0.06, 0.4, 0.035])
        cb = fig.colorbar(ScalarMappable(Normalize(0, vmax), colormaps["viridis"]), cax=cax, orientation="horizontal")
        cb.set_label(value_label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    fig.subplots_adjust(left=0, right=1, top=0.92, bottom=0.12 if face_values is not None else 0, wspace=0)
    return _figure(fig)


def camera_figure(
    poses: np.ndarray | None,
    Ks: np.ndarray | None,
    frame: ViewFrame,
    *,
    points: np.ndarray | None = None,
    point_colors: np.ndarray | None = None,
    box: tuple[np.ndarray, np.ndarray] | None = None,
    hull: np.ndarray | None = None,
    plane: tuple[np.ndarray, float] | None = None,
    plane_inliers: np.ndarray | None = None,
) -> bytes:
    """Two 3D panels: the whole scene (cameras as frusta, sparse points, object box) and the object (box,
    visual-hull surface voxels, the sparse points inside the box). Inputs in world coordinates. ``plane``
    (unit normal, offset: normal @ x + offset = 0) is the support plane, drawn as a translucent square
    under the object box in both panels, with ``plane_inliers`` (points, world) in orange."""
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    fig = Figure(figsize=(12, 5.6), dpi=100)
    box_edges = frame.apply(_box_edges(*box).reshape(-1, 3)).reshape(-1, 2, 3) if box is not None else None
    cams = frame.apply(poses[:, :3, 3]) if poses is not None else np.zeros((0, 3))
    pts = frame.apply(points) if points is not None and len(points) else np.zeros((0, 3))
    extent = [cams, box_edges.reshape(-1, 3) if box_edges is not None else np.zeros((0, 3))]
    extent = np.concatenate(extent) if sum(len(e) for e in extent) else (pts if len(pts) else np.zeros((1, 3)))

    ax = fig.add_subplot(1, 2, 1, projection="3d")
    size = float(np.ptp(extent, axis=0).max()) if len(extent) > 1 else 1.0
    if len(pts):
        lo, hi = extent.min(0) - 0.1 * size, extent.max(0) + 0.1 * size
        inside = ((pts >= lo) & (pts <= hi)).all(1)
        ax.scatter(*pts[inside].T, s=0.6, c=point_colors[inside] if point_colors is not None else "0.4",
                   depthshade=False, linewidths=0)
    if poses is not None:
        depth = 0.08 * size
        w, h = 2 * Ks[:, 0, 2], 2 * Ks[:, 1, 2]  # principal point near the image centre
        lines = []
        for pose, K, wi, hi_ in zip(poses, Ks, w, h):
            corners = np.array([[0, 0, 1], [wi, 0, 1], [wi, hi_, 1], [0, hi_, 1]], dtype=np.float64)
            rays = (np.linalg.inv(K) @ corners.T).T * depth
            world = rays @ pose[:3, :3].T + pose[:3, 3]
            c = pose[:3, 3]
            q = frame.apply(np.vstack([c, world]))
            lines += [[q[0], q[k]] for k in range(1, 5)] + [[q[k], q[k % 4 + 1]] for k in range(1, 5)]
        ax.add_collection3d(Line3DCollection(lines, colors="tab:blue", linewidths=0.6))
        ax.scatter(*cams.T, s=6, c="tab:blue", depthshade=False)
        ax.text(*cams[0], " 0", fontsize=7, color="tab:blue")
    if box_edges is not None:
        ax.add_collection3d(Line3DCollection(box_edges, colors="tab:red", linewidths=1.0))
    square = None
    if plane is not None:
        n, off = np.asarray(plane[0], dtype=np.float64), float(plane[1])
        mid = (box[0] + box[1]) / 2 if box is not None else (poses[:, :3, 3].mean(0) if poses is not None else 0 * n)
        foot = mid - (n @ mid + off) * n  # the box centre dropped onto the plane
        half = 0.75 * (float(np.linalg.norm(box[1] - box[0])) if box is not None else size / 4)
        a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(n, a)
        square = frame.apply(np.array([foot + half * (sa * a + sb * b) for sa, sb in ((-1, -1), (1, -1), (1, 1),
                                                                                       (-1, 1))]))
        ax.add_collection3d(Poly3DCollection([square], facecolors=(1.0, 0.55, 0.0, 0.25), edgecolors="tab:orange"))
        if plane_inliers is not None and len(plane_inliers):
            ax.scatter(*frame.apply(plane_inliers).T, s=0.8, c="tab:orange", depthshade=False, linewidths=0)
    _set_equal(ax, extent)
    ax.set_title("cameras (blue), sparse points, object box (red)"
                 + (", support plane and its points (orange)" if plane is not None else ""), fontsize=9)
    ax.tick_params(labelsize=6)

    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    inner = []
    if hull is not None and len(hull):
        hp = frame.apply(hull)
        ax2.scatter(*hp.T, s=3, c=hp[:, 2], cmap="copper", depthshade=True, linewidths=0, alpha=0.8)
        inner.append(hp)
    if box_edges is not None:
        ax2.add_collection3d(Line3DCollection(box_edges, colors="tab:red", linewidths=1.2))
        inner.append(box_edges.reshape(-1, 3))
        if len(pts):
            lo, hi = box_edges.reshape(-1, 3).min(0), box_edges.reshape(-1, 3).max(0)
            inside = ((pts >= lo) & (pts <= hi)).all(1)
            ax2.scatter(*pts[inside].T, s=2, c="tab:green", depthshade=False, linewidths=0)
    if square is not None:  # a tighter, fainter square: matplotlib draws it over the hull whatever the depth
        mid2 = square.mean(0)
        ax2.add_collection3d(Poly3DCollection([mid2 + 0.6 * (square - mid2)], facecolors=(1.0, 0.55, 0.0, 0.1),
                                              edgecolors="tab:orange", linewidths=1.2))
    _set_equal(ax2, np.concatenate(inner) if inner else extent)
    ax2.set_title("object: visual hull surface, box (red), sparse points in the box (green)"
                  + (", support plane (orange)" if square is not None else ""), fontsize=9)
    ax2.tick_params(labelsize=6)
    fig.subplots_adjust(left=0, right=1, top=0.93, bottom=0.02, wspace=0.05)
    return _figure(fig)


def training_figure(log_df: pd.DataFrame, val_psnr: float | None = None, val_label: str = "held-out views") -> bytes:
    """Loss terms, PSNR, the learned inverse standard deviation ``inv_s`` and rays/samples per step;
    ``val_psnr`` is drawn as a dot labelled ``val_label`` (what it was measured on)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6.5), dpi=100)
    axes = fig.subplots(2, 2)
    step = log_df["step"]
    ax = axes[0, 0]
    for col in ("loss", "color_loss", "mask_loss", "eikonal"):
        if col in log_df and (log_df[col] > 0).any():
            ax.plot(step, log_df[col], label=col, lw=1)
    ax.set_yscale("log")
    ax.set_title("losses", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    if "psnr" in log_df:
        ax.plot(step, log_df["psnr"], lw=1, label="training batch")
    if val_psnr is not None and np.isfinite(val_psnr):
        ax.scatter([step.iloc[-1]], [val_psnr], c="tab:red", zorder=3, label=f"{val_label}: {val_psnr:.2f} dB")
    ax.set_title("PSNR (dB)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    if "inv_s" in log_df:
        ax.plot(step, log_df["inv_s"], lw=1, c="tab:purple")
        ax.set_yscale("log")
    ax.set_title("inv_s (1 / SDF-to-density standard deviation)", fontsize=9)
    ax = axes[1, 1]
    if "n_rays" in log_df:
        ax.plot(step, log_df["n_rays"], lw=1, label="rays per step")
    if "samples" in log_df:
        ax2 = ax.twinx()
        ax2.plot(step, log_df["samples"], lw=1, c="tab:orange", label="samples per step")
        ax2.tick_params(labelsize=7)
        ax2.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("rays (blue) and network samples (orange) per step", fontsize=9)
    for a in axes.flat:
        a.set_xlabel("step", fontsize=8)
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return _figure(fig)


def contact_sheet(images_dir: Path, masks_dir: Path, n_max: int = 16, thumb: int = 200) -> bytes:
    """JPEG grid of up to ``n_max`` images (evenly spaced), background tinted red where the mask is off."""
    from PIL import ImageDraw

    stems = sorted(p.stem for p in Path(images_dir).glob("*.png"))
    if not stems:
        raise Missing(f"no images in {images_dir}")
    if len(stems) > n_max:
        stems = [stems[i] for i in np.linspace(0, len(stems) - 1, n_max).round().astype(int)]
    thumbs = []
    for s in stems:
        img = np.asarray(Image.open(Path(images_dir) / f"{s}.png").convert("RGB")).astype(np.float32)
        mp = Path(masks_dir) / f"{s}.png"
        if mp.is_file():
            m = np.asarray(Image.open(mp).convert("L").resize(img.shape[1::-1])) > 127
            img[~m] = 0.35 * img[~m] + 0.65 * np.array([255, 0, 0], np.float32)
        t = Image.fromarray(img.astype(np.uint8))
        t.thumbnail((thumb, thumb))
        ImageDraw.Draw(t).text((3, 2), s, fill=(255, 255, 0))
        thumbs.append(t)
    cols = min(4, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    tw, th = max(t.width for t in thumbs), max(t.height for t in thumbs)
    sheet = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    for i, t in enumerate(thumbs):
        sheet.paste(t, ((i % cols) * tw, (i // cols) * th))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


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
class _Context:
    files: SceneFiles
    max_faces: int
    frame: ViewFrame | None = None
    poses: np.ndarray | None = None
    Ks: np.ndarray | None = None
    box: tuple[np.ndarray, np.ndarray] | None = None


def _photos_section(ctx: _Context) -> str:
    f = ctx.files
    overlay = f.p("masks/overlay.jpg")
    parts = []
    if overlay.is_file():
        parts.append(_img_tag(overlay.read_bytes(), "image/jpeg", "photos with mask overlay", "wide"))
        parts.append("<p class='caption'>masks/overlay.jpg: the part of each photo outside its mask is tinted "
                     "red (up to 16 views, evenly spaced).</p>")
    elif f.p("dataset/image").is_dir():
        parts.append(_img_tag(contact_sheet(f.p("dataset/image"), f.p("dataset/mask")), "image/jpeg",
                              "dataset images with mask overlay", "wide"))
        parts.append("<p class='caption'>dataset/image with dataset/mask: outside the mask tinted red "
                     "(masks/overlay.jpg not found).</p>")
    else:
        raise Missing("neither masks/overlay.jpg nor dataset/image/ exists: the masks and dataset stages have "
                      "not run")
    rep = f.p("masks/report.json")
    if rep.is_file():
        r = json.loads(rep.read_text())
        shares = list((r.get("final_foreground_share") or {}).values())
        cons = r.get("consistency") or {}
        parts.append("<h3>Masks</h3>" + _kv_table([
            ("source", r.get("source")),
            ("model", r.get("model")),
            ("images", r.get("n_images")),
            ("degenerate views", ", ".join(r.get("degenerate_views") or []) or "none"),
            ("mean foreground share", float(np.mean(shares)) if shares else None),
            ("median IoU with the multi-view hull", cons.get("median_iou")),
            ("time (s)", (r.get("timings") or {}).get("total_s")),
        ]))
    else:
        parts.append(_missing("masks/report.json not found: no masks summary (masks given with the dataset?)"))
    return "\n".join(parts)


def _sfm_section(ctx: _Context) -> str:
    f = ctx.files
    rep = f.p("sfm/report.json")
    if not rep.is_file():
        meta = f.p("dataset/meta.json")
        source = json.loads(meta.read_text()).get("source") if meta.is_file() else None
        why = " (poses = reference: the cameras came with the photos)" if source and source != "sfm" else ""
        raise Missing(f"sfm/report.json not found: no structure-from-motion run for this scene{why}")
    r = json.loads(rep.read_text())
    cam = r.get("camera") or {}
    rows = [
        ("photos", r.get("n_photos")),
        ("registered", r.get("n_registered")),
        ("dropped", ", ".join(r.get("dropped") or []) or "none"),
        ("mean reprojection error (px)", r.get("mean_reprojection_error_px")),
        ("mean track length", r.get("mean_track_length")),
        ("sparse points", r.get("n_points")),
        ("image size", r.get("image_size")),
        ("camera", f"{cam.get('model', '?')} {_fmt(cam.get('params', []))}" if cam else None),
        ("matcher / mapper", f"{r.get('matcher')} / {r.get('mapper')}"),
        ("device", r.get("device")),
        ("time (s)", (r.get("timings") or {}).get("total_s")),
    ]
    return _kv_table(rows)


def _cameras_section(ctx: _Context) -> str:
    f = ctx.files
    notes = []
    if ctx.poses is None:
        raise Missing("dataset/cameras_sphere.npz not found: no cameras to draw (the dataset stage has not run)")
    points = colors = None
    sparse = f.p("sfm/sparse/0")
    if sparse.is_dir():
        points, colors = read_sparse_points(sparse)
        if f.p("dataset/meta.json").is_file():  # the SfM model's frame -> the dataset's (upright) world
            from .frames import sfm_to_world

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
    units = _load_json_file(f.p("dataset/meta.json")).get("units")
    cap = (f"{len(ctx.poses)} cameras from dataset/cameras_sphere.npz (frusta; camera 0 labelled), in world "
           f"units ({units or 'world units'}), z up (the world's z where the dataset is upright, else the cameras' "
           "mean up direction)"
           + (f"; {len(points)} sparse points from sfm/sparse/0" if points is not None and sparse.is_dir() else "")
           + (f"; {len(points)} points triangulated with these cameras (hull.npz)"
              if points is not None and not sparse.is_dir() else "")
           + (f"; {len(hull)} hull surface voxels from hull.npz" if hull is not None else "") + ".")
    return "\n".join([_img_tag(png, "image/png", "cameras and sparse points", "wide"),
                      f"<p class='caption'>{_esc(cap)}</p>",
                      *([f"<p class='caption'>{_esc(support_line)}</p>"] if support_line else []),
                      *(_missing(n) for n in notes)])


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
        m = json.loads(f.p("mesh.json").read_text()).get("support") or {}
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


def _training_section(ctx: _Context) -> str:
    f = ctx.files
    csv = f.p("neus/train_log.csv")
    if not csv.is_file():
        raise Missing("neus/train_log.csv not found: the train stage has not run")
    df = pd.read_csv(csv)
    if df.empty:
        raise Missing("neus/train_log.csv has no rows yet")
    metrics = json.loads(f.p("neus/metrics.json").read_text()) if f.p("neus/metrics.json").is_file() else {}
    held = "heldout_psnr" in metrics
    n_held = len(metrics.get("heldout_views") or [])
    if held:
        dot, dot_label = metrics["heldout_psnr"], f"mean of {n_held} held-out views"
    else:
        dot, dot_label = metrics.get("val_psnr"), f"training view {metrics.get('val_view', '?')} (not held out)"
    parts = [_img_tag(training_figure(df, dot, dot_label), "image/png", "training curves", "wide")]
    cfg = {}
    if f.p("neus/config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load(f.p("neus/config.yaml").read_text()) or {}
    parts.append(_kv_table([
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
        parts.append(_missing("neus/metrics.json not found: training has not finished"))
    return "\n".join(parts)


def _renders_section(ctx: _Context, n_latest: int = 3) -> str:
    folder = ctx.files.p("neus/renders")
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise Missing("no neus/renders/*.png: the train stage has not run (or wrote no validation render)")
    steps = [p for p in files if p.stem != "final"][-n_latest:]
    chosen = steps + [p for p in files if p.stem == "final"]
    metrics = _load_json_file(ctx.files.p("neus/metrics.json"))
    which = (f"held-out view {metrics.get('val_view', '?')} (never trained on)" if "heldout_psnr" in metrics
             else f"training view {metrics.get('val_view', '?')} (no view held out)" if metrics else "first view")
    parts = [f"<p class='caption'>Each panel: ground truth | rendered colour | normals | opacity of {_esc(which)}, "
             "the latest renders last.</p>"]
    for p in chosen:
        parts.append(f"<figure>{_img_tag(p.read_bytes(), 'image/png', p.name, 'render')}"
                     f"<figcaption>{_esc(p.name)}</figcaption></figure>")
    return "\n".join(parts)


def _error_values(ctx: _Context, V: np.ndarray) -> tuple[np.ndarray, float | None, str] | None:
    """Per-vertex accuracy error of ``V`` (world) from eval_errors.ply, or None (with a note) when absent."""
    from scipy.spatial import cKDTree

    f = ctx.files
    cloud = f.p("eval_errors.ply")
    if not cloud.is_file():
        return None
    pts, err, vmax = read_error_cloud(cloud)
    ev = json.loads(f.p("eval.json").read_text()) if f.p("eval.json").is_file() else {}
    vmax = (ev.get("error_cloud") or {}).get("vmax", vmax)
    M = np.asarray((ev.get("alignment") or {}).get("matrix", np.eye(4)), dtype=np.float64)
    Vg = V @ M[:3, :3].T + M[:3, 3]  # the mesh in the ground truth's frame, where the errors were measured
    _, idx = cKDTree(pts).query(Vg, k=1)
    unit = ev.get("units", "ground-truth units")
    return err[idx], vmax, f"accuracy error ({unit})"


def _mesh_section(ctx: _Context) -> str:
    f = ctx.files
    path = next((p for p in (f.p("mesh_clean.ply"), f.p("mesh.ply")) if p.is_file()), None)
    if path is None:
        raise Missing("neither mesh_clean.ply nor mesh.ply exists: the mesh stage has not run")
    V, F, n_faces = load_mesh(path, ctx.max_faces)
    frame = ctx.frame or ViewFrame(np.eye(3), (V.min(0) + V.max(0)) / 2)
    parts = []
    meta = json.loads(f.p("mesh.json").read_text()) if f.p("mesh.json").is_file() else {}
    info = meta.get("mesh_clean" if path.name == "mesh_clean.ply" else "mesh", {}) if meta else {}
    parts.append(_kv_table([
        ("mesh", path.name),
        ("faces", n_faces),
        ("vertices", info.get("vertices")),
        ("watertight", info.get("watertight")),
        ("resolution", meta.get("resolution")),
        ("shown with", f"{len(F)} faces (quadric decimation)" if len(F) < n_faces else f"{len(F)} faces"),
    ]))
    parts.append(_img_tag(render_mesh_views(V, F, frame=frame), "image/png", f"{path.name} shaded", "wide"))
    parts.append(f"<p class='caption'>{_esc(path.name)}, Lambert-shaded, orthographic; azimuth 0 looks from "
                 "camera 0's side, z up (the world's z in an upright dataset, else the cameras' up).</p>")
    errors = _error_values(ctx, V)
    if errors is None:
        parts.append(_missing("eval_errors.ply not found: no error colouring (no ground truth for this scene, the "
                              "DTU protocol, or the evaluate stage has not run)"))
    else:
        vals, vmax, label = errors
        face_err = vals[F].mean(1)
        parts.append(_img_tag(render_mesh_views(V, F, frame=frame, face_values=face_err, vmax=vmax,
                                                value_label=label), "image/png", "mesh coloured by error", "wide"))
        parts.append(f"<p class='caption'>coloured by the distance of each part of the mesh to the ground truth "
                     f"(eval_errors.ply; yellow = {_fmt(vmax)} or more, the largest F-score threshold).</p>")
    parts.extend(_textured_view(ctx))
    return "\n".join(parts)


def _textured_view(ctx: _Context) -> list[str]:
    """The textured export (export/export.json, export/preview.jpg): its numbers and photos beside the textured
    mesh re-rendered from their cameras."""
    f = ctx.files
    meta_path = f.p("export/export.json")
    if not meta_path.is_file():
        return [_missing("export/export.json not found: no textured view (the export stage has not run)")]
    x = json.loads(meta_path.read_text())
    psnr = x.get("psnr") or {}
    bake = x.get("bake") or {}
    parts = ["<h3>Textured export</h3>", _kv_table([
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
        parts.append(_img_tag(preview.read_bytes(), "image/jpeg", "photos beside the textured mesh", "wide"))
        parts.append("<p class='caption'>left: the photo; right: the textured mesh rendered from that photo's camera "
                     f"(views {', '.join(f'{v} ({_fmt(per_view.get(v))} dB)' for v in views)}; PSNR inside the "
                     "mask).</p>")
    return parts


def _evaluation_section(ctx: _Context) -> str:
    f = ctx.files
    ev = f.p("eval.json")
    if not ev.is_file():
        raise Missing("eval.json not found: no evaluation (the scene has no ground truth, or evaluate has not run)")
    e = json.loads(ev.read_text())
    pct = e.get("chamfer_pct_diag") or {}
    rows = [
        ("protocol", e.get("protocol")),
        ("ground truth", e.get("gt") or (f"DTU scan {e['scan']}" if "scan" in e else None)),
        ("units", e.get("units")),
        ("accuracy (mean)", e.get("accuracy")),
        ("completeness (mean)", e.get("completeness")),
        ("Chamfer (overall)", e.get("overall")),
        ("accuracy / completeness median", f"{_fmt(e.get('accuracy_median'))} / {_fmt(e.get('completeness_median'))}"),
        ("Chamfer, % of the GT box diagonal", pct.get("overall")),
        ("accuracy / completeness, % of diagonal",
         f"{_fmt(pct.get('accuracy'))} / {_fmt(pct.get('completeness'))}" if pct else None),
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
    parts = [_kv_table(rows)]
    fs = pd.DataFrame(e.get("fscores") or [])
    if not fs.empty:
        fs = fs.rename(columns={"threshold_pct_diag": "threshold (% diag)"})
        parts.append("<h3>F-score</h3>" + _df_table(fs))
    return "\n".join(parts)


def _load_json_file(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except ValueError:
        return {}


def _frame_section(ctx: _Context) -> str:
    """How the world frame was found (up, base, centre) and its units (metric scale or SfM units)."""
    meta = _load_json_file(ctx.files.p("dataset/meta.json"))
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
    return _kv_table(rows) + ("<p class='caption'>dataset/meta.json: every artifact in world units (cameras, "
                              "bbox.json, meshes) uses this frame; frame.from_sfm maps the SfM model into it.</p>")


def _quality_section(ctx: _Context) -> str:
    """The verdict without ground truth: SfM points against the mesh, held-out views (see neus_stage.quality)."""
    f = ctx.files
    q = _load_json_file(f.p("quality.json"))
    if not q:
        if not (f.p("mesh_clean.ply").is_file() or f.p("mesh.ply").is_file()):
            raise Missing("no mesh yet: the quality is judged once the mesh stage has run")
        from .quality import assess

        q = assess(f.root)
    g, h = q.get("geometry") or {}, q.get("heldout") or {}
    units = q.get("units", "world units")
    rows: list[tuple[str, object]] = [("verdict", q.get("line"))]
    if g.get("available"):
        rows += [("object points", f"{g['points']} ({g.get('kind')})"),
                 (f"distance to the mesh, median ({units})", f"{_fmt(g['median'])} ({100 * g['median_share']:.2f}% "
                                                            "of the object size)"),
                 (f"distance to the mesh, 90th percentile ({units})",
                  f"{_fmt(g['p90'])} ({100 * g['p90_share']:.2f}% of the object size)"),
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
    parts = [_kv_table(rows)]
    if h.get("per_view"):
        parts.append("<h3>Held-out views</h3>" + _df_table(pd.DataFrame(h["per_view"])))
    parts.append("<p class='caption'>quality.json. The SfM points were triangulated from the photos by COLMAP, "
                 "independently of the trained surface. Held-out views are never trained on (train.holdout_every); "
                 "their masks still shape the visual hull that bounds training and the mesh's mask culling.</p>")
    return "\n".join(parts)


def _timings_section(ctx: _Context) -> str:
    f = ctx.files
    if f.benchmarks is None or not Path(f.benchmarks).is_dir():
        raise Missing(f"benchmarks folder {f.benchmarks} not found: no rule times (stages run by hand?)")
    df = rule_times(f.benchmarks, f.scene)
    df = df[df["rule"] != "report"]  # a previous report's time, if any: this one's is written after it ends
    if df.empty:
        raise Missing(f"no {f.benchmarks}/<rule>/{f.scene}.tsv files: no rule times")
    total = pd.DataFrame([{"rule": "total", "seconds": df["seconds"].sum()}])
    return _df_table(pd.concat([df, total], ignore_index=True)) + (
        "<p class='caption'>From Snakemake's benchmark files (wall-clock seconds, peak resident memory); the "
        "report's own time is not included.</p>")


SECTIONS: list[tuple[str, str, Callable[[_Context], str]]] = [
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

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1240px;padding:1em 2em;
color:#222;background:#fff}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em}.status-ok{color:#2a7}.status-missing{color:#b80}.status-error{color:#c33}
img.wide{max-width:100%;display:block;margin:.5em 0}img.render{width:min(100%,960px);image-rendering:pixelated}
figure{margin:.5em 0}figcaption,.caption{color:#555;font-size:.9em}
.missing{background:#fff6e0;border-left:4px solid #e0a800;padding:.4em .8em}
.error{background:#fde8e8;border-left:4px solid #c33;padding:.4em .8em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
table.kv th{font-weight:600;color:#444}table.grid th{background:#f4f4f4}
"""


def build_report(
    scene_dir: Path,
    out: Path | None = None,
    *,
    benchmarks_dir: Path | None = None,
    scene: str | None = None,
    max_faces: int = 20000,
    quality_out: Path | None = None,
) -> dict[str, str]:
    """Write the scene's report (``scene_dir/report.html`` by default); returns {section: ok|missing|error}.

    Absent artifacts never fail the report: their sections say what is missing. Only a missing scene
    folder is an error. With ``quality_out``, the scene is first judged without ground truth
    (:func:`neus_stage.quality.assess`) and the verdict written there (the workflow's quality.json).
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise StageError(f"{scene_dir}: scene folder not found; give results/<scene> of a workflow run")
    if quality_out is not None:
        from .quality import assess

        assess(scene_dir, quality_out)
    out = Path(out) if out is not None else scene_dir / "report.html"
    files = SceneFiles(scene_dir, scene or scene_dir.name, Path(benchmarks_dir) if benchmarks_dir else None)
    ctx = _Context(files, max_faces)
    # the shared frame: cameras' up as z, the object box's centre (or the cameras' centroid) at the origin
    bbox = files.p("bbox.json")
    if bbox.is_file():
        ctx.box = read_world_box(bbox)
    cams = files.p("dataset/cameras_sphere.npz")
    if cams.is_file():
        try:
            ctx.Ks, ctx.poses = camera_poses(cams)
        except StageError as exc:
            log.warning("%s", exc)
    if ctx.box is not None or ctx.poses is not None:
        center = (ctx.box[0] + ctx.box[1]) / 2 if ctx.box is not None else ctx.poses[:, :3, 3].mean(0)
        upright = (_load_json_file(files.p("dataset/meta.json")).get("frame") or {}).get("name") == "upright"
        ctx.frame = view_frame(ctx.poses, center, np.array([0.0, 0.0, 1.0]) if upright else None)

    sections = []
    for key, title, builder in SECTIONS:
        sec = Section(key, title)
        try:
            sec.body = builder(ctx)
        except Missing as exc:
            sec.status, sec.body = "missing", _missing(str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken artifact must not cost the whole report
            log.warning("report section '%s' failed: %s: %s", key, type(exc).__name__, exc, exc_info=True)
            sec.status = "error"
            sec.body = f'<p class="error">{_esc(title)} could not be shown: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'
        log.info("section %-10s %s", key, sec.status)
        sections.append(sec)

    nav = " ".join(f'<a href="#{s.key}">{_esc(s.title)}</a><span class="status-{s.status}">'
                   f'{"" if s.status == "ok" else f" ({s.status})"}</span>' for s in sections)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(f'<section id="{s.key}" data-status="{s.status}"><h2>{_esc(s.title)}</h2>\n{s.body}\n</section>'
                     for s in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>neus-stage report: {_esc(files.scene)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>neus-stage report: {_esc(files.scene)}</h1>\n"
            f"<p class='caption'>{_esc(scene_dir)} &middot; generated {now}</p>\n<nav>{nav}</nav>\n{body}\n"
            "</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    status = {s.key: s.status for s in sections}
    log.info("report: %s (%.0f kB; %d of %d sections shown)", out, out.stat().st_size / 1024,
             sum(v == "ok" for v in status.values()), len(status))
    return status
