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
from kubirun._native import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
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
}


def fork_into_new_pid_namespace() -> int:
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
        _native.unshare(CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            _native.setns(own_pid_ns, CLONE_NEWPID)
            raise
        if pid:
            _native.setns(own_pid_ns, CLONE_NEWPID)
        return pid
    finally:
        os.close(own_pid_ns)
