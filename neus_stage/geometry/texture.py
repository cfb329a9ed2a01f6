"""Texture baking and textured rendering: arrays in, arrays out.

Conventions. A texture is an (S, S, 3) array whose row ``r``, column ``c`` holds the texel centred at the
texture coordinate ``((c + 0.5) / S, (r + 0.5) / S)``: glTF's convention, ``u`` to the right and ``v``
down from the image's top-left corner (OBJ's ``vt`` is ``(u, 1 - v)``). Cameras are NeuS/OpenCV
``world_mat`` = K [R | t] (world -> pixel) with pixel centres at integer coordinates.

- :func:`rasterize_uv`: which face (and where in it, barycentrically) each texel centre lies in: one ray per
  texel cast onto the flat UV layout (open3d's RaycastingScene), so that rasterisation is exact and fast.
- :func:`bake_colors`: each surface texel's colour from the views that see it. A view sees a texel when
  the texel projects inside the image (and the view's mask), faces the camera at more than a grazing
  angle, and the ray from the camera reaches it before hitting the mesh (occlusion tested against the
  mesh). Of those, the ``top_k`` views with the highest weight are blended; the weight is the texel's
  sampling density in that photo, ``(f * cos / depth)^2`` (pixels per unit area of surface seen
  head-on: close, frontal views win), faded out towards the grazing limit so that a texel's colour does
  not jump where one view takes over from another.
- :func:`fill_texture`: seams padded (texels outside every chart take the colour of the nearest chart
  texels, a few rings exactly, then a push-pull fill), so that bilinear filtering and mip-maps never
  read the empty atlas background.
- :func:`render_textured`: the textured mesh seen from a camera (one ray per pixel), for tests and the
  report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .cameras import decompose_projection, pixel_index, project

INVALID = np.iinfo(np.uint32).max
"""open3d's primitive id where a ray hits nothing."""


@dataclass
class View:
    """One photo as the baker sees it: ``world_mat`` (4x4 or 3x4, world -> pixel), the image (H, W, 3)
    uint8 or float in [0, 1], and an optional foreground mask (H, W) bool."""

    world_mat: np.ndarray
    image: np.ndarray
    mask: np.ndarray | None = None


