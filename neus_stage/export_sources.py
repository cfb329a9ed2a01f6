"""Where the export stage's texture comes from (:mod:`neus_stage.export`): the dataset's views (names, cameras,
image size; every k-th one held out of the texture to measure it) and the trained colour network, seen
head-on at surface points in world units.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts.dataset import read_cameras_sphere
from .artifacts.textured import dataset_views, read_view
from .errors import StageError
from .geometry.normalized_frame import to_normalized
from .geometry.texture import View
from .progress import Progress

CHECK_VIEWS = 8
"""Views re-rendered from the textured mesh for the PSNR in export.json (evenly spaced; all held-out ones)."""


def holdout_names(names: Sequence[str], every: int) -> list[str]:
    """Every ``every``-th view (0: none), starting with the middle one of the first block."""
    if every <= 0:
        return []
    return [n for i, n in enumerate(names) if i % every == every // 2]


@dataclass
class ExportViews:
    """The dataset's views as the export uses them: names (sorted image stems), cameras, image size, and the
    views held out of the texture (re-rendered to measure it)."""

    dataset_dir: Path
    names: list[str]
    world_mats: np.ndarray
    size: tuple[int, int]
    held: list[str]

    @classmethod
    def read(cls, dataset_dir: Path, holdout_every: int) -> ExportViews:
        """The views of ``dataset_dir``, every ``holdout_every``-th one held out (0: none)."""
        names, world_mats, size = dataset_views(dataset_dir)
        held = holdout_names(names, holdout_every)
        if held and len(held) >= len(names):
            raise StageError(f"--holdout-every {holdout_every} leaves no view for the texture; use 0 or a larger value")
        return cls(Path(dataset_dir), names, world_mats, size, held)

    def view(self, name: str) -> View:
        return read_view(self.dataset_dir, name, self.world_mats[self.names.index(name)])

    def texture_names(self) -> list[str]:
        return [n for n in self.names if n not in self.held]

    def texture_views(self, progress: Progress) -> Iterator[View]:
        """The views the texture is baked from, read one at a time."""
        for name, wm in zip(self.names, self.world_mats):
            if name not in self.held:
                yield read_view(self.dataset_dir, name, wm)
                progress.update()

    def check_names(self) -> list[str]:
        """The views re-rendered for the PSNR: the held-out ones, else CHECK_VIEWS evenly spaced ones."""
        if self.held:
            return list(self.held)
        return [self.names[i] for i in np.unique(np.linspace(0, len(self.names) - 1, CHECK_VIEWS).round().astype(int))]


def network_colors(
    checkpoint: Path,
    dataset_dir: Path,
    points: np.ndarray,
    normals: np.ndarray,
    device: str = "auto",
    chunk: int = 1 << 16,
) -> np.ndarray:
    """The trained colour network's colour (N, 3) in [0, 1] at world points, seen head-on (along -normal)."""
    import torch

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: checkpoint not found; run the train stage first (texture from the network)")
    try:
        from .train.checkpoint import load_color_function
        from .train.device import pick_device

        device = str(pick_device(device))
        color = load_color_function(checkpoint, device)
    except (OSError, RuntimeError, KeyError, EOFError, NotImplementedError, ImportError) as exc:
        raise StageError(
            f"{checkpoint}: cannot load the colour network ({type(exc).__name__}: {exc}); re-run the "
            "train stage, or bake the texture from the photos (--texture-from photos)"
        ) from exc
    _, scale_mat = read_cameras_sphere(Path(dataset_dir) / "cameras_sphere.npz")
    pts_n, nrm_n = to_normalized(points, normals, scale_mat)
    out = np.empty((len(points), 3), dtype=np.float32)
    with torch.no_grad(), Progress("colour network", len(points), "texels") as bar:
        for s in range(0, len(points), chunk):
            p = torch.as_tensor(pts_n[s : s + chunk], dtype=torch.float32, device=device)
            n = torch.as_tensor(nrm_n[s : s + chunk], dtype=torch.float32, device=device)
            out[s : s + chunk] = color(p, n).reshape(-1, 3).float().cpu().numpy()
            bar.update(len(p))
    return np.clip(out, 0, 1)
