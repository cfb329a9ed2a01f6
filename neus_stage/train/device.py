"""The training device and the reduced precision of the hash encoding, checked before any work."""

from __future__ import annotations

import logging

import torch

from ..errors import StageError
from .config import TrainConfig
from .encodings import encoding_backend

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA where torch sees it, else the CPU), ``cpu`` or ``cuda[:i]``; anything else, or CUDA on a
    machine without it, is a StageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(
            f"device {name} was asked for but torch sees no CUDA device here (see `neus-stage doctor`); "
            "use device cpu or auto"
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise StageError(f"unknown device {name!r}: use cpu, cuda or auto")
    return torch.device(name)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The reduced precision of the encoding (None: fp32). ``auto`` is fp16 only where the encoding is
    tinycudann's: the presence of tinycudann alone never switches a model that does not use it to fp16.
    A precision the device cannot run is an error before training starts."""
    tcnn = cfg.sdf_backend == "hashgrid" and encoding_backend(cfg, device) == "tcnn"
    precision = cfg.precision
    if precision == "auto":
        precision = "fp16" if tcnn else "fp32"
    if precision == "fp32":
        return None
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if precision == "bf16" and tcnn:
        raise StageError(
            "precision=bf16 with the tinycudann encoding: tinycudann computes in fp16 or fp32; "
            "use precision=fp16 (or auto), fp32, or encoding_backend=torch"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise StageError(
            f"precision=bf16: this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16; "
            "use precision=fp16 or fp32"
        )
    try:  # the CPU (and other devices) must have autocast for this dtype
        with torch.autocast(device.type, dtype=dtype):
            torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
    except (RuntimeError, AssertionError) as exc:
        raise StageError(
            f"precision={precision}: this torch build cannot autocast to {precision} on {device.type} ({exc}); "
            "use precision=fp32 (or bf16 on a CPU)"
        ) from exc
    if cfg.sdf_backend == "mlp":
        log.info(
            "precision=%s: the mlp model has no encoding to run in reduced precision: it computes in fp32", precision
        )
    return dtype
