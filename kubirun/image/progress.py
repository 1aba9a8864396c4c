"""A progress bar for unpacking, on stderr when it is a terminal; nothing
otherwise (logs and pipes stay clean)."""
from __future__ import annotations

import os
import sys
import time


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """``start_layer(i, n, size)`` then ``advance(bytes)`` as compressed
    bytes are read; ``done()`` clears the line."""

    def __init__(self, label: str, total: int, layers: int, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.total = max(total, 1)
        self.layers = layers
        self.layer = 0
        self.done_bytes = 0
        self._last = 0.0
        self.width = 30

    def start_layer(self, index: int) -> None:
        self.layer = index
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done_bytes += n
        self._draw()

    def skip(self, n: int) -> None:
        """A layer already in the store: its bytes count as done."""
        self.done_bytes += n
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        fraction = min(self.done_bytes / self.total, 1.0)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"\r{self.label}: layer {self.layer}/{self.layers} [{bar}] "
                f"{_human(self.done_bytes)}/{_human(self.total)}")
        self.stream.write(text + "\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def progress_for(label: str, total: int, layers: int) -> Progress | None:
    """A bar on a terminal; None (quiet) when stderr is not one, or
    KUBIRUN_PROGRESS=0."""
    if os.environ.get("KUBIRUN_PROGRESS") == "0":
        return None
    try:
        if not os.isatty(2):
            return None
    except OSError:
        return None
    return Progress(label, total, layers)
