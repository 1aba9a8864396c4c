"""A container's events, typed: ``OOMEvent`` when the kernel's OOM killer
strikes in it, ``StatsEvent`` every interval (or once) if asked, and a last
``ExitEvent`` when its PID 1 has exited (or it was deleted).  ``Events``
is an iterator and an async iterator of them (``kubirun.api``'s
``Runtime.events``); ``stream`` prints them as ``kubirun events`` does,
runc's JSON lines: ``{"type": "stats", "id": ..., "data": {...}}`` and
``{"type": "oom", "id": ...}``, ending when the container stops.

OOM kills are not polled where the kernel can tell us: on cgroup v1 an
eventfd registered on ``memory.oom_control`` wakes us the moment it
happens, before the killed container can exit and be deleted (polling
lost that race to a `run` that deletes within milliseconds).  Elsewhere
the ``oom_kill`` counter is read often.  The exit is PID 1's pidfd
becoming readable; its status is the one the fork server that reaped it
recorded (``kubirun.exitstatus``), None if nobody records it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from kubirun.exitstatus import ExitStatus

POLL = 0.2  # seconds between two looks at what no fd tells us (v2's OOM counter)
RECORD_WAIT = 2.0  # how long an exit's recorded status may take to appear


@dataclass(frozen=True)
class OOMEvent:
    """The OOM killer killed a process of the container."""

    id: str = ""


@dataclass(frozen=True)
class StatsEvent:
    """The container's resource usage (``Container.stats()``'s dict)."""

    stats: dict = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class ExitEvent:
    """The container's PID 1 has exited (the last event): its status, or
    None if nobody recorded it or the container was deleted."""

    status: ExitStatus | None = None
    id: str = ""


Event = OOMEvent | StatsEvent | ExitEvent


class Events:
    """The events of container ``container_id`` of state root ``root``:
    ``for event in Events(...)`` or ``async for event in Events(...)``.
    ``stats_interval``: a ``StatsEvent`` every that many seconds (None:
    none); ``once``: one ``StatsEvent`` and nothing else.  Every fd it
    opens is closed when the iteration ends (or its iterator is closed)."""

    def __init__(self, container_id: str, root: str | None = None,
                 stats_interval: float | None = None, once: bool = False) -> None:
        if stats_interval is not None and stats_interval <= 0:
            raise ValueError(f"stats_interval: expected a positive number of seconds,"
                             f" got {stats_interval!r}")
        self.id = container_id
        self.root = root
        self.stats_interval = stats_interval
        self.once = once

    def __iter__(self):
        import select

        watcher = _Watcher(self)
        try:
            poller = select.poll()
            for fd in watcher.fds():
                poller.register(fd, select.POLLIN)
            while True:
                yield from watcher.step()
                if watcher.done:
                    return
                ready = [fd for fd, _ in poller.poll(watcher.timeout() * 1000)]
                watcher.readable(ready)
        finally:
            watcher.close()

    async def __aiter__(self):
        import asyncio

        watcher = _Watcher(self)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        ready: list[int] = []

        def wake(fd: int) -> None:
            ready.append(fd)
            woken.set()

        fds = watcher.fds()
        try:
            for fd in fds:
                loop.add_reader(fd, wake, fd)
            while True:
                for event in watcher.step():
                    yield event
                if watcher.done:
                    return
                try:
                    await asyncio.wait_for(woken.wait(), watcher.timeout())
                except asyncio.TimeoutError:
                    pass
                woken.clear()
                watcher.readable(list(dict.fromkeys(ready)))
                ready.clear()
        finally:
            for fd in fds:
                loop.remove_reader(fd)
            watcher.close()


class _Watcher:
    """One watch: what to wait on, and what happened since the last look."""

    def __init__(self, events: Events) -> None:
        from kubirun.container import Container

        self.events = events
        self.container = Container(events.id, events.root)
        self.done = False
        self.pidfd: int | None = None
        self.notifier: tuple[int, str, int] | None = None
        self.pending: list = []
        if events.once:
            return
        state = self.container.load()
        self.cgroup = self.container._cgroup(state) if state.get("cgroup") else None
        self.seen_ooms = self.cgroup.oom_kills() if self.cgroup is not None else 0
        if self.cgroup is not None:
            self.notifier = _oom_eventfd(self.cgroup.memory_dir())
        if self.container.status(state) != "stopped" and state.get("pid"):
            from kubirun import _native

            try:
                self.pidfd = _native.pidfd_open(state["pid"])
            except OSError:
                self.pidfd = None  # gone already: the next step sees it stopped
            # The PID may have been recycled between the two reads: the
            # status (which checks its start time) is read once more.
            if self.pidfd is not None and self.container.status() == "stopped":
                os.close(self.pidfd)
                self.pidfd = None
        self.next_stats = time.monotonic()

    def fds(self) -> list[int]:
        return [fd for fd in (self.pidfd, self.notifier[0] if self.notifier else None)
                if fd is not None]

    def timeout(self) -> float:
        """Seconds until the next look, at most."""
        wait = POLL
        if self.events.stats_interval is not None:
            wait = min(wait, max(0.0, self.next_stats - time.monotonic()))
        return wait

    def readable(self, fds: list[int]) -> None:
        if self.notifier is not None and self.notifier[0] in fds:
            os.read(self.notifier[0], 8)  # an OOM, or the cgroup's removal
            if os.path.isdir(os.path.dirname(self.notifier[1])):
                self.pending.append(OOMEvent(self.events.id))
                self.seen_ooms += 1

    def step(self) -> list:
        """The events since the last step (``done`` set after the last)."""
        from kubirun.state import NotFound

        found, self.pending = self.pending, []
        if self.events.once:
            self.done = True
            return [StatsEvent(self.container.stats(), self.events.id)]
        try:
            stopped = self.container.status() == "stopped"
            found += self._new_ooms()
            if not stopped and self.events.stats_interval is not None \
                    and time.monotonic() >= self.next_stats:
                found.append(StatsEvent(self.cgroup.stats() if self.cgroup else {},
                                        self.events.id))
                self.next_stats += self.events.stats_interval
        except (NotFound, OSError):
            self.done = True  # deleted while we watched
            return found + [ExitEvent(None, self.events.id)]
        if stopped:
            self.done = True
            found.append(ExitEvent(self._recorded_status(), self.events.id))
        return found

    def _new_ooms(self) -> list:
        if self.cgroup is None:
            return []
        ooms = self.cgroup.oom_kills()
        found = [OOMEvent(self.events.id) for _ in range(ooms - self.seen_ooms)]
        self.seen_ooms = max(ooms, self.seen_ooms)
        return found

    def _recorded_status(self) -> ExitStatus | None:
        """What the reaper records, a moment after PID 1's exit (a
        container nobody records for: None, after RECORD_WAIT)."""
        from kubirun import exitstatus

        deadline = time.monotonic() + RECORD_WAIT
        while True:
            record = exitstatus.read(self.events.root, self.events.id)
            if record is not None:
                return ExitStatus.from_record(record)
            if time.monotonic() >= deadline or not self._reaper_may_record():
                return None
            time.sleep(0.01)

    def _reaper_may_record(self) -> bool:
        """Whether the process that created the container (its init's
        parent) still lives to record its exit: a fork server does; a
        ``kubirun create`` has exited, a foreground ``run`` records nothing."""
        from kubirun.state import process_start_time

        try:
            state = self.container.load()
        except Exception:  # noqa: BLE001 - deleted meanwhile
            return False
        creator = state.get("creator") or [0, 0]
        return not state.get("ephemeral") and bool(creator[0]) \
            and process_start_time(creator[0]) == creator[1]

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.notifier is not None:
            os.close(self.notifier[0])
            os.close(self.notifier[2])
            self.notifier = None


def _oom_eventfd(memory_dir: str | None) -> tuple[int, str, int] | None:
    """(eventfd, oom_control path, its fd) registered with the v1 memory
    cgroup's cgroup.event_control; None where there is no such interface."""
    if not memory_dir:
        return None
    control = os.path.join(memory_dir, "memory.oom_control")
    if not os.path.exists(control):
        return None
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    ofd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(os.path.join(memory_dir, "cgroup.event_control"), "w") as f:
            f.write(f"{efd} {ofd}")
    except OSError:
        os.close(efd)
        os.close(ofd)
        return None
    return efd, control, ofd


def stream(container_id: str, once: bool, interval: float, root: str | None = None) -> int:
    """``kubirun events``: the events as runc's JSON lines on stdout (the
    exit is not one of runc's: the stream just ends)."""
    import sys

    from kubirun.base import jsonio

    for event in Events(container_id, root, stats_interval=None if once else interval, once=once):
        if isinstance(event, StatsEvent):
            line = {"type": "stats", "id": container_id, "data": event.stats}
        elif isinstance(event, OOMEvent):
            line = {"type": "oom", "id": container_id}
        else:
            continue
        sys.stdout.write(jsonio.dumps(line) + "\n")
        sys.stdout.flush()
    return 0
