"""A container without a mount namespace: its root bound privately at a
mount point of its own in the state directory, every mount it makes below
that, and the whole tree detached at ``delete``.

The OCI spec lets a config leave out the mount namespace: the container
then shares the runtime's (runtime-tools' ``linux_ns_itype`` checks it).
runc and crun then mount the container's /proc, /dev, /sys... right in the
bundle's root and leave them there after ``delete``.  kubirun binds the
root onto ``STATE_DIR/rootfs`` instead, makes that tree private (nothing
mounted under it propagates anywhere), lets the init mount under it and
``chroot`` into it (``pivot_root`` would move the runtime's own root), and
at delete detaches whatever is mounted there: one mount point per
container, so two containers may share one root, and a runtime killed
mid-create leaves a place that ``delete`` knows to clean.
"""
from __future__ import annotations

import os

from kubirun._native import MNT_DETACH, MS_BIND, MS_PRIVATE, MS_REC, Kernel

MOUNT_POINT = "rootfs"  # in the container's state directory


def record(rootfs: str, state_dir: str) -> dict:
    """Make the mount point; what the state keeps (before the init binds)."""
    path = os.path.join(state_dir, MOUNT_POINT)
    os.mkdir(path, 0o700)
    return {"source": os.path.realpath(rootfs), "path": path}


def bind_root(kernel: Kernel, where: dict) -> None:
    """Bind the root there and make the copy private: the container's
    mounts stay below it and reach no other mount namespace."""
    kernel.mount(where["source"], where["path"], None, MS_BIND | MS_REC)
    kernel.mount(None, where["path"], None, MS_PRIVATE | MS_REC)


def _mounts_at(path: str) -> int:
    """How many mounts are stacked at ``path`` (mountinfo escapes some
    characters as octal: compare escaped)."""
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(char, code)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == path)


def detach(where: dict) -> None:
    """Detach the bind, and with it every mount the container made under
    it, then remove the mount point; nothing when it is gone already."""
    path = where["path"]
    kernel = Kernel()
    for _ in range(_mounts_at(path)):
        try:
            kernel.umount2(path, MNT_DETACH)
        except OSError as err:
            raise OSError(err.errno, f"cannot detach the container's root: {err.strerror}", path) from None
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
