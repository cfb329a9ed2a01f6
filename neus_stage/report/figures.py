"""The report's pictures, drawn with matplotlib's object API (no pyplot, no global backend): the plot frame,
training curves, Lambert-shaded mesh previews (see :mod:`neus_stage.report`) and the photo/mask contact sheet;
and the readers of what they draw. The camera figure is in :mod:`neus_stage.report.camera_plot`."""

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


def set_equal_axes(ax, pts: np.ndarray, pad: float = 0.05, zoom: float = 1.0) -> None:
    """Equal, cubic axis limits around ``pts`` (n,3) of a 3D axes, ``pad`` a share of the half-size added."""
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
    from ..geometry.silhouette import surface_cells

    h = read_hull_file(hull_npz)
    idx = np.argwhere(surface_cells(h.occupancy))
    if len(idx) > max_points:
        idx = idx[np.sort(np.random.default_rng(seed).choice(len(idx), max_points, replace=False))]
    norm = h.bounds_min + (idx + 0.5) * h.voxel()
    if h.scale_mat is None:
        raise Missing(f"{hull_npz} holds no scale_mat: run the visual-hull stage again")
    s = h.scale_mat
    return norm * s[0, 0] + s[:3, 3]


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
        set_equal_axes(ax, P, pad=0.0, zoom=1.25)
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
