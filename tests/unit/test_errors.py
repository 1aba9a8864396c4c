"""One error type: every error kubirun raises on purpose is a KubirunError
carrying what is known (errno, syscall, path, container id), and an init's
errno reaches the runtime across the init channel."""
from __future__ import annotations

import errno
import os

import pytest

from kubirun.base.errors import ContainerStartError, KubirunError
from kubirun.cgroups import CgroupError
from kubirun.cgroups.ebpf import BPFError
from kubirun.channel import InitChannel, parse_error
from kubirun.image.overlay import OverlayUnavailable
from kubirun.image.tarstream import CorruptData
from kubirun.ns.idmap import IdMapError


@pytest.mark.parametrize("error", [CgroupError("x"), IdMapError("x"), CorruptData("x"),
                                   OverlayUnavailable("x"), BPFError("x")],
                         ids=lambda e: type(e).__name__)
def test_the_errors_of_the_rooms_are_kubirun_errors(error):
    assert isinstance(error, KubirunError)


def test_a_cgroup_error_carries_its_path_and_errno():
    err = CgroupError("cannot write", path="/sys/fs/cgroup/x", file="pids.max", errno=errno.EINVAL)
    assert (err.path, err.file, err.errno) == ("/sys/fs/cgroup/x", "pids.max", errno.EINVAL)


def test_an_os_error_becomes_one_line_with_its_errno_syscall_path_and_container():
    cause = FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such")
    err = KubirunError.from_oserror(cause, "chroot", container_id="box", context="container box")
    assert str(err) == "container box: chroot: No such file or directory: /no/such"
    assert (err.errno, err.syscall, err.path, err.container_id) == (
        errno.ENOENT, "chroot", "/no/such", "box")


def test_an_error_report_on_the_init_channel_carries_its_errno():
    channel = InitChannel()
    pid = os.fork()
    if pid == 0:  # as an init does: report, exit
        channel.child_side()
        channel.report_error(126, 'exec: "/x": permission denied', errno.EACCES)
        os._exit(1)
    channel.parent_side()
    try:
        with pytest.raises(ContainerStartError) as caught:
            channel.receive()
    finally:
        channel.close()
        os.waitpid(pid, 0)
    assert (caught.value.exit_code, caught.value.errno) == (126, errno.EACCES)
    assert str(caught.value) == 'exec: "/x": permission denied'


def test_a_report_without_an_errno_still_parses():
    err = parse_error(b'1\0setns: invalid argument')
    assert (err.exit_code, err.errno, str(err)) == (1, None, "setns: invalid argument")


def test_the_exec_helpers_report_format_carries_the_execve_errno():
    err = parse_error(b'126:8\0exec: "/bin/x": exec format error')
    assert (err.exit_code, err.errno) == (126, errno.ENOEXEC)
