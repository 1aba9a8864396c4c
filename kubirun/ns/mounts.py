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
    MS_BIND,
    MS_RDONLY,
    MS_REMOUNT,
    MS_STRICTATIME,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    Kernel,
)

_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class Mount:
    """Mount ``source`` of type ``fstype`` on ``target`` (a path in the root),
    creating ``target`` if the image lacks it (a directory, or an empty file
    when ``target_is_file``: a bind mount of a file needs a file).

    ``remount_flags``: a bind mount ignores ro/nosuid/... on the first call;
    they take a second, ``MS_REMOUNT`` call.  ``propagation``: flags such as
    ``MS_PRIVATE`` set by a third call.  ``follow_symlinks``: symlinks in
    ``target`` are resolved *inside* the root (``RESOLVE_IN_ROOT``); without
    it any symlink is refused (for /proc, /sys and /dev, which must be real
    directories of the image).
    """

    def __init__(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
                 data: str | None = None, remount_flags: int = 0, propagation: int = 0,
                 target_is_file: bool = False, follow_symlinks: bool = False) -> None:
        self.source, self.target, self.fstype, self.flags, self.data = source, target, fstype, flags, data
        self.remount_flags = remount_flags
        self.propagation = propagation
        self.target_is_file = target_is_file
        self.follow_symlinks = follow_symlinks
        self.recursive_read_only = False  # "rro": every mount below read-only too

    def __repr__(self) -> str:
        return f"Mount({self.source!r}, {self.target!r}, {self.fstype!r}, {self.flags:#x}, {self.data!r})"


class Device:
    """A device node (char, block or fifo), made in the container's ``/dev``.
    ``replace``: what is there already goes (a spec device over a default
    one); else it stays (a default device in an image's own /dev, as runc
    leaves it: what it is, /dev/null especially, is checked where it
    matters, see ``rootfs.open_verified_dev_null``)."""

    def __init__(self, path: str, major: int, minor: int, mode: int = 0o666,
                 kind: int = stat.S_IFCHR, uid: int | None = None, gid: int | None = None,
                 replace: bool = True) -> None:
        self.path, self.major, self.minor, self.mode = path, major, minor, mode
        self.kind, self.uid, self.gid, self.replace = kind, uid, gid, replace

    def __repr__(self) -> str:
        return f"Device({self.path!r}, {self.major}, {self.minor}, {self.mode:#o})"


class Symlink:
    def __init__(self, path: str, target: str) -> None:
        self.path, self.target = path, target

    def __repr__(self) -> str:
        return f"Symlink({self.path!r} -> {self.target!r})"


Step = "Mount | Device | Symlink"

