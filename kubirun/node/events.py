"""A pod's events, as kubelet records them (``Pulled``, ``Created``,
``Started``, ``Killing``, ``Unhealthy``, ``BackOff``...): the same event
repeated is one entry with a count and a last time, as the API server
aggregates them; at most ``LIMIT`` are kept.  Listeners (the supervisor's
watch streams) are called with each one."""
from __future__ import annotations

from typing import Callable

from kubirun.node.clock import Clock

LIMIT = 200


class Events:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.items: list[dict] = []
        self.listeners: list[Callable[[dict], None]] = []

    def record(self, kind: str, reason: str, message: str, obj: str = "") -> dict:
        now = self.clock.wall()
        for event in reversed(self.items[-10:]):
            if (event["type"], event["reason"], event["message"], event["object"]) == \
                    (kind, reason, message, obj):
                event["count"] += 1
                event["lastTimestamp"] = now
                break
        else:
            event = {"type": kind, "reason": reason, "message": message, "object": obj,
                     "count": 1, "firstTimestamp": now, "lastTimestamp": now}
            self.items.append(event)
            del self.items[:-LIMIT]
        for listener in list(self.listeners):
            listener(event)
        return event

    def normal(self, reason: str, message: str, obj: str = "") -> dict:
        return self.record("Normal", reason, message, obj)

    def warning(self, reason: str, message: str, obj: str = "") -> dict:
        return self.record("Warning", reason, message, obj)

    def reasons(self) -> list[str]:
        return [event["reason"] for event in self.items]
