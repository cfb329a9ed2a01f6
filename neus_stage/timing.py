"""Step timings that stages record in their reports."""

from __future__ import annotations

import time


class StageTimer:
    """Named durations of a stage's steps: ``t = timer.lap("sample", t)`` records the time since ``t``."""

    def __init__(self, digits: int = 4):
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.digits = digits

    def lap(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - since, self.digits)
        return now

    def total(self, name: str = "total") -> float:
        """Record and return the time since the timer started."""
        self.timings[name] = round(time.perf_counter() - self.start, self.digits)
        return self.timings[name]
