"""A pod's events, as kubelet records them (``Pulled``, ``Created``,
``Started``, ``Killing``, ``Unhealthy``, ``BackOff``...): the same event
repeated is one entry with a count and a last time, as the API server
aggregates them; at most ``LIMIT`` are kept.  Listeners (the supervisor's
watch streams) are called with each one.  ``Watch``: the node's event
stream as an iterator and an async iterator."""
from __future__ import annotations

import threading
from collections import deque
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


class Watch:
    """``Node.watch()``: the node's events as they happen, as an async
    iterator (``async for``, in the node's event loop) or a plain iterator
    (``for``, in another thread of the caller's, blocking it, while the
    loop runs elsewhere).  It ends when the node closes or detaches, or
    with ``close()`` (also as a context manager).  The node appends from
    its loop's thread; a thread iterating waits on a condition, the loop
    is never blocked and the node itself starts no thread."""

    def __init__(self, unregister: Callable[["Watch"], None]) -> None:
        self._unregister = unregister
        self._items: deque = deque()
        self._condition = threading.Condition()
        self._waiter = None  # an asyncio future, while ``async for`` waits

    def put(self, item: dict | None) -> None:
        """From the node's loop: an event, or None for the end."""
        with self._condition:
            self._items.append(item)
            self._condition.notify_all()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> dict:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            from kubirun.api import KubirunError

            raise KubirunError("Node.watch(): iterate with `async for` in an event loop"
                               " (`for` blocks its thread until the next event)")
        with self._condition:
            while not self._items:
                self._condition.wait()
            item = self._items.popleft()
        if item is None:
            self.close()
            raise StopIteration
        return item

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> dict:
        import asyncio

        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if item is None:
            self.close()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """No more events: the node forgets this watch."""
        self._unregister(self)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
