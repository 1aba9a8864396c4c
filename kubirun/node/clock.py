"""Time, as the node's rules see it: ``time.monotonic`` in production, a
hand-moved clock in unit tests (kubelet's rules span minutes; the tests take
milliseconds), a fast clock in integration tests (the real supervisor, its
minutes passing in seconds: the ladder is shortened only through the clock,
never by changing the rules).

``now`` drives the rules; ``wall`` is what status shows (``startedAt``);
``sleep`` is how the supervisor waits for a rule's deadline."""
from __future__ import annotations

import time


class Clock:
    def now(self) -> float:
        """Seconds, monotonic."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps shown to people."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """A clock that moves only when told to."""

    EPOCH = 1796662800.0  # 2026-12-07T17:00:00Z: timestamps the tests can read

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.start = start

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.EPOCH + (self.t - self.start)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class FastClock(Clock):
    """Real time, ``factor`` times faster: what the rules count as 10 s
    passes in 10/factor real seconds.  For tests of the real supervisor."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._origin = time.monotonic()

    def now(self) -> float:
        return self._origin + (time.monotonic() - self._origin) * self.factor

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds) / self.factor)
