"""The one camera type, the one projection, and the NeuS camera convention (cameras_sphere.npz).

Conventions (see the official NeuS loader):
- ``world_mat_i`` = K [R | t] (4x4, world -> pixel), ``scale_mat_i`` (4x4, the same for every view) maps the
  normalised frame (object inside the unit sphere) to the world: ``x_world = r * x_norm + c``.
- The loader decomposes ``P = (world_mat @ scale_mat)[:3, :4]`` into K and a camera-to-world pose in the
  normalised frame. OpenCV axes (x right, y down, z forward); rays through integer pixel coordinates.
- Pixel convention everywhere (NeuS's): the centre of pixel (col, row) is at (u, v) = (col, row), so a
  projected point falls in pixel ``round(u), round(v)``. COLMAP puts that centre at (col + 0.5, row + 0.5):
  its principal point is shifted by -0.5 once, where a COLMAP model is read (:func:`cameras_from_colmap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import StageError


def project(P, X):
    """Pixel coordinates (N,2) and depths (N,) of world points ``X`` (N,3) in the camera ``P`` = K [R | t]
    ((3,4) or (4,4), world -> pixel; NeuS's pixel convention). numpy arrays or torch tensors alike. Points at or
    behind the camera (depth <= 0) get finite but meaningless coordinates: test the depth."""
    h = X @ P[:3, :3].T + P[:3, 3]
    z = h[:, 2]
    return h[:, :2] / z.clip(min=1e-9)[:, None], z


def pixel_index(uv, width: int, height: int):
    """Integer (col, row) of pixel coordinates ``uv`` (N,2) and whether they fall in a width x height image."""
    if isinstance(uv, np.ndarray):
        col, row = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    else:  # a torch tensor
        col, row = uv[:, 0].round().long(), uv[:, 1].round().long()
    return col, row, (col >= 0) & (col < width) & (row >= 0) & (row < height)


@dataclass
class CameraSet:
    """Pinhole cameras for views in order: ``names``, intrinsics ``K`` (N,3,3, NeuS pixel convention) and
    world->camera ``R`` (N,3,3), ``t`` (N,3), images of ``width`` x ``height``."""

    names: list[str]
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The position of view ``name``."""
        return self.names.index(name)

    @property
    def projections(self) -> np.ndarray:
        """(N,3,4) K [R | t]: world -> pixel."""
        return self.world_mats[:, :3, :4]

    def project(self, view: int | str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N,2) and depths (N,) of world points ``X`` in one view (by position or name)."""
        i = self.index(view) if isinstance(view, str) else view
        return project(self.projections[i], np.asarray(X, dtype=np.float64))

    @classmethod
    def from_world_mats(cls, names: list[str], world_mats: np.ndarray, width: int, height: int) -> CameraSet:
        """Cameras of NeuS ``world_mats`` (N,4,4) (e.g. from ``cameras_sphere.npz``)."""
        Ks, Rs, ts = [], [], []
        for wm in np.asarray(world_mats, dtype=np.float64):
            K, pose = decompose_projection(wm[:3, :4])
            R = pose[:3, :3].T
            Ks.append(K)
            Rs.append(R)
            ts.append(-R @ pose[:3, 3])
        return cls(list(names), np.stack(Ks), np.stack(Rs), np.stack(ts), int(width), int(height))

    def subset(self, names: list[str]) -> CameraSet:
        """The views ``names``, in that order."""
        idx = [self.index(n) for n in names]
        return CameraSet(list(names), self.K[idx], self.R[idx], self.t[idx], self.width, self.height)

    @property
    def world_mats(self) -> np.ndarray:
        """(N,4,4) K [R | t] with a last row [0,0,0,1]: world -> pixel, as NeuS stores them."""
        n = len(self.names)
        mats = np.tile(np.eye(4), (n, 1, 1))
        mats[:, :3, :3] = self.K @ self.R
        mats[:, :3, 3] = np.einsum("nij,nj->ni", self.K, self.t)
        return mats

    @property
    def centers(self) -> np.ndarray:
        """(N,3) camera centres in the world frame."""
        return -np.einsum("nji,nj->ni", self.R, self.t)


def scale_mat_from_sphere(center: np.ndarray, radius: float) -> np.ndarray:
    """4x4 matrix mapping the normalised frame (unit sphere) to the world: x_world = radius * x + center."""
    m = np.eye(4)
    m[:3, :3] *= float(radius)
    m[:3, 3] = np.asarray(center, dtype=float)
    return m


def rq(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix (upper-triangular R, orthogonal Q, M = R Q) from numpy's QR, as
    scipy.linalg.rq computes it; numpy alone, so that training runs in a stock PyTorch environment."""
    flip = np.eye(3)[::-1]
    q, r = np.linalg.qr((flip @ M).T)
    return flip @ r.T @ flip, flip @ q.T


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x4 projection into intrinsics K (3x3, K[2,2] = 1) and a camera-to-world pose (4x4).

    Same result as the official loader's ``cv2.decomposeProjectionMatrix`` for a valid camera (RQ
    decomposition with a positive diagonal in K), without needing OpenCV.
    """
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    M = P[:, :3]
    K, R = rq(M)
    signs = np.diag(np.sign(np.diag(K)))
    K, R = K @ signs, signs @ R
    if np.linalg.det(R) < 0:  # P was scaled by a negative factor
        R = -R
    center = -np.linalg.solve(M, P[:, 3])
    pose = np.eye(4)
    pose[:3, :3] = R.T
    pose[:3, 3] = center
    return K / K[2, 2], pose


def neus_cameras(world_mats: np.ndarray, scale_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (N,3,3) and camera-to-world poses (N,4,4) in the normalised frame (the official loader's steps)."""
    Ks, poses = [], []
    for wm in world_mats:
        K, pose = decompose_projection((wm @ scale_mat)[:3, :4])
        Ks.append(K)
        poses.append(pose)
    return np.stack(Ks), np.stack(poses)


