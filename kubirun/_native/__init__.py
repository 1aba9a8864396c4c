"""The kernel boundary: every system call kubirun makes that Python's
standard library does not offer goes through this package.

Each wrapper raises ``OSError`` carrying the errno, the system call's name and
its path argument(s), e.g. ``[Errno 2] mount: No such file or directory:
'proc' -> '/x/proc'``.  ``Kernel`` bundles the calls the mount and namespace
plan needs behind one small interface, so that plan can be checked against a
recording fake (see ``tests/unit``) without root.
"""
from __future__ import annotations

import errno
import os
from kubirun._native._kernel import ffi, lib

# clone(2)/unshare(2) flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_PARENT = 0x00008000  # the child is our parent's (kubirun.zygote)

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

# openat2(2) resolve flags.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

CLOSE_RANGE_CLOEXEC = 0x4

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# seccomp(2) SECCOMP_SET_MODE_FILTER flags.
SECCOMP_FILTER_FLAG_TSYNC = 0x1
SECCOMP_FILTER_FLAG_LOG = 0x2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 0x4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 0x8  # seccomp(2) returns a notification fd
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 0x10  # TSYNC's failure as ESRCH: needed with NEW_LISTENER
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 0x20  # only with NEW_LISTENER


def _fail(syscall: str, *paths: str) -> OSError:
    err = ffi.errno
    message = f"{syscall}: {os.strerror(err)}"
    if len(paths) >= 2:
        return OSError(err, message, paths[0], None, paths[1])
    if paths:
        return OSError(err, message, paths[0])
    return OSError(err, message)


def _enc(value: str | None):
    if value is None:
        return ffi.NULL
    raw = os.fsencode(value)
    # C would read only up to the NUL: a path cut short names another
    # file (config.json's strings are refused before, this is the guard).
    if b"\0" in raw:
        raise ValueError(f"embedded null byte in {value!r}")
    return raw


