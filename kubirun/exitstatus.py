"""How a container's PID 1 ended, kept in its state directory.

Whoever reaps the init (the fork server of ``kubirun.api``) records it in
``ROOT/ID/exit.json``: only the parent of a process learns its exit status,
and an orchestrator that restarts (or a second ``Runtime``) must still be
able to read it.  ``delete`` removes it with the rest of the directory.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from kubirun.base import jsonio

from kubirun.state import EXIT_FILE  # noqa: E402 - beside the other names of the state directory


@dataclass(frozen=True)
class ExitStatus:
    """How a container's PID 1 (or an exec'd process) ended: ``code`` as a
    shell has it (128+N for a death by signal N)."""

    code: int
    signal: int | None = None
    oom_killed: bool = False

    @classmethod
    def from_record(cls, record: dict) -> "ExitStatus":
        return cls(int(record["code"]), record.get("signal"), bool(record.get("oom_killed")))


def from_wait_status(status: int) -> dict:
    """A ``waitpid`` status as {"code": 128+N for a signal N, "signal": N or None}."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return {"code": 128 + signum, "signal": signum, "oom_killed": False}
    return {"code": os.WEXITSTATUS(status), "signal": None, "oom_killed": False}


def record(root: str | None, container_id: str, result: dict) -> dict:
    """Write ``result`` (with whether the OOM killer did it) beside the
    container's state; returns it.  A container deleted meanwhile keeps
    nothing."""
    from kubirun.container import Container
    from kubirun.state import NotFound

    container = Container(container_id, root)
    result = dict(result, finished=time.time())
    try:
        state = container.load()
        if result["signal"] == 9 and state.get("cgroup"):
            result["oom_killed"] = container._cgroup(state).oom_kills() > 0
        jsonio.write_atomically(os.path.join(container.dir.path, EXIT_FILE), result)
    except (NotFound, OSError):
        pass
    return result


def read(root: str | None, container_id: str) -> dict | None:
    """The recorded exit status, or None (still running, or reaped by a
    process that keeps no record, such as a CLI-created container's)."""
    from kubirun.state import StateDir, default_root

    path = os.path.join(StateDir(root or default_root(), container_id).path, EXIT_FILE)
    try:
        return jsonio.load_file(path)
    except (OSError, ValueError):
        return None
