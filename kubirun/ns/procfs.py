"""Writing to procfs only through a handle that is verified to be procfs.

An image or a racing container process can put something else where
/proc/sys/... or /proc/PID/... should be: a symlink, a bind mount of a
regular file, a FUSE filesystem (the CVE-2019-16884, CVE-2023-27561 and
CVE-2025-52881 class: the runtime's write lands somewhere it should not).
So every write starts from /proc opened without following symlinks and
checked to be procfs (statfs magic), walks beneath it without symlinks or
magic links (``openat2``), and checks the file it reached is procfs too.
"""
from __future__ import annotations

import os

from kubirun import _native
from kubirun._native import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS
from kubirun.base.errors import ContainerStartError

PROC_SUPER_MAGIC = 0x9FA0


class ProcFS:
    """A verified handle on the procfs at ``path`` (the container's /proc
    once inside it)."""

    def __init__(self, path: str = "/proc") -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._verify(self.fd, path)
        except BaseException:
            os.close(self.fd)
            raise

    @staticmethod
    def _verify(fd: int, what: str) -> None:
        if _native.fstatfs_type(fd) != PROC_SUPER_MAGIC:
            raise ContainerStartError(f"{what} is not procfs: kubirun refuses to write through it")

    def open(self, relative: str, flags: int) -> int:
        """Open ``relative`` beneath this procfs, with no symlink on the way
        (use a PID, not "self"), and check what was opened is procfs."""
        try:
            fd = _native.openat2(self.fd, relative, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0,
                                 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        except OSError as err:
            raise OSError(err.errno, f"{err.strerror}", f"{self.path}/{relative}") from None
        try:
            self._verify(fd, f"{self.path}/{relative}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write(self, relative: str, data: str) -> None:
        fd = self.open(relative, os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "ProcFS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
