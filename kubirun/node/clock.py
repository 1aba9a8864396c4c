"""Time, as the node's rules see it: ``time.monotonic`` in production, a
hand-moved clock in tests (kubelet's rules span minutes; the tests take
milliseconds)."""
from __future__ import annotations

import time


class Clock:
    def now(self) -> float:
        """Seconds, monotonic."""
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
