"""A container's directory in the store (``$KUBIRUN_STORE/containers/NAME``):
who owns it, and how it goes away.

    containers/NAME/owner     lockf'd by the ``kubirun run`` using it, for
                              as long as it runs; says which state root its
                              container lives in (JSON: root, pid)
    containers/NAME/image     the image it uses (see image.store)
    containers/NAME/rootfs    the overlay mount (or a copy), upper/, work/
    containers/NAME/network/  its /etc files (kubirun.ns.net)

It is born owned (made as ``NAME:new-PID``, its owner file locked, then
renamed to ``NAME``), so a directory whose owner lock is free belongs to no
live run.  It is then either a container's (``ROOT/NAME/state.json``
names it, as ``remove_on_delete``: that container's ``delete`` removes
it) or a leftover of a killed run, which ``reclaim`` removes.
"""
from __future__ import annotations

import errno
import fcntl
import os

from kubirun.base import jsonio
from kubirun.base.errors import KubirunError
from kubirun.base.killpoint import reached

OWNER = "owner"
CLAIMING = ":new-"  # NAME:new-PID: a directory being claimed (':' is in no name)


def claim(path: str, state_root: str) -> int:
    """Make ``path`` for this process's run; the fd holding its owner lock
    (closing it, or dying, releases the directory)."""
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    temporary = f"{path}{CLAIMING}{os.getpid()}"
    try:
        os.mkdir(temporary, 0o700)
    except FileExistsError:
        _remove_tree(temporary)  # a killed process's, whose PID we have now
        os.mkdir(temporary, 0o700)
    fd = os.open(os.path.join(temporary, OWNER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # per process: the init we fork does not inherit it
        os.write(fd, jsonio.dumps({"root": state_root, "pid": os.getpid()}).encode())
        reached("run.claiming")
        os.rename(temporary, path)  # never over a directory with anything in it
    except BaseException as err:
        os.close(fd)
        _remove_tree(temporary)
        if isinstance(err, OSError) and err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise KubirunError(f"container name {os.path.basename(path)!r} is already in use"
                               f" ({path})") from None
        raise
    return fd


def reclaim(path: str, state_root: str) -> bool:
    """Remove ``path`` if it is a leftover: no live run owns it and no
    container's state refers to it.  Whether it was removed."""
    fd = _lock_owner(path)
    if fd is None:
        return False
    try:
        if _referenced(path, _owner_root(fd) or state_root):
            return False
        remove(path)
        return True
    finally:
        os.close(fd)


def is_claim(name: str) -> bool:
    return CLAIMING in name


def reclaim_claim(path: str) -> bool:
    """A ``NAME:new-PID`` whose process died before renaming it."""
    fd = _lock_owner(path)
    if fd is None:
        return False
    try:
        remove(path)
        return True
    finally:
        os.close(fd)


def _lock_owner(path: str) -> int | None:
    """An fd holding the owner lock of ``path`` (its owner is dead, or
    there never was one), or None (a live run owns it, or no such
    directory)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    try:
        fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        # Made by an older kubirun, or a claim killed before its owner
        # file: a lock of our own, in the directory, keeps others away.
        if CLAIMING in os.path.basename(path):
            pid = path.rpartition("-")[2]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                return None
        try:
            fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _owner_root(fd: int) -> str | None:
    try:
        record = jsonio.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return None
    return record.get("root") if isinstance(record, dict) else None


def _referenced(path: str, state_root: str) -> bool:
    """Whether a container of ``state_root`` is the one using ``path``."""
    from kubirun.state import STATE_FILE

    try:
        state = jsonio.load_file(os.path.join(state_root, os.path.basename(path), STATE_FILE))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("remove_on_delete") == path


def remove(path: str) -> None:
    """Unmount the container's overlay root and remove its directory."""
    from kubirun.image.overlay import unmount

    unmount(path)  # an image's overlay root, before anything is removed
    try:
        os.unlink(os.path.join(path, OWNER))  # its lock goes with it: its run is ending
    except OSError:
        pass
    try:
        os.rmdir(path)  # a root used in place leaves the directory empty
    except FileNotFoundError:
        pass
    except OSError:
        _remove_tree(path)
        if os.geteuid() != 0 and os.path.lexists(path):
            # What the container's other users made (subordinate ids) is
            # removed from a user namespace mapping them.
            from kubirun.ns import idmap

            idmap.remove_tree(path)


def _remove_tree(path: str) -> None:
    import shutil  # rmtree never follows symlinks out of the tree

    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
