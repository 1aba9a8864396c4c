"""Reading /proc/PID/stat: a process's state and start time, which with its
PID names one process for ever (the PID alone may be recycled)."""
from __future__ import annotations


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot), or None when
    the process is gone or a zombie: a PID plus its start time names one
    process for ever, whatever the kernel later recycles the PID for."""
    fields = proc_stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def proc_stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/PID/stat`` from its state on (field 3; the command name,
    which may hold spaces and parentheses, left out), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()
