"""Memory a run will need against what the machine has: a photo set too large is refused before the work,
with the estimate and the setting to lower, not killed by the kernel half way.

Only the standard library (and torch where a CUDA device is asked about): training imports this module on
machines without the geometry libraries.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StageError

GIB = 2**30
HEADROOM = 0.8
"""Share of the available memory a run may plan to use (the rest: the libraries, the other stages)."""


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available now on ``device``: MemAvailable of /proc/meminfo (free + reclaimable cache) for the
    CPU, the free memory of a CUDA device; None where it cannot be told."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # noqa: BLE001 - no CUDA, or a driver that cannot say: no check
            return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def image_bytes(n_views: int, width: int, height: int, channels: int = 4) -> int:
    """Bytes of ``n_views`` images of width x height held at once (RGB uint8 and a bool mask: 4 per pixel)."""
    return int(n_views) * int(width) * int(height) * int(channels)


def require(needed: int, what: str, fix: str, device: str = "cpu", available: int | None = None) -> None:
    """StageError when ``needed`` bytes exceed the headroom of the memory available on ``device``."""
    available = available_bytes(device) if available is None else available
    if available is None or needed <= HEADROOM * available:
        return
    where = "GPU" if str(device).startswith("cuda") else "this machine"
    raise StageError(
        f"{what} need about {needed / GIB:.1f} GiB, but {where} has {available / GIB:.1f} GiB available; {fix}"
    )
