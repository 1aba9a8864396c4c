"""The mount plan of a container's root: which filesystems and device nodes a
container gets, as data, and the executor that applies that data.

The plan is pure (``standard_plan``) so it can be read and unit-tested; the
executor (``apply``) resolves every path inside the root with
``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`` and mounts onto the
resulting file descriptor through ``/proc/self/fd/N``, so a symlink in the
image can never redirect a mount or a device node to the host
(CVE-2021-30465 class).  The layout follows runc's defaults.
"""
from __future__ import annotations

import errno
import os
import stat

from kubirun._native import (
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_STRICTATIME,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    Kernel,
)

_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class Mount:
    """Mount ``source`` of type ``fstype`` on ``target`` (a path in the root),
    creating ``target`` as a directory if the image lacks it."""

    def __init__(self, source: str, target: str, fstype: str, flags: int = 0,
                 data: str | None = None) -> None:
        self.source, self.target, self.fstype, self.flags, self.data = source, target, fstype, flags, data

    def __repr__(self) -> str:
        return f"Mount({self.source!r}, {self.target!r}, {self.fstype!r}, {self.flags:#x}, {self.data!r})"


class Device:
    """A character device node, made in the container's own ``/dev`` tmpfs."""

    def __init__(self, path: str, major: int, minor: int, mode: int = 0o666) -> None:
        self.path, self.major, self.minor, self.mode = path, major, minor, mode

    def __repr__(self) -> str:
        return f"Device({self.path!r}, {self.major}, {self.minor}, {self.mode:#o})"


class Symlink:
    def __init__(self, path: str, target: str) -> None:
        self.path, self.target = path, target

    def __repr__(self) -> str:
        return f"Symlink({self.path!r} -> {self.target!r})"


Step = "Mount | Device | Symlink"

DEFAULT_DEVICES = (
    Device("/dev/null", 1, 3),
    Device("/dev/zero", 1, 5),
    Device("/dev/full", 1, 7),
    Device("/dev/random", 1, 8),
    Device("/dev/urandom", 1, 9),
    Device("/dev/tty", 5, 0),
)


def standard_plan() -> list[Step]:
    """/proc, a read-only /sys, and a /dev tmpfs populated like runc's."""
    return [
        Mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        Mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY),
        Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
        *DEFAULT_DEVICES,
        Mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        Symlink("/dev/ptmx", "pts/ptmx"),
        Mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=1777,size=65536k"),
        Mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        Symlink("/dev/fd", "/proc/self/fd"),
        Symlink("/dev/stdin", "/proc/self/fd/0"),
        Symlink("/dev/stdout", "/proc/self/fd/1"),
        Symlink("/dev/stderr", "/proc/self/fd/2"),
        Symlink("/dev/core", "/proc/kcore"),
    ]


def proc_fd_path(fd: int) -> str:
    """The path that names an open file descriptor, for calls that take paths."""
    return f"/proc/self/fd/{fd}"


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.strip("/").rpartition("/")
    return parent or ".", name


def open_dir_in_root(kernel: Kernel, root_fd: int, path: str, create: bool = True) -> int:
    """Open directory ``path`` of the root as an O_PATH fd, making it (mode
    0755) if missing.  Any symlink on the way is an error, never followed."""
    rel = path.strip("/") or "."
    flags = os.O_PATH | os.O_DIRECTORY
    try:
        return kernel.open_in_root(root_fd, rel, flags, _RESOLVE)
    except FileNotFoundError:
        if not create or rel == ".":
            raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(err.errno, "is a symlink or goes through one in the image;"
                          " kubirun does not follow it", "/" + rel) from err
        raise
    parent, name = _split(rel)
    parent_fd = open_dir_in_root(kernel, root_fd, parent, create)
    try:
        kernel.mkdirat(parent_fd, name, 0o755)
    except FileExistsError:
        pass
    finally:
        kernel.close(parent_fd)
    return kernel.open_in_root(root_fd, rel, flags, _RESOLVE)


def apply(kernel: Kernel, root_fd: int, plan: list[Step]) -> None:
    """Carry out ``plan`` inside the root opened as ``root_fd``."""
    for step in plan:
        _apply_step(kernel, root_fd, step)


def _apply_step(kernel: Kernel, root_fd: int, step: Step) -> None:
    if isinstance(step, Mount):
        fd = open_dir_in_root(kernel, root_fd, step.target)
        try:
            kernel.mount(step.source, proc_fd_path(fd), step.fstype, step.flags, step.data)
        finally:
            kernel.close(fd)
        return
    parent, name = _split(step.path)
    parent_fd = open_dir_in_root(kernel, root_fd, parent)
    try:
        if isinstance(step, Device):
            kernel.mknodat(parent_fd, name, stat.S_IFCHR | step.mode,
                           os.makedev(step.major, step.minor))
            kernel.chmodat(parent_fd, name, step.mode)  # mknod's mode is masked by umask
        elif isinstance(step, Symlink):
            kernel.symlinkat(step.target, parent_fd, name)
    finally:
        kernel.close(parent_fd)
