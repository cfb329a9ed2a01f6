"""Per-view work on a pool of threads: OpenCV (GrabCut, resizing, remapping), image decoders and numpy's
large array operations release the GIL, so views run side by side on every core this process may use."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """Threads for per-view work: the CPUs this process may use, capped by OMP_NUM_THREADS where it is set
    (Snakemake sets it to a rule's threads)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(n, int(cap)) if cap.isdigit() and int(cap) > 0 else n)


def map_views(fn: Callable[[T], R], items: Sequence[T], desc: str | None = None, unit: str = "views") -> list[R]:
    """``[fn(x) for x in items]``, in order, several at a time; with ``desc``, progress lines as they finish."""
    n = min(workers(), max(1, len(items)))
    if n == 1 and desc is None:
        return [fn(x) for x in items]
    out: list[R] = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        if desc is None:
            return list(pool.map(fn, items))
        with Progress(desc, len(items), unit) as bar:
            for result in pool.map(fn, items):
                out.append(result)
                bar.update()
    return out
