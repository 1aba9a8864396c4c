"""Entering the container's root filesystem: propagation, the root bind
mount, ``pivot_root`` with the old root detached (or ``MS_MOVE`` + chroot
for ``--no-pivot``), and what is done to the root once inside it: masked
and read-only paths, sysctls, a read-only root.

Run these in the container's own mount namespace only: together they are
what keeps the host's mount table untouched.
"""
from __future__ import annotations

import errno
import os

from kubirun._native import (
    MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_REMOUNT, MS_SLAVE, Kernel,
)
from kubirun.base.errors import ContainerStartError


def make_mounts_private(kernel: Kernel) -> None:
    """Stop mount events propagating between the container and the host, in
    both directions, before the container mounts anything."""
    kernel.mount(None, "/", None, MS_REC | MS_PRIVATE)


def set_propagation(kernel: Kernel, flags: int) -> None:
    """``linux.rootfsPropagation`` (default rprivate) for the whole tree."""
    if flags & MS_PRIVATE:
        make_mounts_private(kernel)
    else:
        # slave or shared: our mounts must still not reach the host, so the
        # tree becomes a slave first (runc does the same).
        kernel.mount(None, "/", None, MS_REC | MS_SLAVE)


def share_root_if_asked(kernel: Kernel, flags: int) -> None:
    """rootfsPropagation shared or unbindable, on the container's own "/":
    after pivot_root, which refuses a shared root (crun's order)."""
    if not flags & (MS_PRIVATE | MS_SLAVE):
        kernel.mount(None, "/", None, flags)


def bind_root(kernel: Kernel, rootfs: str) -> None:
    """Bind the root onto itself: ``pivot_root`` needs a mount point."""
    kernel.mount(rootfs, rootfs, None, MS_BIND | MS_REC)


def pivot_into(kernel: Kernel, rootfs: str) -> None:
    """Make ``rootfs`` the root and detach the old one.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one at
    "/", so no directory for the old root is needed inside the image (the
    trick runc and crun use); unmounting "." then removes the old root.
    """
    old_root = kernel.open("/", os.O_DIRECTORY | os.O_RDONLY)
    new_root = kernel.open(rootfs, os.O_DIRECTORY | os.O_RDONLY)
    try:
        kernel.fchdir(new_root)
        kernel.pivot_root(".", ".")
        kernel.fchdir(old_root)
        # Slave first, so the unmount cannot propagate anywhere.
        kernel.mount(None, ".", None, MS_SLAVE | MS_REC)
        kernel.umount2(".", MNT_DETACH)
    finally:
        kernel.close(old_root)
        kernel.close(new_root)
    kernel.chdir("/")


def move_into(kernel: Kernel, rootfs: str) -> None:
    """``--no-pivot``: move the root's mount onto "/" and chroot into it (for
    roots on a ramdisk, where pivot_root is impossible).  The host's mounts
    stay in the mount namespace, below the chroot: weaker, as runc warns.
    So first, as runc does, the host's full procfs and sysfs mounts go:
    left there, they would let the container mount a procfs of its own
    (the kernel refuses that only while none is fully visible), one
    without the masked and read-only paths."""
    # Read through one fd, opened now: a procfs covered below would take
    # /proc/self/mountinfo with it.
    mountinfo = kernel.open("/proc/self/mountinfo", os.O_RDONLY)
    try:
        for mountpoint in _revealing_mounts(kernel, rootfs, mountinfo):
            try:
                kernel.mount(None, mountpoint, None, MS_SLAVE | MS_REC)  # nothing propagates
            except FileNotFoundError:
                continue
            try:
                kernel.umount2(mountpoint, MNT_DETACH)
            except OSError as err:
                # EINVAL: no longer a mount point (its parent went), or
                # locked (a user namespace's copy of the host's mounts)
                if err.errno not in (errno.EINVAL, errno.EPERM):
                    raise
                if mountpoint in _revealing_mounts(kernel, rootfs, mountinfo):  # still there: cover it
                    kernel.mount("tmpfs", mountpoint, "tmpfs", 0)
    finally:
        kernel.close(mountinfo)
    kernel.chdir(rootfs)
    kernel.mount(rootfs, "/", None, MS_MOVE)
    kernel.chroot(".")
    kernel.chdir("/")


