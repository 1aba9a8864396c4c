"""Which namespaces a container gets, and how its first process is born into
a new PID namespace.

``unshare(CLONE_NEWPID)`` does not move the caller: it decides the PID
namespace of the caller's *next child*.  So the runtime unshares, forks once
(the child is PID 1 of the new namespace), and then joins its own PID
namespace again so that later children (hooks, helpers) are born beside it.
One fork, no intermediate process, no second interpreter.
"""
from __future__ import annotations

import os

from kubirun import _native
from kubirun.base import explain
from kubirun._native import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    PR_SET_DUMPABLE,
)

# What `kubirun run` isolates.  The PID namespace is made by the parent
# (see fork_into_new_pid_namespace); the child unshares the rest itself.
RUN_NAMESPACES = (
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP
)

NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID,
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "network": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
    "time": CLONE_NEWTIME,
}
# /proc/PID/ns/<name> for each type
PROC_NS_NAMES = {"pid": "pid", "mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net",
                 "cgroup": "cgroup", "user": "user", "time": "time"}
# setns order for `exec`: the user namespace first (it gives the
# capabilities the other joins need there), the mount namespace last, since
# joining it changes our root and the other /proc/PID/ns paths were opened
# before.
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "network", "time", "pid", "mount")


def open_namespace(path: str, kind: str) -> int:
    """Open a namespace file (``/proc/PID/ns/net``, ``/run/netns/x``...) and
    check that it is a namespace of the expected kind."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise OSError(err.errno, f"cannot open {kind} namespace: {err.strerror}", path) from None
    return fd


def join(kernel, namespaces: list[tuple[int, str]]) -> None:
    """``setns`` into each (CLONE_NEW* flag, path), through ``kernel`` (a
    ``_native.Kernel``); the kernel checks that the file is a namespace of
    that type."""
    for flag, path in namespaces:
        try:
            fd = kernel.open(path, os.O_RDONLY)
        except OSError as err:
            raise OSError(err.errno, f"cannot open {flag:#x} namespace: {err.strerror}",
                          path) from None
        explain.say("setns(open({!r}), {:clone})", "join a namespace that exists already", path, flag)
        try:
            kernel.setns(fd, flag)
        except OSError as err:
            raise OSError(err.errno, f"setns: {err.strerror}", path) from None
        finally:
            kernel.close(fd)


def fork_init(pid_namespace: str | None, new: bool, new_user: bool = False,
              cgroup_fd: int | None = None) -> int:
    """Fork the container's init into its PID namespace: a new one
    (``new``), an existing one (``pid_namespace`` is its path), or ours.
    With ``new_user``, the child is born in a new user namespace too, which
    then owns its new PID namespace (one clone with both flags).  With
    ``cgroup_fd``, it is born in that cgroup (see ``fork``)."""
    if new_user:
        _native.prctl(PR_SET_DUMPABLE, 0)
        flags = CLONE_NEWUSER | (CLONE_NEWPID if new else 0)
        if pid_namespace is None or new:
            return fork(flags, cgroup_fd)
    elif new:
        return fork_into_new_pid_namespace(cgroup_fd)
    _native.prctl(PR_SET_DUMPABLE, 0)
    if pid_namespace is None:
        return fork(0, cgroup_fd)
    target = open_namespace(pid_namespace, "pid")
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _native.setns(target, CLONE_NEWPID)
        try:
            pid = fork(CLONE_NEWUSER if new_user else 0, cgroup_fd)
        except BaseException:
            _native.setns(own, CLONE_NEWPID)
            raise
        if pid:
            _native.setns(own, CLONE_NEWPID)  # the child stays; we go back
        return pid
    finally:
        os.close(target)
        os.close(own)


def fork(flags: int = 0, cgroup_fd: int | None = None) -> int:
    """``os.fork``, with ``CLONE_NEW*`` flags, and with ``cgroup_fd`` (an
    open cgroup2 directory) into that cgroup from birth: moving a process
    there later, through cgroup.procs, waits for an RCU grace period under
    the kernel's cgroup lock (7-15 ms measured on a 6.18 kernel), being
    born there costs nothing.  OSError ENOSYS, E2BIG or EINVAL: a kernel
    without clone3's CLONE_INTO_CGROUP (before 5.7)."""
    explain.say("{}({:clone}{})", "the container's first process (PID 1 of a PID namespace"
                " unshared before)", "clone3" if flags or cgroup_fd is not None else "fork", flags,
                ", CLONE_INTO_CGROUP" if cgroup_fd is not None else "")
    if cgroup_fd is not None:
        return _native.fork_with_flags(flags, cgroup_fd)
    return _native.fork_with_flags(flags) if flags else _native.fork()


def fork_into_new_pid_namespace(cgroup_fd: int | None = None) -> int:
    """Fork a child that is PID 1 of a fresh PID namespace; return its PID
    (as seen by the caller) in the parent and 0 in the child.

    The caller becomes non-dumpable first and the child inherits that: no
    process of the container can ever open ``/proc/<pid>/exe`` of the
    interpreter that sets it up (the CVE-2019-5736 class; here the binary at
    risk is Python).  ``execve`` of the container's program makes the
    container's process dumpable again, so ``/proc/1/exe`` works inside.
    """
    _native.prctl(PR_SET_DUMPABLE, 0)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        explain.say("unshare(CLONE_NEWPID)", "our next child is PID 1 of a new PID namespace")
        _native.unshare(CLONE_NEWPID)
        try:
            pid = fork(0, cgroup_fd)
        except BaseException:
            _native.setns(own_pid_ns, CLONE_NEWPID)
            raise
        if pid:
            _native.setns(own_pid_ns, CLONE_NEWPID)
        return pid
    finally:
        os.close(own_pid_ns)


def write_id_maps(pid: int, uid_mappings: list[tuple[int, int, int]],
                  gid_mappings: list[tuple[int, int, int]]) -> None:
    """The new user namespace's uid and gid maps, written by the runtime:
    root in the parent namespace may map any ids; a user its own id alone,
    or ranges of /etc/subuid and /etc/subgid through newuidmap/newgidmap
    (see kubirun.ns.idmap)."""
    from kubirun.ns import idmap

    idmap.write(pid, uid_mappings, gid_mappings)


def host_id(mappings: list[tuple[int, int, int]], inside: int) -> int | None:
    """The host id that id ``inside`` of the namespace maps to."""
    for start, outside, size in mappings:
        if start <= inside < start + size:
            return outside + inside - start
    return None


class TimeNamespaceForChildren:
    """A time namespace for the init we are about to fork (like a PID
    namespace, it is one's children that enter it): a new one with
    ``offsets`` (seconds and nanoseconds for "monotonic" and "boottime",
    written before any process is in it), or the one at ``path``.  On exit
    our children's time namespace is ours again."""

    def __init__(self, offsets: dict | None, path: str | None) -> None:
        self.offsets, self.path = offsets, path
        self._own: int | None = None

    def __enter__(self) -> "TimeNamespaceForChildren":
        self._parent = os.getpid()
        self._own = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
        if self.path is not None:
            fd = open_namespace(self.path, "time")
            try:
                _native.setns(fd, CLONE_NEWTIME)
            finally:
                os.close(fd)
            return self
        _native.unshare(CLONE_NEWTIME)
        lines = "".join(f"{clock} {value['secs']} {value['nanosecs']}\n"
                        for clock, value in (self.offsets or {}).items())
        if lines:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(lines)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own is None or os.getpid() != self._parent:
            return  # the forked init leaves the block too: it stays where it is
        _native.setns(self._own, CLONE_NEWTIME)
        os.close(self._own)
