"""Where containers live between commands: one directory per container
under the state root, holding ``state.json`` and the exec fifo.

    /run/kubirun/ID/state.json   written atomically (temporary file + rename)
    /run/kubirun/ID/exec.fifo    exists from create until start
    /run/kubirun/ID/seccomp.sock likewise, for a seccomp filter with a
                                 listener (kubirun.seccomp_notify)
    /run/kubirun/ID/lock         flock'd by every command working on ID

The status is never trusted from the file alone: it is derived from the
kernel each time (is the init alive, and still the same process; is its
cgroup frozen; is the fifo still there), so a container whose process died
while no kubirun was running reads ``stopped``.
"""
from __future__ import annotations

import fcntl
import os

from kubirun import jsonio
from kubirun.errors import KubirunError
from kubirun.ids import validate_id

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
SECCOMP_SOCKET = "seccomp.sock"  # kubirun.seccomp_notify.SOCKET
LOCK_FILE = "lock"


class NotFound(KubirunError):
    """No container with that id."""


_root_override: str | None = None


def use_root(path: str) -> None:
    """``--root``: every container of this command lives under ``path``."""
    global _root_override
    _root_override = os.path.abspath(path)


def default_root() -> str:
    """``--root``, else ``$KUBIRUN_ROOT``, else /run/kubirun for root and
    ``$XDG_RUNTIME_DIR/kubirun`` for other users."""
    if _root_override:
        return _root_override
    if os.environ.get("KUBIRUN_ROOT"):
        return os.environ["KUBIRUN_ROOT"]
    if os.geteuid() == 0:
        return "/run/kubirun"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "kubirun")
    return f"/tmp/kubirun-{os.geteuid()}"


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot), or None when
    the process is gone or a zombie: a PID plus its start time names one
    process for ever, whatever the kernel later recycles the PID for."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class StateDir:
    """The directory of one container id under the state root."""

    def __init__(self, root: str, container_id: str) -> None:
        self.id = validate_id(container_id)
        self.root = root
        self.path = os.path.join(root, self.id)
        self._lock_fd: int | None = None

    @property
    def fifo(self) -> str:
        return os.path.join(self.path, EXEC_FIFO)

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.path, STATE_FILE))

    def make(self) -> None:
        """Claim the id: fails if a container already has it."""
        try:
            os.makedirs(self.root, 0o700, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise KubirunError(f"state root {self.root} is not a directory (from --root or"
                               " $KUBIRUN_ROOT)") from None
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise KubirunError(f"container with id {self.id!r} already exists") from None

    def lock(self) -> "StateDir":
        """Serialize commands on this id (blocks while another holds it)."""
        try:
            fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFound(f"container {self.id!r} does not exist") from None
        # A POSIX (lockf) lock belongs to this process only: the init we fork
        # while holding it must not inherit it, as it would a flock.
        fcntl.lockf(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "StateDir":
        return self.lock()

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def read(self) -> dict:
        try:
            return jsonio.load_file(os.path.join(self.path, STATE_FILE))
        except FileNotFoundError:
            raise NotFound(f"container {self.id!r} does not exist") from None
        except (jsonio.JSONError, UnicodeDecodeError) as err:
            raise KubirunError(f"container {self.id!r}: corrupt {STATE_FILE}: {err}") from None

    def write(self, state: dict) -> None:
        jsonio.write_atomically(os.path.join(self.path, STATE_FILE), state)

    def remove_seccomp_socket(self) -> None:
        try:
            os.unlink(os.path.join(self.path, SECCOMP_SOCKET))
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        """Remove the directory and what kubirun put in it."""
        for name in (STATE_FILE, EXEC_FIFO, SECCOMP_SOCKET, LOCK_FILE):
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            import shutil

            for name in os.listdir(self.path):
                if os.path.ismount(os.path.join(self.path, name)):
                    # a container's root (ns.hostmount): removing the tree
                    # would remove the files of the root itself
                    raise KubirunError(f"{self.path}/{name} is still a mount point: not removing it")
            shutil.rmtree(self.path, ignore_errors=True)


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        from kubirun.errors import KubirunError

        raise KubirunError(f"state root {root} is not a directory (from --root or"
                           " $KUBIRUN_ROOT)") from None
    return sorted(n for n in names if os.path.exists(os.path.join(root, n, STATE_FILE)))
