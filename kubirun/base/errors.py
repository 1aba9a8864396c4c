"""The errors kubirun reports to its user: one line, a context, an exit code."""
from __future__ import annotations


class KubirunError(Exception):
    """An error the CLI prints as one line before exiting with ``exit_code``."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


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