def _revealing_mounts(kernel: Kernel, rootfs: str, mountinfo: int) -> list[str]:
    """Mount points of whole procfs and sysfs trees outside ``rootfs``,
    parents first (the order of ``mountinfo``, an open /proc/self/mountinfo)."""
    from kubirun.base.mountinfo import parse_line

    rootfs = os.path.realpath(rootfs)  # as mountinfo shows it
    found = []
    text = kernel.read_from_start(mountinfo).decode(errors="surrogateescape")
    for line in text.splitlines(True):
        mount = parse_line(line)
        if mount is None or mount.fstype not in ("proc", "sysfs") or mount.root != "/":
            continue
        mountpoint = mount.mountpoint
        if mountpoint == rootfs or mountpoint.startswith(rootfs.rstrip("/") + "/"):
            continue
        found.append(mountpoint)
    return found


def chroot_into(kernel: Kernel, rootfs: str) -> None:
    """No mount namespace of its own (``ns.hostmount``): a chroot, the host's
    mounts unchanged.  As weak as runc's: CAP_SYS_CHROOT gets out."""
    kernel.chdir(rootfs)
    kernel.chroot(".")
    kernel.chdir("/")


def open_verified_dev_null() -> int:
    """/dev/null as an O_PATH fd, checked to be the character device 1:3:
    a container that replaced its /dev/null (by a symlink to a procfs file,
    say) must not get that file bound over a masked path (CVE-2025-31133)."""
    import stat

    fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise ContainerStartError("/dev/null in the container is not the null device (1:3):"
                                  " refusing to mask paths with it")
    return fd


def mask_paths(kernel: Kernel, paths: list[str]) -> None:
    """Hide each path: a directory under an empty read-only tmpfs, a file
    under /dev/null (verified, bound from its fd).  Paths the container
    lacks are skipped."""
    if not paths:
        return
    null = open_verified_dev_null()
    try:
        _mask(kernel, paths, f"/proc/self/fd/{null}")
    finally:
        os.close(null)


def _mask(kernel: Kernel, paths: list[str], null: str) -> None:
    for path in paths:
        try:
            fd = kernel.open(path, os.O_PATH | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            target = f"/proc/self/fd/{fd}"
            if os.path.isdir(target):
                kernel.mount("tmpfs", target, "tmpfs", MS_RDONLY, "size=0,mode=755")
            else:
                kernel.mount(null, target, None, MS_BIND)
        finally:
            kernel.close(fd)


def make_paths_readonly(kernel: Kernel, paths: list[str]) -> None:
    """Bind each path onto itself and remount it read-only."""
    for path in paths:
        try:
            kernel.mount(path, path, None, MS_BIND | MS_REC)
        except (FileNotFoundError, NotADirectoryError):
            continue
        kernel.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC
                     | _locked_flags(path))


def remount_root_readonly(kernel: Kernel) -> None:
    kernel.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | _locked_flags("/"))


def _locked_flags(path: str) -> int:
    """The nosuid/nodev/noexec a bind remount must repeat or be refused."""
    flags = 0
    st = os.statvfs(path)
    for bit, flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
        if st.f_flag & bit:
            flags |= flag
    return flags


def write_sysctls(sysctl: dict[str, str]) -> None:
    """``linux.sysctl``, written through a verified procfs handle."""
    if not sysctl:
        return
    from kubirun.ns.procfs import ProcFS

    with ProcFS("/proc") as proc:
        for key, value in sysctl.items():
            try:
                proc.write("sys/" + key.replace(".", "/"), value)
            except OSError as err:
                raise ContainerStartError(f"cannot set sysctl {key}={value}: {err.strerror}") from None
