"""The report's camera figure (matplotlib object API, no pyplot): the scene panel with the cameras as frusta,
the sparse points and the object box, and the object panel with the box, the visual hull's surface voxels and
the sparse points inside the box; both with the support plane where one was found."""

from __future__ import annotations

import numpy as np

from .figures import ViewFrame, figure_png, set_equal_axes


def _box_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(12,2,3) edges of an axis-aligned box."""
    c = np.array([[hi[i] if (k >> i) & 1 else lo[i] for i in range(3)] for k in range(8)])
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return np.stack([c[[a, b]] for a, b in pairs])


def _inside(pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which of the points (n,3) lie in the axis-aligned box ``lo`` .. ``hi``."""
    return ((pts >= lo) & (pts <= hi)).all(1)


def _scene_extent(cams: np.ndarray, box_edges: np.ndarray | None, pts: np.ndarray) -> np.ndarray:
    """The points the scene panel must show (plot frame): the cameras and the box, else the sparse points."""
    extent = [cams, box_edges.reshape(-1, 3) if box_edges is not None else np.zeros((0, 3))]
    return np.concatenate(extent) if sum(len(e) for e in extent) else (pts if len(pts) else np.zeros((1, 3)))


def _frustum_lines(poses: np.ndarray, Ks: np.ndarray, frame: ViewFrame, depth: float) -> list[list[np.ndarray]]:
    """Line segments (plot frame) of each camera's frustum, ``depth`` deep: centre to corners, then the rim."""
    w, h = 2 * Ks[:, 0, 2], 2 * Ks[:, 1, 2]  # principal point near the image centre
    lines = []
    for pose, K, wi, hi_ in zip(poses, Ks, w, h):
        corners = np.array([[0, 0, 1], [wi, 0, 1], [wi, hi_, 1], [0, hi_, 1]], dtype=np.float64)
        rays = (np.linalg.inv(K) @ corners.T).T * depth
        world = rays @ pose[:3, :3].T + pose[:3, 3]
        c = pose[:3, 3]
        q = frame.apply(np.vstack([c, world]))
        lines += [[q[0], q[k]] for k in range(1, 5)] + [[q[k], q[k % 4 + 1]] for k in range(1, 5)]
    return lines


