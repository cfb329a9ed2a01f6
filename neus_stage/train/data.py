"""Rays from a NeuS-layout scene (image/, mask/, cameras_sphere.npz), loaded the way the official loader does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..cameras import load_cameras_sphere, neus_cameras
from ..errors import StageError

log = logging.getLogger(__name__)


def _glob_images(folder: Path) -> list[Path]:
    return (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if folder.is_dir() else []
    )


def _downscale_K(K: np.ndarray, s: int) -> np.ndarray:
    """Intrinsics for an image box-downscaled by s, with pixel centres at integer coordinates."""
    K = K.copy()
    K[:, 0, 0] /= s
    K[:, 1, 1] /= s
    K[:, 0, 1] /= s
    K[:, 0, 2] = (K[:, 0, 2] - (s - 1) / 2) / s
    K[:, 1, 2] = (K[:, 1, 2] - (s - 1) / 2) / s
    return K


class NeusScene:
    """All views of a scene in memory: images (N,H,W,3) uint8, masks (N,H,W) bool, K and poses in the
    normalised frame. ``train_ids`` / ``val_ids`` split the views (holdout_every)."""

    def __init__(self, root: Path, *, downscale: int = 1, holdout_every: int = 0, require_masks: bool = True):
        root = Path(root)
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
        world_mats, scale_mat = load_cameras_sphere(root / "cameras_sphere.npz", n_views=len(image_paths))
        K, poses = neus_cameras(world_mats, scale_mat)
        self.names = [p.stem for p in image_paths]
        self.scale_mat = scale_mat
        imgs, masks = [], []
        for i, p in enumerate(image_paths):
            im = Image.open(p).convert("RGB")
            if downscale > 1:
                im = im.resize((im.width // downscale, im.height // downscale), Image.BOX)
            imgs.append(np.asarray(im))
            if mask_paths:
                m = Image.open(mask_paths[i]).convert("L")
                if downscale > 1:
                    m = m.resize((m.width // downscale, m.height // downscale), Image.BOX)
                masks.append(np.asarray(m) > 127)
        shapes = {im.shape for im in imgs}
        if len(shapes) != 1:
            raise StageError(f"{root / 'image'}: images have different sizes {sorted(shapes)}")
        self.images = torch.from_numpy(np.stack(imgs))
        self.masks = torch.from_numpy(np.stack(masks)) if masks else torch.ones(self.images.shape[:3], dtype=torch.bool)
        self.has_masks = bool(mask_paths)
        self.K = torch.from_numpy(_downscale_K(K, downscale) if downscale > 1 else K).float()
        self.poses = torch.from_numpy(poses).float()
        self.n, self.h, self.w = self.images.shape[:3]
        ids = np.arange(self.n)
        if holdout_every > 0:
            self.val_ids = ids[::holdout_every].tolist()
            self.train_ids = [i for i in ids.tolist() if i not in self.val_ids]
        else:
            self.val_ids, self.train_ids = [0], ids.tolist()
        self._fg = self._foreground_pixels()
        log.info(
            "scene %s: %d views (%d train, %d held out) at %dx%d",
            root,
            self.n,
            len(self.train_ids),
            len(self.val_ids) if holdout_every else 0,
            self.w,
            self.h,
        )

    def _foreground_pixels(self) -> torch.Tensor:
        """Flat indices (view, y, x) of mask pixels dilated by 2% of the image, over training views."""
        import torch.nn.functional as F

        r = max(1, int(0.02 * max(self.h, self.w)))
        m = self.masks[self.train_ids].float()[:, None]
        dil = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)[:, 0] > 0
        view, y, x = torch.nonzero(dil, as_tuple=True)
        return torch.stack([torch.tensor(self.train_ids)[view], y, x], -1)

    def rays(self, view: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions (normalised frame) through integer pixel coordinates."""
        K, pose = self.K[view], self.poses[view]
        pix = torch.stack([x.float(), y.float(), torch.ones_like(x, dtype=torch.float32)], -1)
        d_cam = torch.linalg.solve(K, pix[..., None])[..., 0]
        d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
        d = (pose[:, :3, :3] @ d_cam[..., None])[..., 0]
        return pose[:, :3, 3], d

    def sample(self, n: int, fg_share: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        n_fg = int(n * fg_share) if self.has_masks else 0
        train = torch.tensor(self.train_ids)
        view = train[torch.randint(len(train), (n - n_fg,), generator=gen)]
        y = torch.randint(self.h, (n - n_fg,), generator=gen)
        x = torch.randint(self.w, (n - n_fg,), generator=gen)
        if n_fg:
            pick = self._fg[torch.randint(len(self._fg), (n_fg,), generator=gen)]
            view, y, x = torch.cat([view, pick[:, 0]]), torch.cat([y, pick[:, 1]]), torch.cat([x, pick[:, 2]])
        o, d = self.rays(view, y, x)
        return {
            "rays_o": o,
            "rays_d": d,
            "rgb": self.images[view, y, x].float() / 255.0,
            "mask": self.masks[view, y, x].float(),
        }

    def image_rays(self, view: int, downscale: int = 1) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        ys = torch.arange(0, self.h, downscale)
        xs = torch.arange(0, self.w, downscale)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        v = torch.full_like(yy.flatten(), view)
        o, d = self.rays(v, yy.flatten(), xx.flatten())
        return o, d, len(ys), len(xs)