DEFAULT_DEVICES = (
    Device("/dev/null", 1, 3, replace=False),
    Device("/dev/zero", 1, 5, replace=False),
    Device("/dev/full", 1, 7, replace=False),
    Device("/dev/random", 1, 8, replace=False),
    Device("/dev/urandom", 1, 9, replace=False),
    Device("/dev/tty", 5, 0, replace=False),
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


def open_dir_in_root(kernel: Kernel, root_fd: int, path: str, create: bool = True,
                     follow_symlinks: bool = False) -> int:
    """Open directory ``path`` of the root as an O_PATH fd, making it (mode
    0755) if missing.  Any symlink on the way is an error, never followed,
    unless ``follow_symlinks``: then it is resolved inside the root."""
    return _open_in_root(kernel, root_fd, path, create, follow_symlinks, is_file=False)


def _open_in_root(kernel: Kernel, root_fd: int, path: str, create: bool,
                  follow_symlinks: bool, is_file: bool) -> int:
    rel = path.strip("/") or "."
    flags = os.O_PATH if is_file else os.O_PATH | os.O_DIRECTORY
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS if follow_symlinks else _RESOLVE
    try:
        return kernel.open_in_root(root_fd, rel, flags, resolve)
    except FileNotFoundError:
        if not create or rel == ".":
            raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            link = _first_symlink(kernel, root_fd, rel)
            beyond = "" if link == "/" + rel else f" (on the way to /{rel})"
            raise OSError(err.errno, f"{link} is a symlink in the image{beyond};"
                          " kubirun does not follow it") from err
        raise
    parent, name = _split(rel)
    parent_fd = _open_in_root(kernel, root_fd, parent, create, follow_symlinks, is_file=False)
    try:
        if is_file:
            kernel.close(kernel.openat(parent_fd, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY
                                       | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        else:
            kernel.mkdirat(parent_fd, name, 0o755)
    except FileExistsError:
        pass
    finally:
        kernel.close(parent_fd)
    return kernel.open_in_root(root_fd, rel, flags, resolve)


def _first_symlink(kernel: Kernel, root_fd: int, rel: str) -> str:
    """Which component of ``rel`` is the symlink that stopped the walk."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        try:
            kernel.close(kernel.open_in_root(root_fd, prefix, os.O_PATH, _RESOLVE))
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "/" + prefix
            break
    return "/" + rel


def apply(kernel: Kernel, root_fd: int, plan: list[Step]) -> None:
    """Carry out ``plan`` inside the root opened as ``root_fd``."""
    parents = _OpenParent(kernel, root_fd)
    try:
        for step in plan:
            _apply_step(kernel, root_fd, step, parents)
    finally:
        parents.close()


class _OpenParent:
    """The directory the last node (device or link) was made in, kept open
    for the next one: /dev's dozen nodes then cost one open of /dev, not
    one each (~40 us apiece, on every start).  A mount over that directory
    or above it would leave the fd naming what the mount covers: every
    mount closes it first."""

    def __init__(self, kernel: Kernel, root_fd: int) -> None:
        self.kernel, self.root_fd = kernel, root_fd
        self.path: str | None = None
        self.fd = -1

    def open(self, path: str) -> int:
        if path != self.path:
            self.close()
            self.fd = open_dir_in_root(self.kernel, self.root_fd, path)
            self.path = path
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            self.kernel.close(self.fd)
        self.path, self.fd = None, -1


def _apply_step(kernel: Kernel, root_fd: int, step: Step, parents: _OpenParent) -> None:
    if isinstance(step, Mount):
        parents.close()
        try:
            _mount(kernel, root_fd, step)
        except OSError as err:
            what = f"{step.fstype or 'bind'} {step.source or ''} on {step.target}".replace("  ", " ")
            raise OSError(err.errno, f"{err.strerror} (mounting {what})", err.filename,
                          None, err.filename2) from None
        return
    try:
        _make_node(kernel, step, parents)
    except OSError as err:
        raise OSError(err.errno, f"{err.strerror} (making {step.path})", err.filename,
                      None, err.filename2) from None


def _mount(kernel: Kernel, root_fd: int, step: Mount) -> None:
    if step.flags & MS_REMOUNT:  # only change the flags of what is mounted there
        _remount(kernel, root_fd, step, MS_REMOUNT | step.remount_flags)
        return
    fd = _open_in_root(kernel, root_fd, step.target, True, step.follow_symlinks,
                       step.target_is_file)
    try:
        kernel.mount(step.source, proc_fd_path(fd), step.fstype, step.flags, step.data)
    finally:
        kernel.close(fd)
    if step.remount_flags:
        # A bind mount takes ro, nosuid... only on a second, remount call.
        _remount(kernel, root_fd, step, MS_REMOUNT | MS_BIND | step.remount_flags)
    if step.propagation:
        _remount(kernel, root_fd, step, step.propagation)
    if step.recursive_read_only:
        fd = _open_in_root(kernel, root_fd, step.target, False, step.follow_symlinks,
                           step.target_is_file)
        try:
            kernel.make_tree_read_only(fd)
        finally:
            kernel.close(fd)


def _remount(kernel: Kernel, root_fd: int, step: Mount, flags: int) -> None:
    """A second call on the mount now at ``step.target``: opened again, so
    the fd names the new mount, not the directory it covers."""
    fd = _open_in_root(kernel, root_fd, step.target, False, step.follow_symlinks,
                       step.target_is_file)
    try:
        kernel.mount(None, proc_fd_path(fd), None, flags, None)
    finally:
        kernel.close(fd)


def _make_node(kernel: Kernel, step: Step, parents: _OpenParent) -> None:
    parent, name = _split(step.path)
    parent_fd = parents.open(parent)
    if isinstance(step, Device):
        try:
            kernel.mknodat(parent_fd, name, step.kind | step.mode,
                           os.makedev(step.major, step.minor))
        except FileExistsError:
            if not step.replace:
                return
            kernel.unlinkat(parent_fd, name)  # a spec device replaces a default one
            kernel.mknodat(parent_fd, name, step.kind | step.mode,
                           os.makedev(step.major, step.minor))
        kernel.chmodat(parent_fd, name, step.mode)  # mknod's mode is masked by umask
        if step.uid is not None or step.gid is not None:
            kernel.chownat(parent_fd, name, step.uid if step.uid is not None else -1,
                           step.gid if step.gid is not None else -1)
    elif isinstance(step, Symlink):
        try:
            kernel.symlinkat(step.target, parent_fd, name)
        except FileExistsError:
            pass  # the spec mounted or made it already

