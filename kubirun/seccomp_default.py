"""The seccomp profile of ``kubirun run IMAGE``, and profile files in
docker's and podman's format (``--security-opt seccomp=FILE``).

An image run gets what ``docker run`` and ``podman run`` give: every system
call a program needs, and not those that reach past the container (kernel
modules, the clock, reboot, kexec, keyrings, ``mount``, namespaces other
than the process's own, BPF, perf, userfaultfd...) unless the container
holds the capability that call asks for anyway.  A call the profile does
not name fails with ``EPERM``; one newer than any it names with ``ENOSYS``
(``kubirun.seccomp_bpf``), so a C library falls back as on an older kernel.

The lists are kubirun's own, grouped by what the calls are for.  They are
written in docker's profile format (``includes``/``excludes`` of
capabilities, architectures and kernel versions), so the default and a
user's docker or podman profile become a runtime-spec ``linux.seccomp`` the
same way: ``to_oci``.  The capabilities that count are the process's
bounding set, as docker's.
"""
from __future__ import annotations

import errno
import os

EPERM, ENOSYS = errno.EPERM, errno.ENOSYS

# --- what every container may call ---------------------------------------

FILES = """
access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchmodat2
fchown fchown32 fchownat fcntl fcntl64 fdatasync flock fstat fstat64 fstatat64 fstatfs
fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64 lchown lchown32
link linkat _llseek lseek lstat lstat64 mkdir mkdirat mknod mknodat name_to_handle_at
newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev pwritev2 read
readahead readlink readlinkat readv rename renameat renameat2 rmdir sendfile sendfile64
splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs tee
truncate truncate64 umask unlink unlinkat utime utimensat utimensat_time64 utimes vmsplice
write writev cachestat
"""
XATTRS = """
fgetxattr flistxattr fremovexattr fsetxattr getxattr lgetxattr listxattr llistxattr
lremovexattr lsetxattr removexattr setxattr
"""
MEMORY = """
brk madvise membarrier memfd_create memfd_secret mincore mlock mlock2 mlockall mmap mmap2
mprotect mremap msync munlock munlockall munmap pkey_alloc pkey_free pkey_mprotect
remap_file_pages map_shadow_stack mseal
"""
PROCESSES = """
capget capset execve execveat exit exit_group fork vfork getcpu getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getpgid getpgrp getpid getppid getpriority
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
gettid getuid getuid32 ioprio_get ioprio_set kill pidfd_open pidfd_send_signal prctl
prlimit64 process_mrelease rseq set_robust_list set_tid_address setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setpgid setpriority setregid setregid32
setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setuid
setuid32 tgkill tkill ugetrlimit wait4 waitid waitpid seccomp landlock_add_rule
landlock_create_ruleset landlock_restrict_self get_thread_area set_thread_area
ptrace process_vm_readv process_vm_writev
"""
SCHEDULING = """
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield
"""
SIGNALS = """
pause restart_syscall rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack signalfd
signalfd4 sigprocmask sigreturn
"""
TIME = """
alarm clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 getitimer gettimeofday nanosleep
setitimer time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 times adjtimex
"""
WAITING = """
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake inotify_add_watch inotify_init inotify_init1 inotify_rm_watch fanotify_mark
io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit
pipe pipe2 poll ppoll ppoll_time64 pselect6 pselect6_time64 select _newselect
"""
IPC = """
ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop
semtimedop_time64 shmat shmctl shmdt shmget
"""
NETWORK = """
accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom
recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown
socketcall socketpair
"""
SYSTEM = """
getrandom ioctl sysinfo uname
"""
COMMON = (FILES, XATTRS, MEMORY, PROCESSES, SCHEDULING, SIGNALS, TIME, WAITING, IPC,
          NETWORK, SYSTEM)

# clone(2) flags that make namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID and NEWNET.  Without CAP_SYS_ADMIN, clone is
# allowed only without them (the flags are clone's first argument, its
# second on s390).
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40  # sockets to the hypervisor: not for containers
# personality(2) values a program may ask for: PER_LINUX, PER_LINUX32,
# UNAME26 and each with PER_LINUX32, and 0xffffffff (asks, changes nothing).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


def _allow(names: str | tuple[str, ...], **rule) -> dict:
    words = names.split() if isinstance(names, str) else list(names)
    return {"names": words, "action": "SCMP_ACT_ALLOW", **rule}


def _needs(*caps: str) -> dict:
    return {"includes": {"caps": list(caps)}}


