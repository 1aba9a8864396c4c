"""Where kubirun's own messages go: ``--log FILE`` and ``--log-format
text|json`` as runc has them.  Engines read the last error from the log
(containerd's shim always passes ``--log B/log.json --log-format json``),
so each message is one line, one JSON object with ``level``, ``msg`` and
``time`` in json format.  Without ``--log``, messages go to stderr.
"""
from __future__ import annotations

import os
import sys
import time

_path: str | None = None
_json = False
_debug = False


def configure(path: str | None, format: str | None, debug: bool) -> None:
    global _path, _json, _debug
    _path = path or None
    _json = format == "json"
    _debug = debug


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


class captured:
    """Warnings and debug messages go to ``sink`` (a list) instead, while
    in this context: a library caller gets them from the call, not on the
    process's stderr (``kubirun.api`` logs them with its own logger)."""

    def __init__(self, sink: list) -> None:
        self.sink = sink

    def __enter__(self) -> "captured":
        global _sink
        self.previous, _sink = _sink, self.sink
        return self

    def __exit__(self, *exc: object) -> None:
        global _sink
        _sink = self.previous


_sink: list | None = None


def one_line(message: str) -> str:
    """``message`` with its line breaks and other unprintable characters
    (a lone surrogate...) escaped: a message quoting bad input stays one
    line, which is all an engine reads."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _emit(level: str, message: str, to_stderr: bool) -> None:
    message = one_line(message)
    if _sink is not None and level != "error":
        _sink.append(f"{level}: {message}")
        return
    if _path is not None:
        if _json:
            from kubirun.base import jsonio

            line = jsonio.dumps({"level": level, "msg": message, "time": _timestamp()})
        else:
            line = _logfmt(level, message)
        try:
            fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode(errors="replace"))
            finally:
                os.close(fd)
        except OSError:
            to_stderr = True
    if to_stderr or _path is None:
        if level == "debug":  # runc's --debug lines, which scripts and engines grep
            print(_logfmt(level, message), file=sys.stderr)
        else:
            print(f"kubirun: {message}" if level == "error" else f"kubirun: {level}: {message}",
                  file=sys.stderr)


def _logfmt(level: str, message: str) -> str:
    """One line as logrus writes it (runc's text log): time="..." level=L msg="..."."""
    quoted = message.replace("\\", "\\\\").replace('"', '\\"')
    return f'time="{_timestamp()}" level={level} msg="{quoted}"'


def error(message: str) -> None:
    """A fatal error: to the log and to stderr (engines read either)."""
    _emit("error", message, to_stderr=True)


def warning(message: str) -> None:
    _emit("warning", message, to_stderr=False)


def debug(message: str) -> None:
    if _debug:
        _emit("debug", message, to_stderr=False)
