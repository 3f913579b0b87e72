"""The clock is injected into everything that depends on time, so tests never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], float]
"""A function returning Unix time in seconds."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(30)``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
