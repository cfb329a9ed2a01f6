"""Rays from a NeuS-layout scene (image/, mask/, cameras_sphere.npz), loaded the way the official loader does.

The views live on the training device (images as uint8, masks as bool), and rays are built there from
per-view inverse intrinsics and poses, so a training step draws its batch without touching the host.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import memory
from ..artifacts.dataset import MASK_LEVEL, read_cameras_sphere, read_mask
from ..errors import StageError
from ..geometry.cameras import neus_cameras

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _glob_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _downscale_K(K: np.ndarray, s: int) -> np.ndarray:
    """Intrinsics for an image box-downscaled by s, with pixel centres at integer coordinates."""
    K = K.copy()
    K[:, 0, 0] /= s
    K[:, 1, 1] /= s
    K[:, 0, 1] /= s
    K[:, 0, 2] = (K[:, 0, 2] - (s - 1) / 2) / s
    K[:, 1, 2] = (K[:, 1, 2] - (s - 1) / 2) / s
    return K


def _box_downscale(im: Image.Image, s: int) -> Image.Image:
    """Box-downscale by exactly s: the right and bottom edges are first cropped to a multiple of s, so
    every output pixel averages an s x s block and the intrinsics follow ``_downscale_K`` exactly (resizing
    a width that s does not divide would stretch the image by width / (width // s) instead of s)."""
    w, h = (im.width // s) * s, (im.height // s) * s
    return im.crop((0, 0, w, h)).resize((w // s, h // s), Image.BOX)


def _read_rgb(path: Path) -> Image.Image:
    """An image as 8-bit RGB. Single-channel 16-bit images are scaled (not clipped), float images (TIFF) are
    read as [0, 1] (or [0, 255] where they exceed 1) and must hold finite values."""
    im = Image.open(path)
    if im.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
        raw = np.asarray(im, dtype=np.float64)
        if not np.isfinite(raw).all():
            bad = int((~np.isfinite(raw)).sum())
            raise StageError(f"{path}: {bad} pixel(s) are NaN or infinite; re-export the image as an 8-bit PNG or JPEG")
        scale = 255.0 if im.mode == "F" and raw.max() <= 1.0 else 1.0 / 257.0 if im.mode != "F" else 1.0
        im = Image.fromarray(np.clip(np.rint(raw * scale), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def check_cameras(
    K: np.ndarray, poses: np.ndarray, names: list[str], box_min: np.ndarray, box_max: np.ndarray, path: Path
) -> None:
    """Refuse cameras that cannot see the object: non-finite values, a centre inside the object box, or the
    box centre behind the camera. ``box_*`` in the normalised frame."""
    bad = [n for n, k, p in zip(names, K, poses) if not (np.isfinite(k).all() and np.isfinite(p).all())]
    if bad:
        raise StageError(f"{path}: the camera(s) of {', '.join(bad[:5])} hold NaN or infinite values; fix the file")
    centres = poses[:, :3, 3]
    inside = [n for n, c in zip(names, centres) if ((c > box_min) & (c < box_max)).all()]
    if inside:
        raise StageError(
            f"{path}: the camera(s) of {', '.join(inside[:5])} lie inside the object box "
            f"({np.round(box_min, 3).tolist()} .. {np.round(box_max, 3).tolist()}, normalised frame); "
            "the cameras or the box (bbox.json, hull.npz) are wrong: rebuild the dataset and hull from these cameras"
        )
    target = (box_min + box_max) / 2
    depth = np.einsum("ni,ni->n", poses[:, :3, 2], target - centres)  # along each camera's viewing axis
    behind = [n for n, z in zip(names, depth) if z <= 0]
    if behind:
        raise StageError(
            f"{path}: the object lies behind the camera(s) of {', '.join(behind[:5])}; a camera must look "
            "at the object (check world_mat_i: NeuS expects OpenCV axes, z forward)"
        )


def _view_files(root: Path, require_masks: bool) -> tuple[list[Path], list[Path]]:
    """The dataset's images and masks (sorted, the same stems; no masks where there are none)."""
    image_paths = _glob_images(root / "image")
    if not image_paths:
        raise StageError(
            f"{root / 'image'}: no images; the dataset folder must hold image/, mask/ and cameras_sphere.npz"
        )
    mask_paths = _glob_images(root / "mask")
    if mask_paths and [p.stem for p in mask_paths] != [p.stem for p in image_paths]:
        raise StageError(f"{root}: image/ and mask/ names differ; each image needs a mask of the same stem")
    if require_masks and not mask_paths:
        raise StageError(f"{root / 'mask'}: no masks; give masks or train with use_mask=false")
    return image_paths, mask_paths


def _require_memory(root: Path, image_paths: list[Path], downscale: int, device: torch.device) -> None:
    """A StageError, before anything is loaded, when the views would not fit on ``device``."""
    with Image.open(image_paths[0]) as first:
        w, h = first.size
    n = len(image_paths)
    memory.require(
        memory.image_bytes(n, w // max(downscale, 1), h // max(downscale, 1)),
        f"{root / 'image'}: {n} views of {w}x{h} (downscale {downscale}) on the {device.type}",
        f"raise train.image_downscale (now {downscale}) or lower images.max_size and re-run the "
        "workflow from the sfm stage",
        device=str(device),
    )


def _read_checked_cameras(path: Path, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """World matrices and scale matrix of ``cameras_sphere.npz``, refused when they are not finite."""
    world_mats, scale_mat = read_cameras_sphere(path, n_views=n_views)
    if not (np.isfinite(world_mats).all() and np.isfinite(scale_mat).all()):
        raise StageError(f"{path}: holds NaN or infinite values; fix or rebuild the camera file")
    return world_mats, scale_mat


def _read_views(
    root: Path, image_paths: list[Path], mask_paths: list[Path], downscale: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N,H,W,3) uint8 and masks (N,H,W) bool (None without masks), box-downscaled by ``downscale``."""
    imgs, masks = [], []
    for i, p in enumerate(image_paths):
        im = _read_rgb(p)
        if downscale > 1:
            im = _box_downscale(im, downscale)
        imgs.append(np.asarray(im))
        if mask_paths:
            m = Image.fromarray(read_mask(mask_paths[i]).astype(np.uint8) * 255)
            if downscale > 1:  # a downscaled pixel is foreground where most of its pixels are
                m = _box_downscale(m, downscale)
            masks.append(np.asarray(m) > MASK_LEVEL)
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise StageError(f"{root / 'image'}: images have different sizes {sorted(shapes)}")
    if masks and masks[0].shape != imgs[0].shape[:2]:
        raise StageError(f"{root / 'mask'}: masks are not the size of the images; rebuild the dataset")
    return np.stack(imgs), np.stack(masks) if masks else None


def _split_views(n: int, holdout_every: int) -> tuple[list[int], list[int]]:
    """(held-out, training) view indices: every ``holdout_every``-th view held out; otherwise view 0 validates
    and every view trains."""
    ids = np.arange(n)
    if holdout_every > 0:
        val_ids = ids[::holdout_every].tolist()
        return val_ids, [i for i in ids.tolist() if i not in val_ids]
    return [0], ids.tolist()


class NeusScene:
    """All views of a scene on ``device``: images (N,H,W,3) uint8, masks (N,H,W) bool, inverse intrinsics and
    poses in the normalised frame. ``train_ids`` / ``val_ids`` split the views (holdout_every)."""

    def __init__(
        self,
        root: Path,
        *,
        downscale: int = 1,
        holdout_every: int = 0,
        require_masks: bool = True,
        device: torch.device | str = "cpu",
    ):
        root = Path(root)
        device = torch.device(device)
        image_paths, mask_paths = _view_files(root, require_masks)
        _require_memory(root, image_paths, downscale, device)
        self.cameras_path = root / "cameras_sphere.npz"
        world_mats, scale_mat = _read_checked_cameras(self.cameras_path, len(image_paths))
        K, poses = neus_cameras(world_mats, scale_mat)
        self.names = [p.stem for p in image_paths]
        self.scale_mat = scale_mat
        imgs, masks = _read_views(root, image_paths, mask_paths, downscale)
        self.device = device
        self.images = torch.from_numpy(imgs).to(device)
        if masks is not None:
            self.masks = torch.from_numpy(masks).to(device)
        else:
            self.masks = torch.ones(self.images.shape[:3], dtype=torch.bool, device=device)
        self.has_masks = bool(mask_paths)
        K = _downscale_K(K, downscale) if downscale > 1 else K
        self.K_np, self.poses_np = K, poses
        self.K = torch.from_numpy(K).float().to(device)
        self.K_inv = torch.from_numpy(np.linalg.inv(K)).float().to(device)
        self.poses = torch.from_numpy(poses).float().to(device)
        self.n, self.h, self.w = self.images.shape[:3]
        self.val_ids, self.train_ids = _split_views(self.n, holdout_every)
        self._train = torch.tensor(self.train_ids, device=device)
        self._fg = self._foreground_pixels()
        log.info(
            "scene %s: %d views (%d train, %d held out) at %dx%d on %s",
            root,
            self.n,
            len(self.train_ids),
            len(self.val_ids) if holdout_every else 0,
            self.w,
            self.h,
            device,
        )

    def check_cameras(self, box_min: np.ndarray, box_max: np.ndarray) -> None:
        check_cameras(self.K_np, self.poses_np, self.names, box_min, box_max, self.cameras_path)

    def _foreground_pixels(self) -> torch.Tensor:
        """Flat indices (view, y, x) of mask pixels dilated by 2% of the image, over training views."""
        import torch.nn.functional as F

        r = max(1, int(0.02 * max(self.h, self.w)))
        m = self.masks[self.train_ids].float()[:, None]
        dil = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)[:, 0] > 0
        view, y, x = torch.nonzero(dil, as_tuple=True)
        return torch.stack([self._train[view], y, x], -1)

    def rays(self, view: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions (normalised frame) through integer pixel coordinates."""
        pose = self.poses[view]
        pix = torch.stack([x.float(), y.float(), torch.ones_like(x, dtype=torch.float32)], -1)
        d_cam = (self.K_inv[view] @ pix[..., None])[..., 0]
        d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
        d = (pose[:, :3, :3] @ d_cam[..., None])[..., 0]
        return pose[:, :3, 3], d

    def sample(self, n: int, fg_share: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` random training rays: a share ``fg_share`` from the dilated masks, the rest anywhere.
        ``gen`` must live on the scene's device."""
        n_fg = int(n * fg_share) if self.has_masks else 0
        dev = self.device
        view = self._train[torch.randint(len(self._train), (n - n_fg,), generator=gen, device=dev)]
        y = torch.randint(self.h, (n - n_fg,), generator=gen, device=dev)
        x = torch.randint(self.w, (n - n_fg,), generator=gen, device=dev)
        if n_fg:
            pick = self._fg[torch.randint(len(self._fg), (n_fg,), generator=gen, device=dev)]
            view, y, x = torch.cat([view, pick[:, 0]]), torch.cat([y, pick[:, 1]]), torch.cat([x, pick[:, 2]])
        o, d = self.rays(view, y, x)
        return {
            "rays_o": o,
            "rays_d": d,
            "rgb": self.images[view, y, x].float() / 255.0,
            "mask": self.masks[view, y, x].float(),
        }

    def image_rays(self, view: int, downscale: int = 1) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        ys = torch.arange(0, self.h, downscale, device=self.device)
        xs = torch.arange(0, self.w, downscale, device=self.device)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        v = torch.full_like(yy.flatten(), view)
        o, d = self.rays(v, yy.flatten(), xx.flatten())
        return o, d, len(ys), len(xs)
