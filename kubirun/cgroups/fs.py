"""File operations on cgroupfs, each failure turned into a CgroupError that
names the cgroup, the file and the errno.

This module owns: reading and writing control files, making a cgroup path
level by level, listing pids below a directory, and removing directories
with the retries a draining cgroup needs. It knows no file format beyond
cgroup.procs.
"""
from __future__ import annotations

import errno as _errno
import os
from time import monotonic, sleep

from kubirun.base import explain
from kubirun.base.errors import CgroupError

# remove_parent's answer for "holds another cgroup or a process: leave it".
IN_USE = OSError(_errno.EBUSY, "in use by another cgroup")


def describe(err: OSError) -> str:
    """'Device or resource busy (EBUSY)'."""
    if err.errno is None:
        return str(err)
    return f"{os.strerror(err.errno)} ({_errno.errorcode.get(err.errno, err.errno)})"


def fail(cgpath: str, action: str, filepath: str, err: OSError) -> CgroupError:
    return CgroupError(f"cgroup {cgpath}: {action} {filepath}: {describe(err)}",
                       path=cgpath, file=filepath, errno=err.errno)


def read(cgpath: str, dirpath: str, name: str) -> str:
    path = os.path.join(dirpath, name)
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise fail(cgpath, "cannot read", path, e) from None


def read_optional(cgpath: str, dirpath: str, name: str) -> str | None:
    """The file's text, or None when it does not exist (an optional knob, or
    a controller not enabled here)."""
    path = os.path.join(dirpath, name)
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise fail(cgpath, "cannot read", path, e) from None


def write(cgpath: str, dirpath: str, name: str, value: str) -> None:
    """One write(2) of ``value``: cgroupfs parses each write as a whole.

    No O_CREAT: a missing file means the kernel lacks the knob, which must
    be an error, not a new regular file (and cgroupfs refuses those anyway).
    """
    path = os.path.join(dirpath, name)
    explain.say("write({!r}, {!r})", "a limit (or setting) of the cgroup: the kernel enforces it",
                path, value, depth=2)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise fail(cgpath, f"cannot write {value!r} to", path, e) from None


def write_or_defer(cgpath: str, dirpath: str, name: str, value: str, may_defer: bool) -> bool:
    """``write``, except that when the kernel refuses the value (EINVAL)
    and ``may_defer``, it returns True: the caller writes it again once the
    limit it depends on is in place (a CFS period or burst, an RT period,
    before their new quota or runtime; runc's order)."""
    try:
        write(cgpath, dirpath, name, value)
    except CgroupError as e:
        if e.errno != _errno.EINVAL or not may_defer:
            raise
        return True
    return False


def exists(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))


def make_path(cgpath: str, root: str, made: list[str], setup) -> None:
    """mkdir root+cgpath level by level, appending each directory we make
    to ``made`` and calling setup(root, dir, new) for every level.

    A parent can vanish between two levels (another container's destroy
    removing a shared, now empty parent), even between our mkdir that found
    it and ``setup`` reading its files: then we start again from the top.
    """
    parts = cgpath.strip("/").split("/")
    for _ in range(10):
        d = root
        for part in parts:
            d = d + "/" + part
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                new = False
            except FileNotFoundError as e:
                if not os.path.isdir(root):
                    raise fail(cgpath, "cannot create", d, e) from None
                break  # a parent vanished: again from the top
            except OSError as e:
                raise fail(cgpath, "cannot create", d, e) from None
            else:
                new = True
                made.append(d)
                explain.say("mkdir({!r})", "a new cgroup: a directory of the cgroup file system", d)
            try:
                setup(root, d, new)
            except CgroupError as e:
                if e.errno != _errno.ENOENT or os.path.isdir(d):
                    raise
                break  # it vanished: again from the top
        else:
            return
        sleep(0.001)
    raise CgroupError(f"cgroup {cgpath}: cannot create it under {root}: its parents keep vanishing",
                      path=cgpath, file=root)


def remove_dirs(dirs: list[str]) -> None:
    """Best effort rmdir, deepest first (rolling back a failed create)."""
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _rmdir_retry(path: str, deadline: float) -> OSError | None:
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            # EBUSY: tasks still exiting (a zombie's cgroup is released a
            # little after its parent reaps it, and an OOM kill takes time).
            if e.errno not in (_errno.EBUSY, _errno.EINTR) or monotonic() >= deadline:
                return e
        sleep(delay)
        delay = min(delay * 2, 0.05)


def remove_tree(path: str, deadline: float) -> OSError | None:
    """Remove a cgroup and every cgroup below it (the container's own),
    deepest first, retrying EBUSY until ``deadline``. The first error, or
    None."""
    # Most often it has no cgroups below: one rmdir that never waits, no
    # walk of its files (a v1 memory cgroup has some forty).
    first = remove_parent(path)
    if first is None or (first is not IN_USE and first.errno != _errno.EINTR):
        return first
    try:
        below = [os.path.join(base, d) for base, dirs, _ in os.walk(path, topdown=False) for d in dirs]
    except OSError:
        below = []
    for d in below:
        err = _rmdir_retry(d, deadline)
        if err is not None:
            return err
    return _rmdir_retry(path, deadline)


def remove_parent(path: str) -> OSError | None:
    """Remove a parent we created, unless it now holds another cgroup or
    processes (a shared /kubirun): then IN_USE. Never waits."""
    try:
        os.rmdir(path)
        return None
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (_errno.EBUSY, _errno.ENOTEMPTY):
            return IN_USE
        return e


def read_procs(cgpath: str, dirpath: str) -> list[int] | None:
    """The pids in one cgroup directory (not below), or None when it does
    not exist. A threaded v2 cgroup refuses cgroup.procs (EOPNOTSUPP): its
    cgroup.threads has thread ids, which are the best we can do there."""
    for name in ("cgroup.procs", "cgroup.threads"):
        path = os.path.join(dirpath, name)
        try:
            with open(path) as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == _errno.EOPNOTSUPP and name == "cgroup.procs":
                continue
            raise fail(cgpath, "cannot read", path, e) from None
    return None


def pids_below(cgpath: str, dirpath: str) -> list[int]:
    found: set[int] = set()
    for base, _dirs, _files in os.walk(dirpath):
        pids = read_procs(cgpath, base)
        if pids:
            found.update(pids)
    return sorted(found)
