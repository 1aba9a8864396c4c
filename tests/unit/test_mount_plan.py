"""The rootfs plan checked against a recording fake of the kernel: no root
and no namespaces needed, every call visible."""
from __future__ import annotations

import errno
import os

import pytest

from kubirun._native import MS_BIND, MS_MOVE, MS_PRIVATE, MS_RDONLY, MS_REC, MNT_DETACH, MS_SLAVE, Kernel
from kubirun.ns import mounts, rootfs
from tests.unit.recording_kernel import RecordingKernel


def _mounted(kernel: RecordingKernel) -> dict[str, tuple]:
    return {c[2]: c for c in kernel.calls if c[0] == "mount"}


def test_standard_plan_mounts_proc_sys_dev_like_runc():
    kernel = RecordingKernel()
    mounts.apply(kernel, 3, mounts.standard_plan())
    mounted = _mounted(kernel)
    assert mounted["fd:proc"][3] == "proc"
    assert mounted["fd:sys"][3] == "sysfs" and mounted["fd:sys"][4] & MS_RDONLY
    assert mounted["fd:dev"][3] == "tmpfs"
    assert "newinstance" in mounted["fd:dev/pts"][5]
    assert mounted["fd:dev/shm"][3] == "tmpfs"
    assert mounted["fd:dev/mqueue"][3] == "mqueue"


def test_every_mount_goes_through_an_fd_resolved_in_the_root():
    kernel = RecordingKernel()
    mounts.apply(kernel, 3, mounts.standard_plan())
    targets = [c[2] for c in kernel.calls if c[0] == "mount"]
    assert targets and all(t.startswith("fd:") for t in targets)
    assert not kernel.fds, "file descriptors were leaked"


def test_devices_have_verified_numbers_and_modes():
    kernel = RecordingKernel()
    mounts.apply(kernel, 3, mounts.standard_plan())
    nodes = {c[1]: (c[3], c[4]) for c in kernel.calls if c[0] == "mknod"}
    assert nodes == {"dev/null": (1, 3), "dev/zero": (1, 5), "dev/full": (1, 7),
                     "dev/random": (1, 8), "dev/urandom": (1, 9), "dev/tty": (5, 0)}
    chmods = {c[1]: c[2] for c in kernel.calls if c[0] == "chmod"}
    assert all(chmods[path] == 0o666 for path in nodes)


def test_dev_links_point_into_proc_and_pts():
    kernel = RecordingKernel()
    mounts.apply(kernel, 3, mounts.standard_plan())
    links = {c[1]: c[2] for c in kernel.calls if c[0] == "symlink"}
    assert links["dev/ptmx"] == "pts/ptmx"
    assert links["dev/fd"] == "/proc/self/fd"
    assert [links[f"dev/std{n}"] for n in ("in", "out", "err")] == [
        "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]


def test_missing_mount_points_are_created():
    kernel = RecordingKernel(missing={"proc", "sys"})
    mounts.apply(kernel, 3, mounts.standard_plan())
    made = [c[1] for c in kernel.calls if c[0] == "mkdir"]
    assert "proc" in made and "sys" in made


def test_a_symlinked_proc_in_the_image_is_refused():
    kernel = RecordingKernel(symlinks={"proc"})
    with pytest.raises(OSError) as info:
        mounts.apply(kernel, 3, mounts.standard_plan())
    assert info.value.errno == errno.ELOOP
    assert "/proc" in str(info.value) and "symlink" in str(info.value)
    assert not any(c[0] == "mount" for c in kernel.calls)


def test_root_is_made_private_before_the_bind():
    kernel = RecordingKernel()
    rootfs.make_mounts_private(kernel)
    rootfs.bind_root(kernel, "/var/lib/kubirun/containers/x/rootfs")
    assert kernel.calls[0] == ("mount", None, "/", None, MS_REC | MS_PRIVATE, None)
    assert kernel.calls[1][1:5] == ("/var/lib/kubirun/containers/x/rootfs",) * 2 + (None, MS_BIND | MS_REC)


def test_pivot_root_detaches_the_old_root_through_a_slave_mount():
    kernel = RecordingKernel()
    rootfs.pivot_into(kernel, "/r")
    names = [c[0] for c in kernel.calls]
    assert names == ["open", "open", "fchdir", "pivot_root", "fchdir", "mount", "umount2", "chdir"]
    assert kernel.calls[3] == ("pivot_root", ".", ".")
    assert kernel.calls[5][4] == MS_SLAVE | MS_REC
    assert kernel.calls[6] == ("umount2", ".", MNT_DETACH)
    assert kernel.calls[-1] == ("chdir", "/")
    assert not kernel.fds


def test_both_kernels_implement_the_whole_seam():
    import inspect

    from kubirun._native.syscalls import Syscalls

    wanted = {name: list(inspect.signature(getattr(Syscalls, name)).parameters)
              for name in dir(Syscalls) if not name.startswith("_")}
    for kernel in (Kernel, RecordingKernel):
        have = {name: list(inspect.signature(getattr(kernel, name)).parameters)
                for name in wanted if hasattr(kernel, name)}
        assert have == wanted, kernel.__name__


def test_no_pivot_moves_the_root_onto_slash_and_chroots_through_the_seam():
    kernel = RecordingKernel()
    rootfs.move_into(kernel, "/nonexistent/kubirun-test/rootfs")
    assert kernel.calls[-4:] == [
        ("chdir", "/nonexistent/kubirun-test/rootfs"),
        ("mount", "/nonexistent/kubirun-test/rootfs", "/", None, MS_MOVE, None),
        ("chroot", "."), ("chdir", "/")]


def test_without_a_mount_namespace_the_root_is_a_chroot_through_the_seam():
    kernel = RecordingKernel()
    rootfs.chroot_into(kernel, "/r")
    assert kernel.calls == [("chdir", "/r"), ("chroot", "."), ("chdir", "/")]


def test_the_terminal_is_the_roots_ptmx_and_its_peer_through_the_seam():
    from kubirun import console

    kernel = RecordingKernel()
    root = kernel.open("/r", 0)
    master, slave = console.open_pty_inside(kernel, root)
    assert kernel.calls[1:] == [("open_in_root", "dev/pts/ptmx"), ("open_pty_peer", "dev/pts/ptmx")]
    assert kernel.fds[slave] == "dev/pts/ptmx:peer"

