"""The errors kubirun reports to its user: one line, a context, an exit code.

Every error kubirun raises on purpose is a ``KubirunError`` (the cgroup,
id-mapping, tar, overlay and BPF errors of the rooms below included), so
one ``except KubirunError`` in the CLI makes any of them one line.  What
is known of the failure rides along for a program to inspect: ``errno``,
``syscall``, ``path`` and ``container_id`` (None when not known).
"""
from __future__ import annotations


class KubirunError(Exception):
    """An error the CLI prints as one line before exiting with ``exit_code``."""

    exit_code = 1
    errno: int | None = None
    syscall: str | None = None
    path: str | None = None
    container_id: str | None = None

    def __init__(self, message: str, exit_code: int | None = None, *, errno: int | None = None,
                 syscall: str | None = None, path: str | None = None,
                 container_id: str | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.errno = errno
        self.syscall = syscall
        self.path = path
        self.container_id = container_id

    @classmethod
    def from_oserror(cls, err: OSError, syscall: str | None = None,
                     container_id: str | None = None, context: str = "") -> "KubirunError":
        """``err`` as one of ours: "CONTEXT: SYSCALL: reason: path", with its
        errno and path kept."""
        text = describe(err)
        if syscall:
            text = f"{syscall}: {text}"
        if context:
            text = f"{context}: {text}"
        return cls(text, errno=err.errno, syscall=syscall,
                   path=err.filename if isinstance(err.filename, str) else None,
                   container_id=container_id)


class CgroupError(KubirunError):
    """A cgroup operation failed. The message names the cgroup path, the
    file and the errno text; the same are in ``path``, ``file`` and
    ``errno`` (None when not applicable).  Defined here, not in
    kubirun.cgroups, so that every module of that package may raise it
    without importing the package's ``__init__``."""

    def __init__(self, message: str, *, path: str | None = None, file: str | None = None,
                 errno: int | None = None) -> None:
        super().__init__(message, errno=errno, path=path)
        self.file = file


class ImageError(KubirunError):
    """The image cannot be read or is refused (corrupt, hostile, missing)."""


class UnsafeArchiveError(ImageError):
    """A tar entry would land outside the root it is extracted into."""


class SpecError(KubirunError):
    """config.json is malformed or asks for something impossible."""


class ContainerStartError(KubirunError):
    """The container's init failed before ``execve`` of the user's program."""


class ExecError(ContainerStartError):
    """The user's program could not be executed (126 or 127, as shells do)."""


def describe(err: BaseException) -> str:
    """One line for any error: an OSError as "syscall: reason: path"."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
        if err.filename is not None:
            text += f": {err.filename}"
        if err.filename2 is not None:
            text += f" -> {err.filename2}"
        return text
    if isinstance(err, KubirunError):
        return str(err)
    return f"{type(err).__name__}: {err}"
