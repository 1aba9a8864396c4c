"""``kubirun events``: a container's events as JSON lines, as runc prints
them: ``{"type": "stats", "id": ..., "data": {...}}`` every interval (or
once with ``--stats``), ``{"type": "oom", "id": ...}`` when the kernel's
OOM killer strikes in the container.  Ends when the container stops or is
deleted.

OOM kills are not polled where the kernel can tell us: on cgroup v1 an
eventfd registered on ``memory.oom_control`` wakes us the moment it
happens, before the killed container can exit and be deleted (polling
lost that race to a `run` that deletes within milliseconds).  Elsewhere
the ``oom_kill`` counter is read often.
"""
from __future__ import annotations

import os
import select
import sys
import time

from kubirun.base import jsonio
from kubirun.state import NotFound


def stream(container_id: str, once: bool, interval: float) -> int:
    from kubirun.container import Container

    container = Container(container_id)
    if once:
        _emit({"type": "stats", "id": container_id, "data": container.stats()})
        return 0
    state = container.load()
    cgroup = container._cgroup(state)
    notifier = _oom_eventfd(cgroup.memory_dir())
    seen_ooms = cgroup.oom_kills()
    next_stats = time.monotonic()
    poll = select.poll()
    if notifier is not None:
        poll.register(notifier[0], select.POLLIN)
    try:
        while True:
            try:
                if container.status() == "stopped":
                    break
                seen_ooms = _report_ooms(container_id, cgroup, seen_ooms)
                if time.monotonic() >= next_stats:
                    _emit({"type": "stats", "id": container_id, "data": cgroup.stats()})
                    next_stats += interval
            except (NotFound, OSError):
                return 0  # deleted while we watched: the stream ends
            wait = max(0.0, min(next_stats - time.monotonic(), 0.2))
            for fd, _ in poll.poll(wait * 1000):
                os.read(fd, 8)  # an OOM (or the cgroup's removal): counted above next turn
                if os.path.isdir(os.path.dirname(notifier[1])):
                    _emit({"type": "oom", "id": container_id})
                    seen_ooms += 1
        try:
            _report_ooms(container_id, cgroup, seen_ooms)
        except OSError:
            pass
        return 0
    finally:
        if notifier is not None:
            os.close(notifier[0])
            os.close(notifier[2])


def _report_ooms(container_id: str, cgroup, seen: int) -> int:
    ooms = cgroup.oom_kills()
    for _ in range(ooms - seen):
        _emit({"type": "oom", "id": container_id})
    return max(ooms, seen)


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


def _emit(event: dict) -> None:
    sys.stdout.write(jsonio.dumps(event) + "\n")
    sys.stdout.flush()