def camera_centers(world_mats: np.ndarray) -> np.ndarray:
    """(N,3) camera centres in the world frame of ``world_mats``."""
    return np.stack([decompose_projection(wm[:3, :4])[1][:3, 3] for wm in world_mats])


@dataclass
class Similarity:
    """x_dst = scale * R @ x_src + t, with the RMS residual of the fit (in destination units)."""

    scale: float
    R: np.ndarray
    t: np.ndarray
    rms: float
    details: dict | None = None

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.scale * self.R
        m[:3, 3] = self.t
        return m

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x @ self.R.T + self.t

    def to_json(self) -> dict:
        return {"scale": self.scale, "matrix": self.matrix.tolist(), "rms": self.rms, **(self.details or {})}

    def then(self, other: Similarity) -> Similarity:
        """The similarity that applies ``self`` first, then ``other``."""
        return Similarity(
            self.scale * other.scale,
            other.R @ self.R,
            other.scale * other.R @ self.t + other.t,
            self.rms,
            {**(self.details or {}), **(other.details or {})},
        )


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity (Umeyama 1991) mapping points ``src`` (N,3) onto ``dst`` (N,3)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.shape[0] < 3:
        raise StageError(f"a similarity needs at least 3 matched points, got {src.shape[0]} and {dst.shape[0]}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    scale = float(np.trace(np.diag(D) @ S) / var_s)
    t = mu_d - scale * R @ mu_s
    sim = Similarity(scale, R, t, 0.0)
    sim.rms = float(np.sqrt(((sim.apply(src) - dst) ** 2).sum(1).mean()))
    return sim


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle in degrees of Ra @ Rb^T for stacks of rotations (N,3,3)."""
    rel = np.einsum("nij,nkj->nik", Ra, Rb)
    cos = (np.trace(rel, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
