"""A recording fake of the kernel: every call of the ``Syscalls`` seam
(kubirun/_native/syscalls.py) is appended to ``calls`` instead of made, so
the order of the init's, exec's and the mount plans' system calls is
checked without root (tests/unit/test_mount_plan.py, test_init_steps.py)."""
from __future__ import annotations

import errno
import os


class Execed(Exception):
    """Raised where the real kernel would have become the program."""


class RecordingKernel:
    """Records every call; pretends every path exists unless told otherwise.
    Implements kubirun._native.syscalls.Syscalls, as the real Kernel does
    (test_both_kernels_implement_the_whole_seam)."""

    def __init__(self, missing: set[str] = frozenset(), symlinks: set[str] = frozenset(),
                 euid: int = 0, files: dict[str, bytes] | None = None) -> None:
        self.calls: list[tuple] = []
        self.fds: dict[int, str] = {}
        self.missing = set(missing)
        self.symlinks = set(symlinks)
        self.euid = euid
        self.files = files or {}  # what read_from_start gives for an opened path
        self.cwd = "/"
        self._next_fd = 100

    def _fd(self, path: str) -> int:
        self._next_fd += 1
        self.fds[self._next_fd] = path
        return self._next_fd

    def open_in_root(self, root_fd, path, flags, resolve):
        if path in self.symlinks:
            raise OSError(errno.ELOOP, "openat2: Too many levels of symbolic links", path)
        if path in self.missing:
            raise FileNotFoundError(errno.ENOENT, "openat2: No such file or directory", path)
        self.calls.append(("open_in_root", path))
        return self._fd(path)

    def open(self, path, flags):
        self.calls.append(("open", path))
        return self._fd(path)

    def close(self, fd):
        self.fds.pop(fd)

    def mount(self, source, target, fstype=None, flags=0, data=None):
        if target.startswith("/proc/self/fd/"):
            target = "fd:" + self.fds[int(target.rsplit("/", 1)[1])]
        self.calls.append(("mount", source, target, fstype, flags, data))

    def umount2(self, target, flags=0):
        self.calls.append(("umount2", target, flags))

    def pivot_root(self, new_root, put_old):
        self.calls.append(("pivot_root", new_root, put_old))

    def mkdirat(self, dirfd, name, mode):
        path = os.path.join(self.fds[dirfd], name).lstrip("./") if self.fds[dirfd] != "." else name
        self.missing.discard(path)
        self.calls.append(("mkdir", path, mode))

    def mknodat(self, dirfd, name, mode, device):
        self.calls.append(("mknod", f"{self.fds[dirfd]}/{name}", mode, os.major(device), os.minor(device)))

    def chmodat(self, dirfd, name, mode):
        self.calls.append(("chmod", f"{self.fds[dirfd]}/{name}", mode))

    def symlinkat(self, target, dirfd, name):
        self.calls.append(("symlink", f"{self.fds[dirfd]}/{name}", target))

    def chdir(self, path):
        self.calls.append(("chdir", path))
        self.cwd = os.path.join(self.cwd, path)

    def fchdir(self, fd):
        self.calls.append(("fchdir", self.fds[fd]))

    def fstat(self, fd):
        self.calls.append(("fstat", self.fds[fd]))
        return os.stat("/")

    def make_tree_read_only(self, fd):
        self.calls.append(("make_tree_read_only", self.fds[fd]))

    def openat(self, dirfd, name, flags, mode=0o644):
        self.calls.append(("openat", f"{self.fds[dirfd]}/{name}"))
        return self._fd(f"{self.fds[dirfd]}/{name}")

    def unlinkat(self, dirfd, name):
        self.calls.append(("unlink", f"{self.fds[dirfd]}/{name}"))

    def chownat(self, dirfd, name, uid, gid):
        self.calls.append(("chown", f"{self.fds[dirfd]}/{name}", uid, gid))

    def chroot(self, path):
        self.calls.append(("chroot", path))

    def open_pty_peer(self, master):
        self.calls.append(("open_pty_peer", self.fds[master]))
        return self._fd(self.fds[master] + ":peer")

    # The init's and exec's other steps.

    def fchown(self, fd, uid, gid):
        self.calls.append(("fchown", self.fds.get(fd, fd), uid, gid))

    def setsid(self):
        self.calls.append(("setsid",))

    def set_controlling_terminal(self, fd):
        self.calls.append(("set_controlling_terminal", self.fds.get(fd, fd)))

    def dup2(self, fd, target):
        self.calls.append(("dup2", self.fds.get(fd, fd), target))

    def prctl(self, option, a2=0, a3=0):
        self.calls.append(("prctl", option, a2, a3))
        return 0

    def geteuid(self):
        return self.euid

    def setgroups(self, groups):
        self.calls.append(("setgroups", list(groups)))

    def setresgid(self, gid):
        self.calls.append(("setresgid", gid))

    def setresuid(self, uid):
        self.calls.append(("setresuid", uid))

    def setns(self, fd, nstype):
        self.calls.append(("setns", self.fds.get(fd, fd), nstype))

    def unshare(self, flags):
        self.calls.append(("unshare", flags))

    def join_session_keyring(self, name):
        self.calls.append(("join_session_keyring", name))
        return 42

    def add_key_permissions(self, key, bits):
        self.calls.append(("add_key_permissions", key, bits))

    def write(self, fd, data):
        self.calls.append(("write", self.fds.get(fd, fd), data))
        return len(data)

    def readlink(self, path):
        self.calls.append(("readlink", path))
        return "1" if path == "/proc/self" else self.cwd

    def read_from_start(self, fd):
        self.calls.append(("read", self.fds[fd]))
        return self.files.get(self.fds[fd], b"")

    def set_personality(self, persona):
        self.calls.append(("personality", persona))

    def sethostname(self, name):
        self.calls.append(("sethostname", name))

    def setdomainname(self, name):
        self.calls.append(("setdomainname", name))

    def link_up(self, ifname):
        self.calls.append(("link_up", ifname))

    def reset_signals(self):
        self.calls.append(("reset_signals",))

    def set_inheritable(self, fd):
        self.calls.append(("set_inheritable", fd))

    def close_range(self, first, last, flags):
        self.calls.append(("close_range", first, last, flags))

    def setrlimit(self, resource, soft, hard):
        self.calls.append(("setrlimit", resource, soft, hard))

    def getcwd(self):
        return self.cwd

    def setgid(self, gid):
        self.calls.append(("setgid", gid))

    def setuid(self, uid):
        self.calls.append(("setuid", uid))

    def capset(self, effective, permitted, inheritable):
        self.calls.append(("capset", effective, permitted, inheritable))

    def umask(self, mask):
        self.calls.append(("umask", mask))
        return 0o022

    def seccomp_set_filter(self, program, flags):
        self.calls.append(("seccomp", len(program) // 8, flags))
        return None

    def exec_through_helper(self, helper, path, args, env, report_fds, say_on_stderr,
                            execveat_allowed, as_init):
        self.calls.append(("execve", path, list(args)))
        raise Execed(path)
