"""Container logs in the CRI format, as kubelet's runtimes write them:

    2026-12-07T17:00:00.000000000Z stdout F a line
    2026-12-07T17:00:00.000000000Z stderr P the start of a long line

one file per instance of a container (``DIR/N.log``, N its restart count;
the previous instance's is what ``logs --previous`` shows, older ones go),
rotated at ``MAX_SIZE`` (the current file becomes ``N.log.1``).  A
``Pump`` reads a container's stdout or stderr in the event loop.

The container writes into a FIFO (``Fifo``), not a pipe: it holds the FIFO
open read-write itself, so its writes never fail with EPIPE (nor kill it
with SIGPIPE) while no supervisor reads, e.g. after ``kill -9`` of
``kubirun node serve``; they wait in the FIFO until a restarted supervisor
opens it again by its path and reads on.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import BinaryIO

MAX_SIZE = 10 * 1024 * 1024  # kubelet's containerLogMaxSize
MAX_LINE = 16 * 1024  # a longer line is cut into partial (P) lines, as CRI runtimes do


def cri_timestamp(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + \
        f".{ns % 10**9:09d}Z"


class Fifo:
    """The FIFO a container's stdout or stderr goes to: ``writer`` is the
    fd to give the container (read-write: see the module's note), the
    supervisor's own to close once given; ``reader`` opens our end."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        self.writer: int | None = None
        if create:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)
            os.mkfifo(path, 0o600)
            self.writer = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def reader(self) -> BinaryIO:
        return open(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb",
                    buffering=0)

    def close_writer(self) -> None:
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None

    def remove(self) -> None:
        self.close_writer()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class LogFile:
    """The log of one container instance (both streams)."""

    def __init__(self, directory: str, instance: int, max_size: int = MAX_SIZE,
                 listeners: list | None = None) -> None:
        """``listeners``: called with (instance, CRI line) for each line
        written (``logs -f`` followers: no file read again, no line missed
        across rotations)."""
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self.path = os.path.join(directory, f"{instance}.log")
        self.instance = instance
        self.max_size = max_size
        self.listeners = listeners if listeners is not None else []
        self._file = open(self.path, "ab", buffering=0)
        for old in os.listdir(directory):  # keep this instance's and the previous one's
            number = old.split(".", 1)[0]
            if number.isdigit() and int(number) < instance - 1:
                os.unlink(os.path.join(directory, old))

    def write(self, stream: str, line: bytes, full: bool) -> None:
        record = f"{cri_timestamp()} {stream} {'F' if full else 'P'} ".encode() + line
        self._file.write(record + b"\n")
        if self.listeners:
            text = record.decode("utf-8", errors="replace")
            for listener in list(self.listeners):
                listener(self.instance, text)
        if self._file.tell() >= self.max_size:
            self._file.close()
            os.replace(self.path, self.path + ".1")
            self._file = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        self._file.close()


class Pump:
    """Copies a pipe (a container's stdout or stderr) into a ``LogFile``,
    line by line, until end of file; ``done`` is set then."""

    def __init__(self, pipe: BinaryIO, stream: str, log: LogFile) -> None:
        self.pipe, self.stream, self.log = pipe, stream, log
        self.fd = pipe.fileno()
        self._pending = b""
        self.done = asyncio.get_running_loop().create_future()
        os.set_blocking(self.fd, False)
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            self._write(line, True)
        while len(self._pending) >= MAX_LINE:
            self._write(self._pending[:MAX_LINE], False)
            self._pending = self._pending[MAX_LINE:]

    def _write(self, line: bytes, full: bool) -> None:
        try:
            while len(line) > MAX_LINE:
                self.log.write(self.stream, line[:MAX_LINE], False)
                line = line[MAX_LINE:]
            self.log.write(self.stream, line, full)
        except OSError:
            pass  # a full disk loses log lines, not the container

    def detach(self) -> None:
        """Stop reading, leaving what is unread in the FIFO (for the next
        supervisor); the log file is closed."""
        if not self.done.done():
            asyncio.get_running_loop().remove_reader(self.fd)
            self.pipe.close()
            self.done.set_result(None)
        self.log.close()

    def close(self) -> None:
        if self.done.done():
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        if self._pending:
            self._write(self._pending, True)  # the last line, ended by the end of the stream
            self._pending = b""
        self.pipe.close()
        self.done.set_result(None)


def read(directory: str, instance: int, tail: int | None = None) -> list[str]:
    """The lines of instance ``instance``'s log (rotated part first), as
    CRI lines; ``tail``: only the last N."""
    lines: list[str] = []
    base = os.path.join(directory, f"{instance}.log")
    for path in (base + ".1", base):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                lines += file.read().splitlines()
        except FileNotFoundError:
            pass
    return lines[-tail:] if tail is not None and tail >= 0 else lines


def message(cri_line: str) -> tuple[str, bool]:
    """A CRI line's text, and whether it ends a line (F)."""
    parts = cri_line.split(" ", 3)
    if len(parts) < 3:
        return cri_line, True
    return (parts[3] if len(parts) == 4 else ""), parts[2] == "F"
