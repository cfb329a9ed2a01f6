"""The report's pictures, drawn with matplotlib's object API (no pyplot, no global backend): camera plots
with the sparse points, object box and visual hull, training curves, Lambert-shaded mesh previews (see
:mod:`neus_stage.report`) and the photo/mask contact sheet; and the readers of what they draw."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..artifacts.box import read_hull_file
from ..artifacts.dataset import read_cameras_sphere, read_mask
from ..errors import StageError
from ..geometry.cameras import decompose_projection
from .html import Missing

log = logging.getLogger(__name__)


#: mesh preview viewpoints: (elevation, azimuth) in degrees; azimuth 0 looks from the first camera's side
VIEWS = [(20.0, 0.0), (20.0, 90.0), (20.0, 180.0), (60.0, 270.0)]


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib Figure (object API: works headless without pyplot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


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
    world_mats, _ = read_cameras_sphere(cameras_npz)
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
    from ..artifacts.sfm import read_sfm_points

    points = read_sfm_points(sparse_dir)
    xyz, rgb = points.xyz, points.rgb
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
    fig = Figure(
        figsize=(panel_px * len(views) / dpi, panel_px / dpi + (0.6 if face_values is not None else 0)), dpi=dpi
    )
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
    return figure_png(fig)


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
        ax.scatter(
            *pts[inside].T,
            s=0.6,
            c=point_colors[inside] if point_colors is not None else "0.4",
            depthshade=False,
            linewidths=0,
        )
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
        square = frame.apply(
            np.array([foot + half * (sa * a + sb * b) for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
        )
        ax.add_collection3d(Poly3DCollection([square], facecolors=(1.0, 0.55, 0.0, 0.25), edgecolors="tab:orange"))
        if plane_inliers is not None and len(plane_inliers):
            ax.scatter(*frame.apply(plane_inliers).T, s=0.8, c="tab:orange", depthshade=False, linewidths=0)
    _set_equal(ax, extent)
    ax.set_title(
        "cameras (blue), sparse points, object box (red)"
        + (", support plane and its points (orange)" if plane is not None else ""),
        fontsize=9,
    )
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
        ax2.add_collection3d(
            Poly3DCollection(
                [mid2 + 0.6 * (square - mid2)],
                facecolors=(1.0, 0.55, 0.0, 0.1),
                edgecolors="tab:orange",
                linewidths=1.2,
            )
        )
    _set_equal(ax2, np.concatenate(inner) if inner else extent)
    ax2.set_title(
        "object: visual hull surface, box (red), sparse points in the box (green)"
        + (", support plane (orange)" if square is not None else ""),
        fontsize=9,
    )
    ax2.tick_params(labelsize=6)
    fig.subplots_adjust(left=0, right=1, top=0.93, bottom=0.02, wspace=0.05)
    return figure_png(fig)


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
    return figure_png(fig)


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
            m = read_mask(mp)
            if m.shape != img.shape[:2]:
                m = np.asarray(Image.fromarray(m).resize(img.shape[1::-1], Image.Resampling.NEAREST))
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
