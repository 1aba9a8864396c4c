"""The runtime's own children: waiting for one, and the pid file runc
writes for one.  Below container, creation and exec_into, which all use it
(and so do not import each other for it)."""
from __future__ import annotations

import os


def reap(pid: int) -> int:
    """Wait for our child ``pid``; its exit status, 128+N for death by signal N."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 0
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def kill_and_reap(pid: int) -> None:
    """SIGKILL our child ``pid`` and reap it (its PID is its own until
    then): even a stopped child cannot hold us up."""
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def write_pid_file(path: str, pid: int) -> None:
    """Bare digits, no newline (as runc); written atomically."""
    path = os.path.abspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)
