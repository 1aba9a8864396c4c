"""The init's whole ordered list of system calls (kubirun.init.setup_and_exec),
from its config to execve, and exec's (kubirun.exec_into.enter_and_exec),
for several configs, against the recording kernel: no root, no fork, no
namespaces; any user runs it.  Each list is what runc's init does, step
for step (its standard_init_linux.go and rootfs_linux.go): swap two steps
in the code and the list differs.

What the fake cannot stand in for, the test leaves to the host, read
only: ``process.prepare`` looks up the program and /etc/passwd in "/"
(here the host's), and the bind remounts read the mount's flags (statvfs).
"""
from __future__ import annotations

import os
import signal

import pytest

from kubirun import exec_into, init
from kubirun._native import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS, CLOSE_RANGE_CLOEXEC,
    MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE,
    PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_SET_DUMPABLE, PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG,
)
from kubirun.base import jsonio
from kubirun.capabilities import CAPABILITIES, last_cap
from kubirun.channel import CGROUP, READY, USERNS, WAITING
from kubirun.process import ProcessSpec
from kubirun.rlimits import RLIMITS
from kubirun.seccomp import Program
from tests.unit.recording_kernel import Execed, RecordingKernel

ROOT = "/run/kubirun-test/c1/rootfs"
CPU = "/sys/fs/cgroup/cpu/c1/cgroup.procs"
MEMORY = "/sys/fs/cgroup/memory/c1/cgroup.procs"
LOST = 0xFFFFFFFF  # close_range's last: every fd above the first


class FakeChannel:
    """The init's channel: its questions land in the kernel's call list,
    so their place among the system calls is checked too."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def ask(self, tag: bytes) -> bytes:
        self.calls.append(("ask", tag))
        if tag == CGROUP:
            return jsonio.dumps({"join": [[CPU, False], [MEMORY, True]], "binds": []}).encode()
        return b""

    def tell(self, tag: bytes) -> None:
        self.calls.append(("tell", tag))

    def report_fd(self) -> int:
        return 7


def oci_process(**fields) -> ProcessSpec:
    spec = ProcessSpec(args=["/bin/true"], cwd="/")
    spec.oci = True
    for name, value in fields.items():
        setattr(spec, name, value)
    return spec


def config(kernel: RecordingKernel, spec: ProcessSpec | None = None, **fields) -> init.InitConfig:
    made = init.InitConfig(ROOT, spec or oci_process(), FakeChannel(kernel.calls), plan=[])
    made.unshare = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def run_init(kernel: RecordingKernel, made: init.InitConfig) -> list[tuple]:
    with pytest.raises(Execed):
        init.setup_and_exec(made, kernel)
    assert not kernel.fds, "file descriptors were leaked"
    return kernel.calls


# The pieces every config shares, in order.

def cgroup_steps() -> list[tuple]:
    """Step 7: every hierarchy but memory's, then (after the switch of root
    and the host name, step 12) memory's."""
    return [("ask", CGROUP), ("open", CPU), ("write", CPU, b"0"), ("open", MEMORY)]


def created_steps() -> list[tuple]:
    """Step 8's pid for the hooks, step 9's switch comes after."""
    return [("readlink", "/proc/self")]


def pivot_steps() -> list[tuple]:
    return [("open", "/"), ("open", ROOT), ("fchdir", ROOT), ("pivot_root", ".", "."),
            ("fchdir", "/"), ("mount", None, ".", None, MS_SLAVE | MS_REC, None),
            ("umount2", ".", MNT_DETACH), ("chdir", "/")]


def tail_steps(uid: int = 0, gid: int = 0) -> list[tuple]:
    """Steps 14 to 18 of a plain OCI process: created, released, then the
    tail: signals, fds, working directory, user, execve."""
    return [("ask", READY), ("prctl", PR_SET_PDEATHSIG, 0, 0), ("tell", WAITING),
            ("reset_signals",), ("close_range", 3, LOST, CLOSE_RANGE_CLOEXEC),
            ("chdir", "/"), ("setgroups", []), ("setgid", gid), ("setuid", uid),
            ("execve", "/bin/true", ["/bin/true"])]