def _arg(index: int, value: int, op: str, value_two: int = 0) -> dict:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def default_profile() -> dict:
    """kubirun's default profile, in docker's format (see ``to_oci``)."""
    rules = [_allow(" ".join(COMMON))]
    rules += [_allow("personality", args=[_arg(0, value, "SCMP_CMP_EQ")])
              for value in PERSONALITIES]
    rules += [
        _allow("socket", args=[_arg(0, AF_VSOCK, "SCMP_CMP_NE")]),
        # Architecture-specific calls, where they exist.
        _allow("arch_prctl modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
        _allow("breakpoint cacheflush set_tls arm_fadvise64_64 arm_sync_file_range"
               " sync_file_range2", includes={"arches": ["arm", "arm64"]}),
        _allow("sync_file_range2 swapcontext", includes={"arches": ["ppc64le"]}),
        _allow("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
               includes={"arches": ["s390", "s390x"]}),
        _allow("riscv_flush_icache", includes={"arches": ["riscv64"]}),
        # New processes: clone without namespace flags; clone3 (whose flags
        # sit in memory a filter cannot read) fails with ENOSYS, so a C
        # library falls back to clone.
        _allow("clone", args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)],
               excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
        _allow("clone", args=[_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)],
               includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        # What a capability is for, where it holds it.
        _allow("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie"
               " mount mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd"
               " setdomainname sethostname setns syslog umount umount2 unshare",
               **_needs("CAP_SYS_ADMIN")),
        _allow("reboot", **_needs("CAP_SYS_BOOT")),
        _allow("chroot", **_needs("CAP_SYS_CHROOT")),
        _allow("delete_module init_module finit_module", **_needs("CAP_SYS_MODULE")),
        _allow("acct", **_needs("CAP_SYS_PACCT")),
        _allow("kcmp pidfd_getfd process_madvise", **_needs("CAP_SYS_PTRACE")),
        _allow("iopl ioperm", **_needs("CAP_SYS_RAWIO")),
        _allow("settimeofday stime clock_settime clock_settime64", **_needs("CAP_SYS_TIME")),
        _allow("vhangup", **_needs("CAP_SYS_TTY_CONFIG")),
        _allow("get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
               **_needs("CAP_SYS_NICE")),
        _allow("syslog", **_needs("CAP_SYSLOG")),
        _allow("bpf", **_needs("CAP_BPF")),
        _allow("perf_event_open", **_needs("CAP_PERFMON")),
    ]
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
            "archMap": ARCH_MAP, "syscalls": rules}


# --- docker's format to the runtime spec's --------------------------------

# The architectures a machine's programs may use: its own and the 32-bit
# ones it runs (docker's archMap).
ARCH_MAP = [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    {"architecture": "SCMP_ARCH_PPC64LE", "subArchitectures": []},
    {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
    {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": []},
]
# uname -m: (the SCMP_ARCH_ name, the names a rule's "arches" may use)
MACHINES = {
    "x86_64": ("SCMP_ARCH_X86_64", {"amd64", "x86_64", "x32", "x86", "386"}),
    "aarch64": ("SCMP_ARCH_AARCH64", {"arm64", "aarch64", "arm"}),
    "ppc64le": ("SCMP_ARCH_PPC64LE", {"ppc64le"}),
    "s390x": ("SCMP_ARCH_S390X", {"s390x", "s390"}),
    "riscv64": ("SCMP_ARCH_RISCV64", {"riscv64"}),
}
# Keys of docker's format that the runtime spec has too, as they are.
OCI_KEYS = ("defaultAction", "defaultErrnoRet", "architectures", "flags",
            "listenerPath", "listenerMetadata")
OCI_RULE_KEYS = ("names", "action", "errnoRet", "args")


def is_docker_format(profile: dict) -> bool:
    """Does ``profile`` use docker's keys (archMap, a rule's name,
    includes/excludes) rather than only the runtime spec's?"""
    rules = profile.get("syscalls")
    return "archMap" in profile or (isinstance(rules, list) and any(
        isinstance(rule, dict) and ({"includes", "excludes", "name"} & rule.keys())
        for rule in rules))


def to_oci(profile: dict, capabilities: list[str] | None, machine: str | None = None,
           kernel: str | None = None) -> dict:
    """A docker-format profile as a runtime-spec ``linux.seccomp`` for a
    process whose bounding set is ``capabilities`` (None: every one), on
    ``machine`` (``uname -m``) under ``kernel`` (its release).  A rule
    applies if the process holds every capability it ``includes`` and none
    it ``excludes``, the machine is among its ``includes`` arches and not
    its ``excludes``, and the kernel is at least its ``minKernel``."""
    machine = machine or os.uname().machine
    kernel = kernel or os.uname().release
    native, arches = MACHINES.get(machine, (None, {machine}))
    held = None if capabilities is None else set(capabilities)

    oci = {key: profile[key] for key in OCI_KEYS if key in profile}
    if "archMap" in profile and "architectures" not in profile:
        for entry in profile["archMap"] or []:
            if isinstance(entry, dict) and entry.get("architecture") == native:
                oci["architectures"] = [native, *(entry.get("subArchitectures") or [])]
    rules = []
    for rule in profile.get("syscalls") or []:
        if not isinstance(rule, dict):
            rules.append(rule)  # linux.seccomp's own checks say what is wrong
            continue
        if not _applies(rule.get("includes") or {}, rule.get("excludes") or {}, held, arches,
                        kernel):
            continue
        oci_rule = {key: rule[key] for key in OCI_RULE_KEYS if key in rule}
        if "names" not in oci_rule and isinstance(rule.get("name"), str):
            oci_rule["names"] = [rule["name"]]
        rules.append(oci_rule)
    oci["syscalls"] = rules
    return oci


def _applies(includes: dict, excludes: dict, held: set[str] | None, arches: set[str],
             kernel: str) -> bool:
    wanted = includes.get("caps") or []
    if held is not None and any(cap not in held for cap in wanted):
        return False
    unwanted = excludes.get("caps") or []
    if any(held is None or cap in held for cap in unwanted):
        return False
    if includes.get("arches") and not arches & set(includes["arches"]):
        return False
    if excludes.get("arches") and arches & set(excludes["arches"]):
        return False
    minimum = includes.get("minKernel")
    return not minimum or _version(kernel) >= _version(str(minimum))


def _version(release: str) -> tuple[int, ...]:
    """'6.1.0-57-amd64' -> (6, 1, 0); what does not parse counts as 0."""
    parts = []
    for part in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
