"""The formatting side of ``--explain`` (``kubirun.base.explain`` is the
switch): flag words by name, paths as the reader should see them, the
caller's place in the code, the line itself (in colour on a terminal).
``kubirun.ns.narrating`` has the ``_native.Kernel`` that narrates what it
mounts.  Imported only when narration is on.
"""
from __future__ import annotations

import os
import sys


colour = False
rootfs = ""  # before pivot_root, paths under it are shown as ROOT/...


def set_colour(value: bool | None) -> None:
    global colour
    colour = os.isatty(2) if value is None else value


# Names for flag words, in the order the kernel headers list them.
_CLONE = (("CLONE_NEWTIME", 0x80), ("CLONE_PARENT", 0x8000), ("CLONE_NEWNS", 0x20000),
          ("CLONE_NEWCGROUP", 0x2000000), ("CLONE_NEWUTS", 0x4000000),
          ("CLONE_NEWIPC", 0x8000000), ("CLONE_NEWUSER", 0x10000000),
          ("CLONE_NEWPID", 0x20000000), ("CLONE_NEWNET", 0x40000000))
_MS = (("MS_RDONLY", 0x1), ("MS_NOSUID", 0x2), ("MS_NODEV", 0x4), ("MS_NOEXEC", 0x8),
       ("MS_REMOUNT", 0x20), ("MS_NOATIME", 0x400), ("MS_NODIRATIME", 0x800),
       ("MS_BIND", 0x1000), ("MS_MOVE", 0x2000), ("MS_REC", 0x4000), ("MS_UNBINDABLE", 0x20000),
       ("MS_PRIVATE", 0x40000), ("MS_SLAVE", 0x80000), ("MS_SHARED", 0x100000),
       ("MS_RELATIME", 0x200000), ("MS_STRICTATIME", 0x1000000))


def flags(value: int, names=_CLONE) -> str:
    parts = [name for name, bit in names if value & bit]
    rest = value & ~sum(bit for _, bit in names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


def mount_flags(value: int) -> str:
    return flags(value, _MS)


class _Word(int):
    """A flag word: ``{:clone}`` and ``{:ms}`` name its bits."""

    def __format__(self, spec: str) -> str:
        if spec == "clone":
            return flags(self)
        if spec == "ms":
            return mount_flags(self)
        return int.__format__(self, spec)


def format_call(call: str, args: tuple) -> str:
    # No import here: after pivot_root, Python's own files are out of reach.
    return call.format(*(_Word(a) if type(a) is int else a for a in args)) if args else call


def path(name: str) -> str:
    """A path as the reader should see it: ``/proc/self/fd/N`` (how mounts
    name a target opened safely) resolved, the root shown as ROOT."""
    if name.startswith("/proc/self/fd/"):
        try:
            name = os.readlink(name)
        except OSError:
            pass
    if rootfs and (name == rootfs or name.startswith(rootfs + "/")):
        return "ROOT" + name[len(rootfs):]
    return name


def where(depth: int) -> str:
    """The file and function ``depth`` frames up from ``explain.say``."""
    frame = sys._getframe(depth + 1)
    name = frame.f_code.co_filename
    name = name[name.rfind("kubirun/"):] if "kubirun/" in name else os.path.basename(name)
    return f"{name}: {frame.f_code.co_name}"


def emit(where: str, call: str, why: str) -> None:
    if colour:
        line = f"\033[2m{where:<44}\033[0m \033[1;36m{call}\033[0m  \033[33m# {why}\033[0m\n"
    else:
        line = f"{where:<44} {call}  # {why}\n"
    try:
        os.write(2, line.encode(errors="replace"))
    except OSError:
        pass  # nobody listens: the run goes on