def _support_square(
    plane: tuple[np.ndarray, float], box: tuple[np.ndarray, np.ndarray] | None, poses: np.ndarray | None, size: float
) -> np.ndarray:
    """Corners (4,3, world) of a square on the support plane under the box centre (else the cameras' centre)."""
    n, off = np.asarray(plane[0], dtype=np.float64), float(plane[1])
    mid = (box[0] + box[1]) / 2 if box is not None else (poses[:, :3, 3].mean(0) if poses is not None else 0 * n)
    foot = mid - (n @ mid + off) * n  # the box centre dropped onto the plane
    half = 0.75 * (float(np.linalg.norm(box[1] - box[0])) if box is not None else size / 4)
    a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    return np.array([foot + half * (sa * a + sb * b) for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _draw_cameras(ax, poses: np.ndarray, Ks: np.ndarray, cams: np.ndarray, frame: ViewFrame, size: float) -> None:
    """The frusta and centres of the cameras, camera 0 labelled."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    lines = _frustum_lines(poses, Ks, frame, 0.08 * size)
    ax.add_collection3d(Line3DCollection(lines, colors="tab:blue", linewidths=0.6))
    ax.scatter(*cams.T, s=6, c="tab:blue", depthshade=False)
    ax.text(*cams[0], " 0", fontsize=7, color="tab:blue")


def _draw_support_plane(
    ax,
    frame: ViewFrame,
    plane: tuple[np.ndarray, float],
    plane_inliers: np.ndarray | None,
    box: tuple[np.ndarray, np.ndarray] | None,
    poses: np.ndarray | None,
    size: float,
) -> np.ndarray:
    """The support plane as a translucent square with its points in orange; the square's corners (plot frame)."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    square = frame.apply(_support_square(plane, box, poses, size))
    ax.add_collection3d(Poly3DCollection([square], facecolors=(1.0, 0.55, 0.0, 0.25), edgecolors="tab:orange"))
    if plane_inliers is not None and len(plane_inliers):
        ax.scatter(*frame.apply(plane_inliers).T, s=0.8, c="tab:orange", depthshade=False, linewidths=0)
    return square


def _object_panel(
    ax, frame: ViewFrame, hull: np.ndarray | None, pts: np.ndarray, box_edges: np.ndarray | None, square, extent
) -> None:
    """The object: hull surface voxels, the box and the sparse points in it, a fainter support square."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    inner = []
    if hull is not None and len(hull):
        hp = frame.apply(hull)
        ax.scatter(*hp.T, s=3, c=hp[:, 2], cmap="copper", depthshade=True, linewidths=0, alpha=0.8)
        inner.append(hp)
    if box_edges is not None:
        ax.add_collection3d(Line3DCollection(box_edges, colors="tab:red", linewidths=1.2))
        inner.append(box_edges.reshape(-1, 3))
        if len(pts):
            inside = _inside(pts, box_edges.reshape(-1, 3).min(0), box_edges.reshape(-1, 3).max(0))
            ax.scatter(*pts[inside].T, s=2, c="tab:green", depthshade=False, linewidths=0)
    if square is not None:  # a tighter, fainter square: matplotlib draws it over the hull whatever the depth
        mid2 = square.mean(0)
        ax.add_collection3d(
            Poly3DCollection(
                [mid2 + 0.6 * (square - mid2)],
                facecolors=(1.0, 0.55, 0.0, 0.1),
                edgecolors="tab:orange",
                linewidths=1.2,
            )
        )
    set_equal_axes(ax, np.concatenate(inner) if inner else extent)
    ax.set_title(
        "object: visual hull surface, box (red), sparse points in the box (green)"
        + (", support plane (orange)" if square is not None else ""),
        fontsize=9,
    )
    ax.tick_params(labelsize=6)


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
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    fig = Figure(figsize=(12, 5.6), dpi=100)
    box_edges = frame.apply(_box_edges(*box).reshape(-1, 3)).reshape(-1, 2, 3) if box is not None else None
    cams = frame.apply(poses[:, :3, 3]) if poses is not None else np.zeros((0, 3))
    pts = frame.apply(points) if points is not None and len(points) else np.zeros((0, 3))
    extent = _scene_extent(cams, box_edges, pts)

    ax = fig.add_subplot(1, 2, 1, projection="3d")
    size = float(np.ptp(extent, axis=0).max()) if len(extent) > 1 else 1.0
    if len(pts):
        inside = _inside(pts, extent.min(0) - 0.1 * size, extent.max(0) + 0.1 * size)
        colors = point_colors[inside] if point_colors is not None else "0.4"
        ax.scatter(*pts[inside].T, s=0.6, c=colors, depthshade=False, linewidths=0)
    if poses is not None:
        _draw_cameras(ax, poses, Ks, cams, frame, size)
    if box_edges is not None:
        ax.add_collection3d(Line3DCollection(box_edges, colors="tab:red", linewidths=1.0))
    square = None if plane is None else _draw_support_plane(ax, frame, plane, plane_inliers, box, poses, size)
    set_equal_axes(ax, extent)
    ax.set_title(
        "cameras (blue), sparse points, object box (red)"
        + (", support plane and its points (orange)" if plane is not None else ""),
        fontsize=9,
    )
    ax.tick_params(labelsize=6)

    _object_panel(fig.add_subplot(1, 2, 2, projection="3d"), frame, hull, pts, box_edges, square, extent)
    fig.subplots_adjust(left=0, right=1, top=0.93, bottom=0.02, wspace=0.05)
    return figure_png(fig)
