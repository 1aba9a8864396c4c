"""Where containers live between commands: one directory per container
under the state root, holding ``state.json`` and the exec fifo.

    /run/kubirun/ID/state.json   written atomically (temporary file + rename)
    /run/kubirun/ID/exec.fifo    exists from create until start
    /run/kubirun/ID/seccomp.sock likewise, for a seccomp filter with a
                                 listener (kubirun.seccomp_notify)
    /run/kubirun/ID/lock         lockf'd by every command working on ID

A directory is born with its lock held (made as ``ID:new-PID``, locked,
renamed to ``ID``) and dies the same way (renamed to ``ID:gone-PID`` under
the lock, then removed): whoever takes the lock of ``ID`` knows that no
live command is half-way through it, and a directory whose lock is free
but which has no (readable) ``state.json`` was left by a killed runtime
(``kubirun.reclaim``).  ``:`` is in no container id, so these names never
collide with one.

The status is never trusted from the file alone: it is derived from the
kernel each time (is the init alive, and still the same process; is its
cgroup frozen; is the fifo still there), so a container whose process died
while no kubirun was running reads ``stopped``.
"""
from __future__ import annotations

import errno
import fcntl
import os

from kubirun.base import jsonio
from kubirun.base.paths import default_root, use_root  # noqa: F401 (kubirun.state.use_root)
from kubirun.base.proc import proc_stat_fields, process_start_time  # noqa: F401
from kubirun.base.errors import KubirunError
from kubirun.base.ids import validate_id
from kubirun.base.killpoint import reached

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
SECCOMP_SOCKET = "seccomp.sock"  # kubirun.seccomp_notify.SOCKET
EXIT_FILE = "exit.json"  # kubirun.exitstatus: how PID 1 ended (the library's fork server)
LOCK_FILE = "lock"
CLAIMING = ":new-"  # ROOT/ID:new-PID, a directory being claimed
REMOVING = ":gone-"  # ROOT/ID:gone-PID, one being removed


class NotFound(KubirunError):
    """No container with that id."""


class Corrupt(KubirunError):
    """The container's state file cannot be read as one."""