def _raycasting_scene(verts: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(verts, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    return scene


def _rays(origins: np.ndarray, dirs: np.ndarray):
    import open3d as o3d

    return o3d.core.Tensor(np.ascontiguousarray(np.concatenate([origins, dirs], 1), dtype=np.float32))


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int, chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Per texel of an ``size``^2 texture: the face its centre lies in (-1: none) and its barycentric
    coordinates (S, S, 3) in that face. ``uv`` (V, 2) in glTF convention, ``faces`` (F, 3) index it."""
    uv = np.asarray(uv, dtype=np.float64)
    flat = np.concatenate([uv * size, np.zeros((len(uv), 1))], 1)
    scene = _raycasting_scene(flat, faces)
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    origins = np.stack([cols.ravel(), rows.ravel(), np.ones(size * size)], 1)
    dirs = np.tile([0.0, 0.0, -1.0], (len(origins), 1))
    face_id = np.full(size * size, -1, dtype=np.int64)
    bary = np.zeros((size * size, 3), dtype=np.float32)
    for s in range(0, len(origins), chunk):
        hit = scene.cast_rays(_rays(origins[s : s + chunk], dirs[s : s + chunk]))
        ids = hit["primitive_ids"].numpy().astype(np.int64)
        ok = ids != INVALID
        b = hit["primitive_uvs"].numpy()
        face_id[s : s + chunk][ok] = ids[ok]
        bary[s : s + chunk, 1:] = b
        bary[s : s + chunk, 0] = 1.0 - b[:, 0] - b[:, 1]
    return face_id.reshape(size, size), bary.reshape(size, size, 3)


def interpolate(values: np.ndarray, faces: np.ndarray, face_id: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-vertex ``values`` (V, C) interpolated at points given by face ids (N,) and barycentrics (N, 3)."""
    f = np.asarray(faces, dtype=np.int64)[face_id]
    return np.einsum("nk,nkc->nc", bary.astype(np.float64), np.asarray(values, dtype=np.float64)[f])


def _center_and_focal(world_mat: np.ndarray) -> tuple[np.ndarray, float]:
    """A camera's centre (3,) and mean focal length in pixels (from K of its RQ decomposition)."""
    K, pose = decompose_projection(world_mat[:3, :4])
    return pose[:3, 3], float((abs(K[0, 0]) + abs(K[1, 1])) / 2)


def remap_points(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, C) float32 of an (H, W, C) float32 image at points (x, y), integer pixel centres
    (cv2.remap, with the points laid out as rows of 1024: its maps must stay below 32767 on each side)."""
    import cv2

    n = len(x)
    cols = 1024
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = []
    step = 16384  # rows per call
    for s in range(0, rows, step):
        out.append(
            cv2.remap(
                image,
                mx.reshape(rows, cols)[s : s + step],
                my.reshape(rows, cols)[s : s + step],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
    vals = np.concatenate(out, 0)
    return vals.reshape(rows * cols, -1)[:n]


def sample_image(image: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, C) float32 of an (H, W, C) image (uint8 or float) at pixel coordinates (N, 2)."""
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return remap_points(img, pix[:, 0], pix[:, 1])


@dataclass
class BakeResult:
    colors: np.ndarray  # (N, 3) float32 in [0, 1]
    seen: np.ndarray  # (N,) bool: some view saw the point
    n_views: np.ndarray  # (N,) int: how many views saw it
    views_used: np.ndarray  # (n views,) int: points each view contributed to (among the top_k)


def bake_colors(
    points: np.ndarray,
    normals: np.ndarray,
    views: Iterable[View],
    verts: np.ndarray,
    faces: np.ndarray,
    *,
    top_k: int = 3,
    min_cos: float = 0.15,
    fade: float = 0.25,
    eps: float | None = None,
    mask_erode: int = 1,
) -> BakeResult:
    """Colours of surface ``points`` (N, 3) with unit ``normals`` (N, 3) from the photos of ``views``.

    Occlusion is tested against the mesh ``verts``/``faces``: a ray from the camera must reach the point,
    within ``eps`` (default one median edge length), without hitting the mesh nearer. ``min_cos`` is the
    grazing limit (cos of the angle between the normal and the direction to the camera); the weight fades
    in over ``fade`` above it. A mask (eroded by ``mask_erode`` px, so that silhouette pixels mixed with
    the background are not used) limits each view to its object. Points no view sees come back unseen.
    """
    import cv2

    pts = np.asarray(points, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    n = len(pts)
    k = max(1, int(top_k))
    if eps is None:
        v, f = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
        eps = float(np.median(np.linalg.norm(v[f[:, 1]] - v[f[:, 0]], axis=1)))
    scene = _raycasting_scene(verts, faces)
    best_w = np.zeros((n, k), dtype=np.float32)
    best_c = np.zeros((n, k, 3), dtype=np.float32)
    n_views = np.zeros(n, dtype=np.int32)
    contributions = []
    for view in views:
        wm = np.asarray(view.world_mat, dtype=np.float64)
        img = view.image
        h, w = img.shape[:2]
        pix, z = project(wm, pts)
        c, f = _center_and_focal(wm)
        to_cam = c - pts
        dist = np.linalg.norm(to_cam, axis=1)
        cos = np.einsum("ij,ij->i", nrm, to_cam) / np.maximum(dist, 1e-30)
        ok = (z > 0) & (cos > min_cos) & np.all(np.isfinite(pix), axis=1)
        ok &= (pix[:, 0] >= 0) & (pix[:, 0] <= w - 1) & (pix[:, 1] >= 0) & (pix[:, 1] <= h - 1)
        if view.mask is not None:
            m = np.asarray(view.mask, dtype=np.uint8)
            if mask_erode > 0:
                m = cv2.erode(m, np.ones((2 * mask_erode + 1,) * 2, np.uint8))
            idx = np.flatnonzero(ok)
            ui, vi, _ = pixel_index(pix[idx], w, h)  # within the pixel-centre span: always inside
            ok[idx[m[vi, ui] == 0]] = False
        idx = np.flatnonzero(ok)
        if len(idx):
            # unnormalised directions put t = 1 at ``eps`` before the point: one tfar for every ray
            dirs = -to_cam[idx] * (np.maximum(dist[idx] - eps, 0.0) / dist[idx])[:, None]
            occluded = scene.test_occlusions(_rays(np.tile(c, (len(idx), 1)), dirs), tnear=0.0, tfar=1.0)
            idx = idx[~occluded.numpy().astype(bool)]
        contributions.append(len(idx))
        if not len(idx):
            continue
        weight = (f * cos[idx] / z[idx]) ** 2 * np.clip((cos[idx] - min_cos) / fade, 0.0, 1.0)
        weight = np.maximum(weight, 1e-12).astype(np.float32)
        color = sample_image(img, pix[idx])[:, :3]
        n_views[idx] += 1
        # keep the top_k weights: replace the smallest kept one where the new weight beats it
        slot = np.argmin(best_w[idx], axis=1)
        better = weight > best_w[idx, slot]
        rows = idx[better]
        best_w[rows, slot[better]] = weight[better]
        best_c[rows, slot[better]] = color[better]
    total = best_w.sum(1)
    seen = total > 0
    colors = np.zeros((n, 3), dtype=np.float32)
    colors[seen] = (best_c[seen] * best_w[seen, :, None]).sum(1) / total[seen, None]
    return BakeResult(np.clip(colors, 0, 1), seen, n_views, np.asarray(contributions, dtype=np.int64))


def fill_texture(texture: np.ndarray, valid: np.ndarray, rings: int = 8) -> np.ndarray:
    """``texture`` (S, S, 3) float with its invalid texels filled: ``rings`` rings of padding around the
    valid texels (each the mean of its valid 8-neighbours), then every texel left by a push-pull fill (the
    valid texels' mean at coarser and coarser scales), so that filtering never reads an undefined texel."""
    import cv2

    tex = np.asarray(texture, dtype=np.float32).copy()
    ok = np.asarray(valid, dtype=bool).copy()
    kernel = np.ones((3, 3), np.float32)
    for _ in range(int(rings)):
        if ok.all():
            break
        w = cv2.filter2D(ok.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        s = cv2.filter2D(tex * ok[..., None], -1, kernel, borderType=cv2.BORDER_CONSTANT)
        grow = (~ok) & (w > 0)
        tex[grow] = s[grow] / w[grow, None]
        ok |= grow
    if not ok.all():
        tex = np.where(ok[..., None], tex, _push_pull(tex, ok))
    return tex


def _push_pull(tex: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """A value for every texel from the valid ones, coarse to fine (a mip pyramid with weights)."""
    import cv2

    h, w = ok.shape
    if not ok.any():
        return np.zeros_like(tex)
    if h <= 1 or w <= 1:
        mean = tex[ok].mean(0)
        return np.broadcast_to(mean, tex.shape).copy()
    wgt = ok.astype(np.float32)
    hh, ww = (h + 1) // 2, (w + 1) // 2
    pad_t = np.zeros((2 * hh, 2 * ww, tex.shape[2]), np.float32)
    pad_w = np.zeros((2 * hh, 2 * ww), np.float32)
    pad_t[:h, :w] = tex * wgt[..., None]
    pad_w[:h, :w] = wgt
    s_t = pad_t.reshape(hh, 2, ww, 2, -1).sum((1, 3))
    s_w = pad_w.reshape(hh, 2, ww, 2).sum((1, 3))
    small_ok = s_w > 0
    small = np.zeros_like(s_t)
    small[small_ok] = s_t[small_ok] / s_w[small_ok, None]
    coarse = _push_pull(small, small_ok)
    up = cv2.resize(coarse, (2 * ww, 2 * hh), interpolation=cv2.INTER_LINEAR)[:h, :w]
    if up.ndim == 2:
        up = up[..., None]
    return np.where(ok[..., None], tex, up)


def render_textured(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    texture: np.ndarray,
    world_mat: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The textured mesh seen by a camera: an (H, W, 3) float32 image in [0, 1] (0 where no surface) and the
    (H, W) bool mask of pixels that hit it. ``uv`` per vertex in glTF convention, bilinear texture lookup."""

    wm = np.asarray(world_mat, dtype=np.float64)[:3, :4]
    c = decompose_projection(wm)[1][:3, 3]
    us, vs = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([us.ravel(), vs.ravel(), np.ones(width * height)], 1)
    dirs = np.linalg.solve(wm[:, :3], pix.T).T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    scene = _raycasting_scene(verts, faces)
    hit = scene.cast_rays(_rays(np.tile(c, (len(dirs), 1)), dirs))
    ids = hit["primitive_ids"].numpy().astype(np.int64)
    ok = ids != INVALID
    b = hit["primitive_uvs"].numpy()[ok].astype(np.float64)
    bary = np.stack([1.0 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], 1)
    t_uv = interpolate(uv, faces, ids[ok], bary)
    tex = np.asarray(texture)
    tex = tex.astype(np.float32) / 255.0 if tex.dtype == np.uint8 else tex.astype(np.float32)
    size_h, size_w = tex.shape[:2]
    image = np.zeros((width * height, 3), dtype=np.float32)
    image[ok] = remap_points(tex, t_uv[:, 0] * size_w - 0.5, t_uv[:, 1] * size_h - 0.5)[:, :3]
    return image.reshape(height, width, 3), ok.reshape(height, width)


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of two images in [0, 1] (or uint8) over the pixels of ``mask``."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x / 255.0 if np.asarray(a).dtype == np.uint8 else x
    y = y / 255.0 if np.asarray(b).dtype == np.uint8 else y
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return float("nan")
    mse = float(((x[m] - y[m]) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
