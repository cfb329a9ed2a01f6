"""Checkpoints: the resumable training state (``ckpt/last.pt``) and the trained model (``checkpoint.pt``).

Written all or nothing (a kill never leaves half a file, a full disk is a plain OSError); read once and
validated (a missing or unreadable file is a StageError naming it). ``load_fields`` gives what the mesh and
export stages need from one read: the SDF and, where the model has one, the colour function. Needs torch
and numpy only, so a trained model loads on a machine without the geometry libraries.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_bytes_atomic
from ..errors import StageError
from .config import TrainConfig
from .device import pick_device
from .fields import NeuSModel

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` of ``payload``, serialised in memory and then written atomically: a full disk is a plain
    OSError naming the errno (torch.save onto a file raises an opaque RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(Path(path), buffer.getbuffer())


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The saved dictionary of ``path``, tensors on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: checkpoint not found; run the train stage first")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise StageError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); re-run training") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise StageError(f"{path}: not a neus-stage checkpoint (no model and config in it); re-run training")
    return state


def resume_training(
    path: Path,
    config_hash: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
    occupancy,
    seed: int,
    n_rays: int,
) -> tuple[int, int]:
    """Restore the training state of ``path`` where it belongs to this configuration; (first step, ray count):
    (0, ``n_rays``) when there is nothing to resume."""
    if not Path(path).is_file():
        return 0, n_rays
    state = read_checkpoint(path, next(model.parameters()).device)
    if state.get("hash") != config_hash:
        log.warning("%s belongs to another configuration; starting afresh", path)
        return 0, n_rays
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    try:
        generator.set_state(state["generator"].cpu())
    except RuntimeError:  # saved on another kind of device: a fresh stream from the seed and step
        generator.manual_seed(seed + state["step"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if occupancy is not None and state.get("occupancy") is not None:
        occupancy.load_state_dict(state["occupancy"])
    log.info("resuming from %s at step %d", path, state["step"])
    return int(state["step"]), int(state.get("n_rays", n_rays))


def build_model(
    cfg: TrainConfig,
    box_min: np.ndarray,
    box_max: np.ndarray,
    prior: torch.Tensor | None,
    device: torch.device,
    half: bool = False,
) -> NeuSModel:
    return NeuSModel(cfg, torch.from_numpy(box_min), torch.from_numpy(box_max), device, prior, half=half).to(device)


def model_from_state(state: dict, device: torch.device) -> tuple[NeuSModel, TrainConfig]:
    """The trained model of a checkpoint's dictionary (any backend: the grid parameters share one layout); the
    hull prior, where the run used one, comes from the saved weights."""
    known = set(TrainConfig.__dataclass_fields__)
    cfg_d = {k: v for k, v in state["config"].items() if k in known}  # fields since removed do not matter here
    cfg_d["skip_layers"] = tuple(cfg_d["skip_layers"])
    if "background" not in cfg_d:  # saved before the background model existed: there is none to load
        cfg_d["background"] = "none"
    old_prior = state["config"].get("hull_prior", True)
    if isinstance(old_prior, bool):  # saved when hull_prior was true (the whole hull) or false (the sphere)
        cfg_d["hull_prior"] = "full" if old_prior else "none"
    cfg = TrainConfig(**cfg_d)
    if device.type != "cuda":
        cfg.encoding_backend = "torch"
    prior = state["model"].get("sdf_net.prior")
    prior = prior if prior is not None and prior.numel() else None
    model = build_model(cfg, np.asarray(state["box_min"]), np.asarray(state["box_max"]), prior, device)
    model.load_state_dict(state["model"])
    model.sdf_net.set_active_levels(cfg.n_levels)
    model.sdf_net.prior_weight = state.get("prior_weight", 1.0)
    model.eval()
    return model, cfg


def load_model(checkpoint: Path, device: str = "auto") -> tuple[NeuSModel, TrainConfig, dict]:
    """Rebuild the trained model from checkpoint.pt: (model, config, the saved dictionary)."""
    dev = pick_device(device)
    state = read_checkpoint(checkpoint, dev)
    try:
        model, cfg = model_from_state(state, dev)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise StageError(
            f"{checkpoint}: the checkpoint does not fit this version's model ({type(exc).__name__}: "
            f"{exc}); re-run training"
        ) from exc
    return model, cfg, state


def sdf_function(model: NeuSModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable mapping points (N,3) in the normalised frame to SDF values (N,)."""

    def sdf(x: torch.Tensor) -> torch.Tensor:
        return model.sdf(x)

    return sdf


def color_function(model: NeuSModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A callable (points (N,3), normals (N,3)) -> RGB (N,3): the colour seen looking along -normal."""

    def color(x: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        _, feat = model.sdf_feature(x)
        n = F.normalize(normals, dim=-1)
        return model.color_net(x, n, -n, feat)

    return color


def load_fields(checkpoint: Path, device: str = "auto") -> tuple[Callable, Callable | None]:
    """The SDF and colour functions of a trained model, from one read of ``checkpoint`` (every trained model
    has a colour network; the type allows None for fields that have none, such as the tests' stand-ins)."""
    model, _, _ = load_model(checkpoint, device)
    return sdf_function(model), color_function(model)


def load_sdf_function(checkpoint: Path, device: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    return sdf_function(load_model(checkpoint, device)[0])


def load_color_function(checkpoint: Path, device: str = "auto") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return color_function(load_model(checkpoint, device)[0])
