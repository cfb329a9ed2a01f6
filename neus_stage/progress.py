"""Progress of long steps: a bar on an interactive terminal, else one line every few seconds.

Under Snakemake each rule's output goes to its log file; ``neus-stage --log FILE`` (how the rules call it)
also sends the records of the ``neus_stage.progress`` logger, and warnings, to the terminal that runs
Snakemake (see :func:`neus_stage.logs.setup_logging`), so a user watching a run sees one line per long
step every few seconds ("[sfm demo] SIFT features: 20/49 photos, 3.1/s, about 9 s left") while the full
log stays in the file.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

PROGRESS = logging.getLogger("neus_stage.progress")
INTERVAL_S = 5.0
"""Seconds between two progress lines of one step."""

T = TypeVar("T")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts work done towards ``total`` and reports it: ``tqdm`` where stderr is a terminal, otherwise a
    ``neus_stage.progress`` log line at most every ``interval`` seconds (and one at the end)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", interval: float = INTERVAL_S):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.n = 0
        self.t0 = self._last = time.monotonic()
        self.postfix = ""
        interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, unit=unit, mininterval=1.0) if interactive else None

    def update(self, n: int = 1, postfix: str = "") -> None:
        self.n += n
        self.postfix = postfix or self.postfix
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            PROGRESS.info("%s", self.line())

    def set(self, n: int, postfix: str = "") -> None:
        """Report an absolute count (for work counted elsewhere, e.g. rows in COLMAP's database)."""
        self.update(n - self.n, postfix)

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {done} {self.unit}"
        if rate > 0:
            text += f", {rate:.3g}/s" if rate < 100 else f", {rate:.0f}/s"
            if self.total and self.n < self.total:
                text += f", about {_duration((self.total - self.n) / rate)} left"
        if self.postfix:
            text += f" ({self.postfix})"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.n:
            elapsed = time.monotonic() - self.t0
            PROGRESS.info("%s: %s %s done in %s", self.desc, self.n, self.unit, _duration(elapsed))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``for x in track(items, "rembg", unit="views")``: progress over an iterable."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as bar:
        for item in items:
            yield item
            bar.update()
