"""The crash-loop back-off of a container, as kubelet counts it.

kubelet keeps one back-off entry per container (its name and spec hash) in
a ``flowcontrol.Backoff`` of 10 s initial, 300 s maximum, and decides at
each sync of a dead container:

    in back-off?  there is an entry, the container's exit (``finishedAt``)
                  is less than 600 s (twice the maximum) after the entry's
                  last update, and less than the entry's delay ago
                  -> wait: the container is ``Waiting``/``CrashLoopBackOff``
    else          ``Next``: a new entry of 10 s (none yet, or expired), or
                  the delay doubled up to 300 s; last update = that exit
                  -> restart now

So the first restart is immediate, the next ones wait 10, 20, 40, 80, 160,
300, 300... s after each exit, and a container that ran 600 s starts the
ladder again.  A changed container spec is a new key: a new ladder.
"""
from __future__ import annotations

from kubirun.node.clock import Clock

INITIAL = 10.0
MAXIMUM = 300.0


class _Entry:
    __slots__ = ("delay", "last_update")

    def __init__(self, delay: float, last_update: float) -> None:
        self.delay, self.last_update = delay, last_update


class Backoff:
    def __init__(self, clock: Clock | None = None, initial: float = INITIAL,
                 maximum: float = MAXIMUM) -> None:
        self.clock = clock or Clock()
        self.initial, self.maximum = initial, maximum
        self._entries: dict[str, _Entry] = {}

    def _expired(self, entry: _Entry, event_time: float) -> bool:
        return event_time - entry.last_update > 2 * self.maximum

    def in_backoff_since(self, key: str, finished_at: float) -> bool:
        """Must the container that exited at ``finished_at`` still wait?"""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, finished_at):
            return False
        return self.clock.now() - finished_at < entry.delay

    def next(self, key: str, finished_at: float) -> None:
        """Record a restart decided for the exit at ``finished_at``."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, finished_at):
            entry = self._entries[key] = _Entry(self.initial, finished_at)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
        entry.last_update = finished_at

    def should_wait(self, key: str, finished_at: float) -> float:
        """kubelet's ``doBackOff``: 0 to restart now (and count it), else
        the seconds left to wait."""
        if self.in_backoff_since(key, finished_at):
            entry = self._entries[key]
            return max(0.0, finished_at + entry.delay - self.clock.now())
        self.next(key, finished_at)
        return 0.0

    def delay(self, key: str) -> float | None:
        """The current delay of ``key`` (what ``back-off Ns`` says)."""
        entry = self._entries.get(key)
        return entry.delay if entry else None

    def entry(self, key: str) -> tuple[float, float] | None:
        """(delay, last update) of ``key``, to be saved across restarts of
        the supervisor (``clock.now()`` is the system's monotonic clock:
        valid across processes until the machine reboots)."""
        entry = self._entries.get(key)
        return (entry.delay, entry.last_update) if entry else None

    def restore(self, key: str, delay: float, last_update: float) -> None:
        self._entries[key] = _Entry(delay, last_update)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