def test_a_plain_container_goes_from_pdeathsig_through_pivot_root_to_execve():
    kernel = RecordingKernel()
    calls = run_init(kernel, config(kernel, hostname="box"))
    assert calls == [
        ("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0),
        ("unshare", CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC),
        ("mount", None, "/", None, MS_PRIVATE | MS_REC, None),
        ("mount", ROOT, ROOT, None, MS_BIND | MS_REC, None),
        ("open", ROOT),
        *cgroup_steps(), *created_steps(), *pivot_steps(),
        ("sethostname", "box"),
        ("write", MEMORY, b"0"),
        *tail_steps()]


def test_the_host_name_comes_after_the_root_switch_and_before_the_memory_cgroup():
    kernel = RecordingKernel()
    calls = run_init(kernel, config(kernel, hostname="box", domainname="example.org",
                                    new_netns=True, new_cgroupns=True,
                                    unshare=CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET))
    start = calls.index(("umount2", ".", MNT_DETACH))
    assert calls[start + 1:start + 8] == [
        ("chdir", "/"), ("sethostname", "box"), ("setdomainname", "example.org"),
        ("link_up", "lo"), ("write", MEMORY, b"0"), ("unshare", CLONE_NEWCGROUP),
        ("ask", READY)]


def test_a_user_namespace_is_entered_as_its_root_before_the_other_namespaces():
    kernel = RecordingKernel()
    calls = run_init(kernel, config(kernel, new_user=True, join=[(CLONE_NEWNET, "/run/netns/n1")]))
    assert calls[:9] == [
        ("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0),
        ("ask", USERNS),
        ("setgroups", []), ("setresgid", 0), ("setresuid", 0),
        ("open", "/run/netns/n1"), ("setns", "/run/netns/n1", CLONE_NEWNET),
        ("unshare", CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC),
        ("mount", None, "/", None, MS_PRIVATE | MS_REC, None)]


def test_rootless_the_init_is_dumpable_only_while_the_runtime_writes_its_id_maps():
    kernel = RecordingKernel(euid=1000)
    calls = run_init(kernel, config(kernel, new_user=True))
    assert calls[:7] == [
        ("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0),
        ("prctl", PR_SET_DUMPABLE, 1, 0), ("ask", USERNS), ("prctl", PR_SET_DUMPABLE, 0, 0),
        ("setgroups", []), ("setresgid", 0), ("setresuid", 0)]
    assert calls[7][0] == "unshare" and calls[-1][0] == "execve"


def test_without_a_mount_namespace_the_root_is_a_private_bind_then_a_chroot():
    kernel = RecordingKernel()
    where = {"source": "/var/lib/c1/rootfs", "path": ROOT}
    calls = run_init(kernel, config(kernel, unshare=CLONE_NEWUTS, host_mount=where))
    assert calls == [
        ("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0),
        ("unshare", CLONE_NEWUTS),
        ("mount", "/var/lib/c1/rootfs", ROOT, None, MS_BIND | MS_REC, None),
        ("mount", None, ROOT, None, MS_PRIVATE | MS_REC, None),
        ("open", ROOT),
        *cgroup_steps(), *created_steps(),
        ("chdir", ROOT), ("chroot", "."), ("chdir", "/"),
        ("write", MEMORY, b"0"),
        *tail_steps()]


def test_no_pivot_detaches_the_hosts_proc_then_moves_the_root_onto_slash_and_chroots():
    mountinfo = (b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
                 b"23 1 0:22 / /sys rw,nosuid - sysfs sysfs rw\n"
                 b"24 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    kernel = RecordingKernel(files={"/proc/self/mountinfo": mountinfo})
    calls = run_init(kernel, config(kernel, no_pivot=True))
    start = calls.index(("readlink", "/proc/self")) + 1
    assert calls[start:start + 10] == [
        ("open", "/proc/self/mountinfo"), ("read", "/proc/self/mountinfo"),
        ("mount", None, "/proc", None, MS_SLAVE | MS_REC, None), ("umount2", "/proc", MNT_DETACH),
        ("mount", None, "/sys", None, MS_SLAVE | MS_REC, None), ("umount2", "/sys", MNT_DETACH),
        ("chdir", ROOT), ("mount", ROOT, "/", None, MS_MOVE, None), ("chroot", "."),
        ("chdir", "/")]
    assert "pivot_root" not in [call[0] for call in calls]


def test_limits_capabilities_user_no_new_privs_then_the_filter_then_execve():
    kernel = RecordingKernel()
    kept = ["CAP_CHOWN", "CAP_KILL"]
    spec = oci_process(uid=1000, gid=1000, no_new_privileges=True,
                       rlimits=[("RLIMIT_NOFILE", 1024, 2048)],
                       capabilities={name: kept for name in
                                     ("bounding", "effective", "permitted", "inheritable")})
    calls = run_init(kernel, config(kernel, spec, seccomp=Program(b"\0" * 16)))
    highest = last_cap()
    bits = (1 << CAPABILITIES["CAP_CHOWN"]) | (1 << CAPABILITIES["CAP_KILL"])
    dropped = [("prctl", PR_CAPBSET_DROP, n, 0) for n in range(highest + 1) if not bits & (1 << n)]
    start = calls.index(("close_range", 3, LOST, CLOSE_RANGE_CLOEXEC)) + 1
    assert calls[start:] == [
        ("setrlimit", RLIMITS["RLIMIT_NOFILE"], 1024, 2048),
        ("chdir", "/"),
        *dropped,
        ("prctl", PR_SET_KEEPCAPS, 1, 0),
        ("setgroups", []), ("setgid", 1000), ("setuid", 1000),
        ("prctl", PR_SET_KEEPCAPS, 0, 0),
        ("capset", bits, bits, bits),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0),
        ("prctl", PR_SET_NO_NEW_PRIVS, 1, 0),
        ("seccomp", 2, 0),
        ("execve", "/bin/true", ["/bin/true"])]


def test_a_filter_without_no_new_privs_is_loaded_before_the_user_switch():
    kernel = RecordingKernel()
    spec = oci_process(uid=1000, gid=1000)
    calls = run_init(kernel, config(kernel, spec, seccomp=Program(b"\0" * 8)))
    start = calls.index(("close_range", 3, LOST, CLOSE_RANGE_CLOEXEC)) + 1
    assert calls[start:] == [("seccomp", 1, 0), ("chdir", "/"), ("setgroups", []),
                             ("setgid", 1000), ("setuid", 1000),
                             ("execve", "/bin/true", ["/bin/true"])]


def test_preserved_fds_and_a_readonly_root_in_their_places():
    kernel = RecordingKernel()
    calls = run_init(kernel, config(kernel, preserve_fds=2, root_readonly=True,
                                    readonly_paths=["/proc/sys"]))
    start = calls.index(("umount2", ".", MNT_DETACH)) + 2
    assert [call[:3] for call in calls[start:start + 4]] == [
        ("mount", "/proc/sys", "/proc/sys"),
        ("mount", None, "/proc/sys"), ("mount", None, "/"), ("write", MEMORY, b"0")]
    assert calls[start + 2][4] & (MS_BIND | MS_REMOUNT | MS_RDONLY) == MS_BIND | MS_REMOUNT | MS_RDONLY
    reset = calls.index(("reset_signals",))
    assert calls[reset + 1:reset + 4] == [("set_inheritable", 3), ("set_inheritable", 4),
                                          ("close_range", 5, LOST, CLOSE_RANGE_CLOEXEC)]


def test_exec_joins_the_cgroup_then_the_namespaces_mount_last_then_the_same_tail():
    kernel = RecordingKernel()
    channel = FakeChannel(kernel.calls)
    channel.child_side = lambda: kernel.calls.append(("child_side",))
    net, mnt = kernel.open("/proc/1/ns/net", os.O_RDONLY), kernel.open("/proc/1/ns/mnt", os.O_RDONLY)
    kernel.calls.clear()
    with pytest.raises(Execed):
        exec_into.enter_and_exec(kernel, oci_process(), channel, [("network", net), ("mount", mnt)],
                                 [(CPU, False), (MEMORY, True)], None, False, 0, None, -1,
                                 "_ses.c1", None)
    assert kernel.calls == [
        ("child_side",),
        ("open", CPU), ("write", CPU, b"0"), ("open", MEMORY),
        ("setns", "/proc/1/ns/net", CLONE_NEWNET), ("setns", "/proc/1/ns/mnt", CLONE_NEWNS),
        ("chdir", "/"), ("write", MEMORY, b"0"),
        ("join_session_keyring", "_ses.c1"),
        ("reset_signals",), ("close_range", 3, LOST, CLOSE_RANGE_CLOEXEC),
        ("chdir", "/"), ("setgroups", []), ("setgid", 0), ("setuid", 0),
        ("tell", READY),
        ("execve", "/bin/true", ["/bin/true"])]


def test_the_terminal_is_the_users_then_controlling_in_a_new_session_then_stdio():
    from kubirun import console

    kernel = RecordingKernel()
    slave = kernel.open("/dev/pts/0", os.O_RDWR)
    console.give_terminal_to(kernel, slave, 1000)
    console.become_controlling_terminal(kernel, slave)
    assert kernel.calls[1:] == [
        ("fchown", "/dev/pts/0", 1000, -1), ("setsid",), ("set_controlling_terminal", "/dev/pts/0"),
        ("dup2", "/dev/pts/0", 0), ("dup2", "/dev/pts/0", 1), ("dup2", "/dev/pts/0", 2)]
    assert not kernel.fds
