"""Forwarding the signals the runtime receives to the container's PID 1.

Signals go through a pidfd, so a forwarded signal can never hit a recycled
PID.  Note the kernel's rule for a PID namespace's init: it only receives
the signals it has a handler for (plus SIGKILL and SIGSTOP), exactly as
under runc or ``docker run`` without ``--init``.  So a program that
ignores Ctrl-C would keep the terminal forever: a second SIGINT or SIGTERM
within ``ESCALATE_WITHIN`` seconds kills it (SIGKILL), and says so.
"""
from __future__ import annotations

import _signal as signal  # the public module costs ~3 ms of enum set-up per start
from kubirun import _native

FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
)
ESCALATING = (signal.SIGINT, signal.SIGTERM)
ESCALATE_WITHIN = 3.0  # seconds between two of them


class SignalForwarder:
    def __init__(self, pidfd: int, signals: tuple = FORWARDED) -> None:
        self.pidfd = pidfd
        self.signals = signals
        self._previous: dict[int, object] = {}
        self._last_stop: float | None = None  # when the last SIGINT/SIGTERM came

    def _forward(self, signum: int, _frame: object) -> None:
        if signum in ESCALATING:
            import time

            now = time.monotonic()
            if self._last_stop is not None and now - self._last_stop < ESCALATE_WITHIN:
                import os

                os.write(2, b"kubirun: asked twice to stop: killing the container (SIGKILL)\n")
                signum = signal.SIGKILL
            self._last_stop = now
        try:
            _native.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            pass  # already gone; the wait reports how it ended

    def __enter__(self) -> "SignalForwarder":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
