"""The formatting side of ``--explain`` (``kubirun.explain`` is the
switch): flag words by name, paths as the reader should see them, the
caller's place in the code, the line itself (in colour on a terminal), and
a ``_native.Kernel`` that narrates what it mounts.  Imported only when
narration is on.
"""
from __future__ import annotations

import os
import sys

from kubirun import explain
from kubirun._native import Kernel

colour = False
rootfs = ""  # before pivot_root, paths under it are shown as ROOT/...


def set_colour(value: bool | None) -> None:
    global colour
    colour = os.isatty(2) if value is None else value


# Names for flag words, in the order the kernel headers list them.
_CLONE = (("CLONE_NEWTIME", 0x80), ("CLONE_NEWNS", 0x20000), ("CLONE_NEWCGROUP", 0x2000000),
          ("CLONE_NEWUTS", 0x4000000), ("CLONE_NEWIPC", 0x8000000), ("CLONE_NEWUSER", 0x10000000),
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


class NarratingKernel(Kernel):
    """A ``_native.Kernel`` whose mounts, ``pivot_root`` and device
    nodes are narrated as they are made (the plan's steps call the
    kernel only through this object)."""

    def mount(self, source, target, fstype=None, flags=0, data=None) -> None:
        args = [repr(path(source)) if source else "NULL", repr(path(target)),
                repr(fstype) if fstype else "NULL", mount_flags(flags)]
        if data:
            args.append(repr(data))
        explain.say(f"mount({', '.join(args)})", _mount_why(flags, fstype), depth=2)
        super().mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        explain.say(f"umount2({path(target)!r}, {'MNT_DETACH' if flags & 2 else flags})",
                    "detach what must leave the container's view", depth=2)
        super().umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        explain.say(f"pivot_root({new_root!r}, {put_old!r})  [cwd {path(os.getcwd())}]",
                    "the container's root becomes /; the host's old root is stacked on it,"
                    " then detached", depth=2)
        super().pivot_root(new_root, put_old)

    def mknodat(self, dirfd: int, name: str, mode: int, device: int) -> None:
        explain.say(f"mknodat({path(f'/proc/self/fd/{dirfd}')!r}, {name!r}, {oct(mode)},"
                    f" {os.major(device)}:{os.minor(device)})", "a device node of the spec", depth=2)
        super().mknodat(dirfd, name, mode, device)

    def symlinkat(self, target: str, dirfd: int, name: str) -> None:
        explain.say(f"symlinkat({target!r}, {path(f'/proc/self/fd/{dirfd}')!r}, {name!r})",
                    "a standard /dev link", depth=2)
        super().symlinkat(target, dirfd, name)


def _mount_why(flags: int, fstype: str | None) -> str:
    if flags & 0x20:
        return "remount: change the flags of a mount already there"
    if flags & (0x40000 | 0x80000 | 0x100000) and not flags & 0x1000:
        return "mount propagation: nothing mounted here reaches the host"
    if flags & 0x1000:
        return "bind: the same files seen at another place"
    return f"a new {fstype} file system" if fstype else "a new mount"