def unshare(flags: int) -> None:
    if lib.unshare(flags) < 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if lib.setns(fd, nstype) < 0:
        raise _fail("setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    if lib.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) < 0:
        raise _fail("mount", source or fstype or "none", target)


def umount2(target: str, flags: int = 0) -> None:
    if lib.umount2(_enc(target), flags) < 0:
        raise _fail("umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    if lib.kubi_pivot_root(_enc(new_root), _enc(put_old)) < 0:
        raise _fail("pivot_root", new_root, put_old)


def sethostname(name: str) -> None:
    raw = _enc(name)
    if lib.sethostname(raw, len(raw)) < 0:
        raise _fail("sethostname", name)


def setdomainname(name: str) -> None:
    data = _enc(name)
    if lib.setdomainname(data, len(data)) < 0:
        raise _fail("setdomainname", name)


def join_session_keyring(name: str) -> int:
    """A new session keyring named ``name`` for this process (and its id)."""
    key = lib.kubi_join_session_keyring(_enc(name))
    if key < 0:
        raise _fail("keyctl(JOIN_SESSION_KEYRING)", name)
    return key


def add_key_permissions(key: int, bits: int) -> None:
    """Add permission ``bits`` to ``key`` (KEYCTL_DESCRIBE to read them,
    KEYCTL_SETPERM to set them)."""
    buf = ffi.new("char[]", 256)
    if lib.kubi_keyctl(6, key, int(ffi.cast("uintptr_t", buf)), 256) < 0:  # KEYCTL_DESCRIBE
        raise _fail("keyctl(DESCRIBE)")
    perm = int(ffi.string(buf).decode().split(";")[3], 16)
    if lib.kubi_keyctl(5, key, perm | bits, 0) < 0:  # KEYCTL_SETPERM
        raise _fail("keyctl(SETPERM)")


def fork_with_flags(flags: int, cgroup_fd: int = -1) -> int:
    """``os.fork`` into new namespaces (``CLONE_NEW*`` flags) and, given
    ``cgroup_fd`` (an open cgroup2 directory), into that cgroup from birth
    (clone3's CLONE_INTO_CGROUP: Linux 5.7; ENOSYS, E2BIG or EINVAL
    before): the child's PID (0 in the child)."""
    pid = lib.kubi_fork_with_flags(flags, cgroup_fd)
    if pid < 0:
        raise _fail("clone3(CLONE_INTO_CGROUP)" if cgroup_fd >= 0 else "clone")
    return pid


def make_tree_read_only(fd: int) -> None:
    """Every mount of the tree at ``fd`` read-only (mount_setattr AT_RECURSIVE)."""
    if lib.kubi_mount_setattr_rdonly_recursive(fd, b"") < 0:
        raise _fail("mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)")


def set_personality(persona: int) -> None:
    if lib.kubi_personality(persona) < 0:
        raise _fail("personality")


def fstatfs_type(fd: int) -> int:
    """The filesystem magic (statfs ``f_type``) of what ``fd`` names."""
    magic = lib.kubi_fstatfs_type(fd)
    if magic < 0:
        raise _fail("fstatfs")
    return magic


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """``soft``/``hard`` as the kernel's u64: 2**64-1 is unlimited."""
    if lib.kubi_setrlimit(resource, soft, hard) < 0:
        raise _fail(f"setrlimit({resource})")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    if lib.kubi_close_range(first, last, flags) < 0:
        raise _fail("close_range")


def bpf(cmd: int, attr: bytearray) -> int:
    """bpf(2) on ``attr`` (a union bpf_attr, which the kernel may write
    back into): its result, or -errno.  Pointers inside ``attr`` come from
    ``buffer_address``."""
    return lib.kubi_bpf(cmd, ffi.from_buffer(attr), len(attr))


def buffer_address(buffer: bytearray) -> int:
    """Where ``buffer``'s bytes are, for a pointer inside a bpf_attr (valid
    while the bytearray lives and keeps its size)."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))


def chroot(path: str) -> None:
    """chroot(2).  Python's own call, but here so that every change of root
    goes through the seam (Kernel.chroot) that tests can record."""
    os.chroot(path)


# ioctls on a pty master (asm-generic/ioctls.h)
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


NS_GET_NSTYPE = 0xB703  # ioctl(2) on a namespace file: its CLONE_NEW* type


def namespace_type(fd: int) -> int:
    """The CLONE_NEW* type of the namespace file at ``fd`` (NS_GET_NSTYPE);
    OSError ENOTTY for a file that is no namespace."""
    import fcntl

    return fcntl.ioctl(fd, NS_GET_NSTYPE)


def fork() -> int:
    """A plain fork(2), as Python makes it (its at-fork handlers run, as
    they do in ``fork_with_flags``): here so that every fork of kubirun
    goes through this module."""
    return os.fork()


def open_pty_peer(master: int) -> int:
    """The slave of pty ``master``, unlocked and opened from the master
    itself (TIOCGPTPEER): no path lookup of /dev/pts/N that an image could
    redirect.  Close-on-exec, not a controlling terminal."""
    import fcntl
    import struct

    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


def replace_file(new: str, path: str) -> None:
    """``rename(new, path)`` for a ``path`` that may exist: readers see the
    old file or the new one, never neither.  When ``path`` exists, the two
    names are exchanged (renameat2 RENAME_EXCHANGE) and the old file, now at
    ``new``, is removed: a file renamed over another is written out by
    ext4 before the rename returns (its blocks allocated and the write
    started: auto_da_alloc, for editors that never fsync), 0.15-0.5 ms
    measured on a container's state, and an exchange skips that."""
    if lib.kubi_exchange(_enc(new), _enc(path)) == 0:
        os.unlink(new)
        return
    if ffi.errno not in (errno.ENOENT, errno.EINVAL, errno.ENOSYS):
        raise _fail("renameat2(RENAME_EXCHANGE)", new, path)
    os.rename(new, path)  # no file there yet, or a file system without exchange


def pidfd_open(pid: int) -> int:
    fd = lib.kubi_pidfd_open(pid, 0)
    if fd < 0:
        raise _fail("pidfd_open", str(pid))
    return fd


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    if lib.kubi_pidfd_send_signal(pidfd, sig, 0) < 0:
        raise _fail("pidfd_send_signal")


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    fd = lib.kubi_openat2(dirfd, _enc(path), flags, mode, resolve)
    if fd < 0:
        raise _fail("openat2", path)
    return fd


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    rc = lib.kubi_prctl(option, a2, a3, a4, a5)
    if rc < 0:
        raise _fail(f"prctl({option})")
    return rc


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets (64-bit masks)."""
    low, high = 0xFFFFFFFF, 32
    if lib.kubi_capset(effective & low, effective >> high, permitted & low, permitted >> high,
                       inheritable & low, inheritable >> high) < 0:
        raise _fail("capset")


def seccomp_set_filter(program: bytes, flags: int = 0) -> int | None:
    """Install a BPF program (``struct sock_filter`` items, 8 bytes each)
    as this thread's seccomp filter; needs no_new_privs or CAP_SYS_ADMIN.
    The listener fd (close-on-exec) if ``flags`` ask for one, else None."""
    rc = lib.kubi_seccomp_set_filter(flags, program, len(program) // 8)
    if rc < 0:
        raise _fail("seccomp(SECCOMP_SET_MODE_FILTER)")
    return rc if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER else None


def seccomp_flags_supported(flags: int) -> bool:
    """Does this kernel accept these SECCOMP_FILTER_FLAG_* bits?"""
    return lib.kubi_seccomp_flags_supported(flags) == 1


def libseccomp():
    """The module's ``lib`` once libseccomp is opened (``dlopen`` on the
    first call: commands without a seccomp profile never load it)."""
    if lib.kubi_seccomp_open() < 0:
        reason = ffi.string(lib.kubi_seccomp_open_error()).decode(errors="replace")
        raise OSError(0, f"cannot load libseccomp (the libseccomp2 package): {reason}")
    return lib


def link_up(ifname: str) -> None:
    if lib.kubi_link_up(_enc(ifname)) < 0:
        raise _fail("ioctl(SIOCSIFFLAGS)", ifname)


# --- the exec helper (CVE-2019-5736) ----------------------------------------
#
# A process kubirun sets up is the Python interpreter until its last execve,
# so /proc/self/exe is the host's Python binary: a container program that is
# `#!/proc/self/exe` would run that binary inside the container, where any
# container process could open it for writing.  So the container's program
# is never exec'd from Python: kubirun execs kubirun-exec (exec_helper.c)
# from a sealed memfd, and that execs the program.  /proc/self/exe is then
# the sealed copy at worst, never a host file.

EXEC_HELPER = os.path.join(os.path.dirname(__file__), "kubirun-exec")
_exec_helper_fd: int | None = None


def exec_helper_fd() -> int:
    """The sealed memfd copy of kubirun-exec, made once per process
    (close-on-exec; forked children inherit it)."""
    global _exec_helper_fd
    if _exec_helper_fd is None:
        try:
            fd = os.open(EXEC_HELPER, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, 1 << 20)
            finally:
                os.close(fd)
        except OSError as err:
            raise OSError(err.errno, f"kubirun's exec helper is missing, reinstall kubirun"
                          f" (make, or pip install): {err.strerror}", EXEC_HELPER) from None
        memfd = lib.kubi_sealed_memfd(b"kubirun-exec", data, len(data))
        if memfd < 0:
            raise _fail("memfd_create", EXEC_HELPER)
        _exec_helper_fd = memfd
    return _exec_helper_fd


def forget_exec_helper() -> None:
    """After closing every fd (kubirun.zygote): the helper's memfd is gone."""
    global _exec_helper_fd
    _exec_helper_fd = None


def exec_through_helper(helper: int, path: str, args: list[str], env: dict[str, str],
                        report_fds: tuple[int, ...] = (), say_on_stderr: bool = False,
                        execveat_allowed: bool = True, as_init: "bool | str" = False) -> None:
    """Become ``path`` by way of the helper; returns only if the helper
    itself cannot be exec'd (raises OSError).  The helper reports a failure
    of the program's execve on ``report_fds`` (``kubirun.channel``'s
    ``E<code>\0<message>``) and exits 126 or 127.  ``execveat_allowed``
    False (a seccomp filter that may not let execveat through): execve of
    /proc/self/fd/N instead, which needs a /proc in the container.
    ``as_init``: the helper stays, as PID 1, and runs the program as its
    child; ``"pause"``: it stays as PID 1 and runs nothing (a pod
    sandbox; see exec_helper.c)."""
    for fd in report_fds:
        os.set_inheritable(fd, True)
    mode = "kubirun-pause" if as_init == "pause" else "kubirun-init" if as_init else "kubirun-exec"
    argv = [mode, ",".join(map(str, report_fds)) or "-",
            "1" if say_on_stderr else "0", path, *args]
    if execveat_allowed:
        try:
            os.execve(helper, argv, env)  # fexecve: execveat(fd, "", AT_EMPTY_PATH)
        except OSError as err:
            if err.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                raise
    os.execve(f"/proc/self/fd/{helper}", argv, env)


class Kernel:
    """The operations the rootfs plan performs, as one object: it implements
    ``kubirun._native.syscalls.Syscalls``.

    The real one calls the kernel; tests pass a recording fake with the same
    methods.  File descriptors returned here are the caller's to close.
    """

    def mount(self, source, target, fstype=None, flags=0, data=None) -> None:
        mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        pivot_root(new_root, put_old)

    def open_in_root(self, root_fd: int, path: str, flags: int, resolve: int) -> int:
        return openat2(root_fd, path, flags | os.O_CLOEXEC, 0, resolve)

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def mkdirat(self, dirfd: int, name: str, mode: int) -> None:
        os.mkdir(name, mode, dir_fd=dirfd)

    def mknodat(self, dirfd: int, name: str, mode: int, device: int) -> None:
        os.mknod(name, mode, device, dir_fd=dirfd)

    def chmodat(self, dirfd: int, name: str, mode: int) -> None:
        os.chmod(name, mode, dir_fd=dirfd)

    def make_tree_read_only(self, fd: int) -> None:
        make_tree_read_only(fd)

    def openat(self, dirfd: int, name: str, flags: int, mode: int = 0o644) -> int:
        return os.open(name, flags, mode, dir_fd=dirfd)

    def unlinkat(self, dirfd: int, name: str) -> None:
        os.unlink(name, dir_fd=dirfd)

    def chownat(self, dirfd: int, name: str, uid: int, gid: int) -> None:
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)

    def symlinkat(self, target: str, dirfd: int, name: str) -> None:
        os.symlink(target, name, dir_fd=dirfd)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def fchdir(self, fd: int) -> None:
        os.fchdir(fd)

    def chroot(self, path: str) -> None:
        chroot(path)

    def open_pty_peer(self, master: int) -> int:
        return open_pty_peer(master)

    # The rest of the init's and exec's steps, in their order of use.

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, uid, gid)

    def setsid(self) -> None:
        os.setsid()

    def set_controlling_terminal(self, fd: int) -> None:
        # imported already: by kubirun.console, before the root switch
        from kubirun._native.terminal import set_controlling_terminal

        set_controlling_terminal(fd)

    def dup2(self, fd: int, target: int) -> None:
        os.dup2(fd, target)

    def prctl(self, option: int, a2: int = 0, a3: int = 0) -> int:
        return prctl(option, a2, a3)

    def geteuid(self) -> int:
        return os.geteuid()

    def setgroups(self, groups: list[int]) -> None:
        os.setgroups(groups)

    def setresgid(self, gid: int) -> None:
        os.setresgid(gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        os.setresuid(uid, uid, uid)

    def setns(self, fd: int, nstype: int) -> None:
        setns(fd, nstype)

    def unshare(self, flags: int) -> None:
        unshare(flags)

    def join_session_keyring(self, name: str) -> int:
        return join_session_keyring(name)

    def add_key_permissions(self, key: int, bits: int) -> None:
        add_key_permissions(key, bits)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def read_from_start(self, fd: int) -> bytes:
        """All of an open file, read anew from offset 0 (a seq file such as
        /proc/self/mountinfo shows the present then)."""
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def set_personality(self, persona: int) -> None:
        set_personality(persona)

    def sethostname(self, name: str) -> None:
        sethostname(name)

    def setdomainname(self, name: str) -> None:
        setdomainname(name)

    def link_up(self, ifname: str) -> None:
        link_up(ifname)

    def reset_signals(self) -> None:
        """Every signal's disposition back to default, none blocked."""
        import _signal

        for signum in range(1, _signal.NSIG):
            if signum in (_signal.SIGKILL, _signal.SIGSTOP):
                continue
            try:
                if _signal.getsignal(signum) is not _signal.SIG_DFL:
                    _signal.signal(signum, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # the C library's own (32, 33)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])

    def set_inheritable(self, fd: int) -> None:
        os.set_inheritable(fd, True)

    def close_range(self, first: int, last: int, flags: int) -> None:
        close_range(first, last, flags)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        setrlimit(resource, soft, hard)

    def getcwd(self) -> str:
        return os.getcwd()

    def setgid(self, gid: int) -> None:
        os.setgid(gid)

    def setuid(self, uid: int) -> None:
        os.setuid(uid)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        capset(effective, permitted, inheritable)

    def umask(self, mask: int) -> int:
        return os.umask(mask)

    def seccomp_set_filter(self, program: bytes, flags: int) -> int | None:
        return seccomp_set_filter(program, flags)

    def exec_through_helper(self, helper: int, path: str, args: list[str], env: dict[str, str],
                            report_fds: tuple[int, ...], say_on_stderr: bool,
                            execveat_allowed: bool, as_init: "bool | str") -> None:
        exec_through_helper(helper, path, args, env, report_fds, say_on_stderr,
                            execveat_allowed, as_init)


__all__ = [name for name in dir() if not name.startswith("_")]
