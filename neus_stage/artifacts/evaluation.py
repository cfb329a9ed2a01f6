"""The evaluate stage's files besides ``eval.json`` (which :mod:`.reports` writes): the official DTU evaluation
files it reads and the error cloud it writes.

- :func:`read_dtu_eval_files`: ``ObsMask/ObsMask<scan>_10.mat`` (observed voxels ``ObsMask``, box ``BB``,
  voxel size ``Res``), ``ObsMask/Plane<scan>.mat`` (the table plane ``P``) and the path of
  ``Points/stl/stl<scan:03>_total.ply``; a missing or unreadable file is a StageError naming it and the layout.
- :func:`read_dtu_points`: the points of that STL ground-truth cloud.
- :func:`write_error_cloud`: ``eval_errors.ply``, the mesh samples coloured by their error (read back by the
  report reads it back with :func:`read_error_cloud`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import StageError
from .meshes import quiet_open3d, read_geometry


@dataclass
class DTUEvalFiles:
    """One DTU scan's evaluation data: observed voxels (bool grid), their box ``bb`` (2, 3) float32 (lower
    corner first), voxel size ``res``, the table plane (a, b, c, d) and the ground-truth cloud's path."""

    obs_mask: np.ndarray
    bb: np.ndarray
    res: np.ndarray
    plane: np.ndarray
    stl_path: Path


def _layout(dtu_root: Path, scan: int) -> str:
    return (
        f"expected layout under {dtu_root}: ObsMask/ObsMask{scan}_10.mat, ObsMask/Plane{scan}.mat, "
        f"Points/stl/stl{scan:03}_total.ply (the official DTU 'SampleSet/MVS Data' evaluation files)"
    )


def _load_mat(path: Path, keys: list[str], dtu_root: Path, scan: int) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise StageError(f"{path}: DTU evaluation file not found; {_layout(dtu_root, scan)}")
    try:
        m = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001
        raise StageError(f"{path}: not a readable MATLAB file ({exc}); {_layout(dtu_root, scan)}") from exc
    missing = [k for k in keys if k not in m]
    if missing:
        raise StageError(f"{path}: missing variable(s) {', '.join(missing)}; {_layout(dtu_root, scan)}")
    return m


def read_dtu_eval_files(dtu_root: Path, scan: int) -> DTUEvalFiles:
    """The observation mask and plane of DTU scan ``scan`` under ``dtu_root``, and its STL cloud's path
    (checked to exist; read it with :func:`read_dtu_points`)."""
    dtu_root = Path(dtu_root)
    if not dtu_root.is_dir():
        raise StageError(f"{dtu_root}: DTU evaluation root not found (it should hold ObsMask/ and Points/stl/)")
    obs = _load_mat(dtu_root / "ObsMask" / f"ObsMask{scan}_10.mat", ["ObsMask", "BB", "Res"], dtu_root, scan)
    plane = _load_mat(dtu_root / "ObsMask" / f"Plane{scan}.mat", ["P"], dtu_root, scan)["P"]
    stl_path = dtu_root / "Points" / "stl" / f"stl{scan:03}_total.ply"
    if not stl_path.is_file():
        raise StageError(f"{stl_path}: DTU evaluation file not found; {_layout(dtu_root, scan)}")
    return DTUEvalFiles(
        obs_mask=np.asarray(obs["ObsMask"]).astype(bool),
        bb=np.asarray(obs["BB"]).astype(np.float32),
        res=np.asarray(obs["Res"], dtype=np.float64),
        plane=np.asarray(plane),
        stl_path=stl_path,
    )


def read_dtu_points(path: Path) -> np.ndarray:
    """The points (n, 3) float64 of a DTU STL ground-truth cloud (open3d, else any reader that knows it)."""
    with quiet_open3d() as o3d:
        if o3d is not None:
            stl = np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64)
        else:
            stl = None
    if stl is None or len(stl) == 0:
        stl, _ = read_geometry(path, "DTU ground-truth point cloud")
    return stl


def write_error_cloud(path: Path, pts: np.ndarray, err: np.ndarray, vmax: float) -> None:
    """Binary PLY of the samples coloured by error (viridis, 0 .. vmax) with the error as a scalar property."""
    from matplotlib import colormaps

    rgb = (colormaps["viridis"](np.clip(err / max(vmax, 1e-30), 0, 1))[:, :3] * 255).round().astype(np.uint8)
    rec = np.empty(
        len(pts),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("error", "<f4"),
        ],
    )
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    rec["error"] = err
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment accuracy error per mesh sample, colormap viridis 0..{vmax:.6g}\n"
        f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty float error\nend_header\n"
    )
    with atomic_write(Path(path)) as fh:
        fh.write(header.encode("ascii"))
        fh.write(rec.tobytes())


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