def has_state(root: str, container_id: str) -> bool:
    """Whether container ``container_id`` of state root ``root`` has a state
    file (the network's lease pool asks, kubirun.ns.net.ipam)."""
    return os.path.exists(os.path.join(root, container_id, STATE_FILE))


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
        """Claim the id: fails if a container already has it.  Returns with
        the directory's lock held (``unlock`` releases it)."""
        try:
            os.makedirs(self.root, 0o700, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise KubirunError(f"state root {self.root} is not a directory (from --root or"
                               " $KUBIRUN_ROOT)") from None
        claim = f"{self.path}{CLAIMING}{os.getpid()}"
        try:
            os.mkdir(claim, 0o711)
        except FileExistsError:
            _remove_tree(claim)  # a killed process's, whose PID we have now
            os.mkdir(claim, 0o711)
        fd = os.open(os.path.join(claim, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        reached("create.claiming")
        try:
            # Atomic, and never over a directory with anything in it (a
            # container's always holds its lock file).
            os.rename(claim, self.path)
        except OSError as err:
            os.close(fd)
            _remove_tree(claim)
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise KubirunError(f"container with id {self.id!r} already exists") from None
            raise
        self._lock_fd = fd

    def lock(self, wait: bool = True) -> bool:
        """Serialize commands on this id (blocks while another holds it;
        with ``wait=False`` returns False instead)."""
        path = os.path.join(self.path, LOCK_FILE)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"container {self.id!r} does not exist") from None
            # A POSIX (lockf) lock belongs to this process only: the init we fork
            # while holding it must not inherit it, as it would a flock.
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise
            # The holder we waited for may have removed the directory (or
            # a new container taken the id since): ours is the lock file
            # still at that path.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                self._lock_fd = fd
                return True
            os.close(fd)
            if current is None and not os.path.isdir(self.path):
                raise NotFound(f"container {self.id!r} does not exist")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "StateDir":
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def read(self) -> dict:
        try:
            state = jsonio.load_file(os.path.join(self.path, STATE_FILE))
        except FileNotFoundError:
            raise NotFound(f"container {self.id!r} does not exist") from None
        except (jsonio.JSONError, UnicodeDecodeError) as err:
            raise Corrupt(f"container {self.id!r}: corrupt {STATE_FILE}: {err}") from None
        if not isinstance(state, dict) or not all(isinstance(state.get(key), str)
                                                  for key in ("ociVersion", "id", "bundle")):
            raise Corrupt(f"container {self.id!r}: corrupt {STATE_FILE}: not a container's state"
                          " (delete --force removes it)")
        return state

    def write(self, state: dict) -> None:
        from kubirun._native import replace_file

        jsonio.write_atomically(os.path.join(self.path, STATE_FILE), state, replace=replace_file)

    def remove_seccomp_socket(self) -> None:
        try:
            os.unlink(os.path.join(self.path, SECCOMP_SOCKET))
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        """Remove the directory and what kubirun put in it (the lock is
        taken if not held): renamed out of the way first, so the id is
        free at once and nothing removes a directory it no longer owns."""
        held = self._lock_fd is not None
        if not held:
            try:
                self.lock()
            except NotFound:
                return
        try:
            for name in os.listdir(self.path):
                if name not in (STATE_FILE, EXEC_FIFO, SECCOMP_SOCKET, LOCK_FILE) and \
                        os.path.ismount(os.path.join(self.path, name)):
                    # a container's root (ns.hostmount): removing the tree
                    # would remove the files of the root itself
                    raise KubirunError(f"{self.path}/{name} is still a mount point: not removing it")
            gone = f"{self.path}{REMOVING}{os.getpid()}"
            try:
                os.rename(self.path, gone)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                _remove_tree(gone)  # a killed process's, whose PID we have now
                os.rename(self.path, gone)
            reached("delete.renamed")
            _remove_tree(gone)
        finally:
            if not held:
                self.unlock()


def _remove_tree(path: str) -> None:
    """A state directory's files (it has no subdirectories but a root
    ``hostmount`` bound there, which ``remove`` refuses before)."""
    for name in (STATE_FILE, EXEC_FIFO, SECCOMP_SOCKET, EXIT_FILE, LOCK_FILE):
        try:
            os.unlink(os.path.join(path, name))
        except (FileNotFoundError, NotADirectoryError):
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def is_stale(path: str) -> bool:
    """A directory of the state root being claimed or removed
    (``ID:new-PID``, ``ID:gone-PID``) whose process is dead: its lock is
    free, or, made before its lock file, its PID is gone."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        pid = path.rpartition("-")[2]
        return not (pid.isdigit() and os.path.exists(f"/proc/{pid}"))
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale(path: str) -> None:
    _remove_tree(path)


def derive_status(directory: StateDir, state: dict) -> str:
    """The container's status from the kernel, not from the file (see the
    module's docstring): creating, created, running, paused or stopped."""
    pid = state.get("pid") or 0
    if state.get("status") == "creating":
        creator = state.get("creator") or [0, 0]
        alive = creator[0] and process_start_time(creator[0]) == creator[1]
        return "creating" if alive else "stopped"
    if not pid or process_start_time(pid) != state.get("pid_start"):
        return "stopped"
    if state.get("cgroup") and not _surely_thawed(state) and _is_frozen(state):
        return "paused"
    if os.path.exists(directory.fifo):
        return "created"
    return "running"


def _surely_thawed(state: dict) -> bool:
    """One read instead of loading the cgroup driver (which parses
    mountinfo): what `state` and `kill` of a running container need."""
    path = state.get("freezer_file")
    if not path:
        return False
    try:
        with open(path, "rb") as f:
            return f.read().strip() in (b"THAWED", b"0")
    except OSError:
        return False


def _is_frozen(state: dict) -> bool:
    from kubirun.cgroups import open_cgroup

    return open_cgroup(state["cgroup"]["path"], state["cgroup"]).is_frozen()


def oci_state(directory: StateDir, state: dict) -> dict:
    """The OCI state (runtime-spec runtime.md#state) of a container."""
    status = derive_status(directory, state)
    result = {
        "ociVersion": state["ociVersion"],
        "id": directory.id,
        "status": status,
        "pid": state.get("pid", 0) if status != "stopped" else 0,
        "bundle": state["bundle"],
        "rootfs": state.get("rootfs", ""),
        "created": state.get("created", ""),
        "owner": "",
    }
    if state.get("annotations"):
        result["annotations"] = state["annotations"]
    return result


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        from kubirun.base.errors import KubirunError

        raise KubirunError(f"state root {root} is not a directory (from --root or"
                           " $KUBIRUN_ROOT)") from None
    return sorted(n for n in names
                  if ":" not in n and os.path.exists(os.path.join(root, n, STATE_FILE)))


def all_entries(root: str) -> list[str]:
    """Every name under the state root: containers, partial ones, claims
    and removals (``ID:...``), network pools (``network:BRIDGE``)."""
    try:
        return sorted(os.listdir(root))
    except FileNotFoundError:
        return []
