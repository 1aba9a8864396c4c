"""``kubirun events``: a container's events as JSON lines, as runc prints
them: ``{"type": "stats", "id": ..., "data": {...}}`` every interval (or
once with ``--stats``), ``{"type": "oom", "id": ...}`` when the kernel's
OOM killer strikes in the container.  Ends when the container stops."""
from __future__ import annotations

import sys
import time

from kubirun import jsonio


def stream(container_id: str, once: bool, interval: float) -> int:
    from kubirun.container import Container

    container = Container(container_id)
    if once:
        _emit({"type": "stats", "id": container_id, "data": container.stats()})
        return 0
    seen_ooms = container.oom_kills()
    next_stats = time.monotonic()
    # OOM kills are polled often (cheap: one counter) and stats every interval.
    poll = min(interval, 0.2)
    while container.status() != "stopped":
        ooms = container.oom_kills()
        for _ in range(ooms - seen_ooms):
            _emit({"type": "oom", "id": container_id})
        seen_ooms = ooms
        if time.monotonic() >= next_stats:
            _emit({"type": "stats", "id": container_id, "data": container.stats()})
            next_stats += interval
        time.sleep(poll)
    ooms = container.oom_kills() if container.dir.exists() else seen_ooms
    for _ in range(ooms - seen_ooms):
        _emit({"type": "oom", "id": container_id})
    return 0


def _emit(event: dict) -> None:
    sys.stdout.write(jsonio.dumps(event) + "\n")
    sys.stdout.flush()
