"""The container's init: everything between ``fork`` and ``execve``, in
order, as you would write it on a whiteboard.

This code runs in the forked child, which the runtime made PID 1 of a new
PID namespace (``ns.namespaces.fork_into_new_pid_namespace``).  It never
returns: it either becomes the container's program through ``execve`` or
writes why it could not to the report pipe and exits.  A successful
``execve`` closes that pipe (close-on-exec): end-of-file is how the runtime
learns that the container's program is running.
"""
from __future__ import annotations

import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start

from kubirun import _native, process
from kubirun._native import CLONE_NEWPID, CLOSE_RANGE_CLOEXEC, PR_SET_PDEATHSIG, Kernel
from kubirun.errors import ContainerStartError, ExecError, KubirunError, describe
from kubirun.ns import mounts, network, rootfs


class InitConfig:
    """Everything the init needs, decided by the runtime before the fork."""

    def __init__(self, rootfs: str, hostname: str, process: process.ProcessSpec,
                 namespaces: int, die_with_runtime: bool = True) -> None:
        self.rootfs = rootfs
        self.hostname = hostname
        self.process = process
        self.namespaces = namespaces
        self.die_with_runtime = die_with_runtime


def container_init(config: InitConfig, report_fd: int, console_socket=None) -> "NoReturn":  # noqa: F821
    """Set up the container and ``execve`` its program; never returns.

    ``console_socket`` (a unix socket) receives the pty master when the
    process asked for a terminal.
    """
    try:
        _setup_and_exec(config, console_socket)
    except KubirunError as err:
        write_report(report_fd, err.exit_code, str(err))
    except BaseException as err:  # noqa: BLE001 - the child must never unwind into the CLI
        write_report(report_fd, 1, describe(err))
    os._exit(1)


def _setup_and_exec(config: InitConfig, console_socket) -> None:
    kernel = Kernel()
    spec = config.process

    # 1. Die with the runtime: a foreground container must not outlive it.
    if config.die_with_runtime:
        _native.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    # 2. Our own mount, UTS, IPC, network and cgroup namespaces (we are
    #    already PID 1 of our PID namespace).
    _native.unshare(config.namespaces & ~CLONE_NEWPID)

    # 3. Nothing we mount from here on reaches the host.
    rootfs.make_mounts_private(kernel)
    rootfs.bind_root(kernel, config.rootfs)

    # 4. /proc, /sys and /dev inside the new root, resolved inside it.
    root_fd = kernel.open(config.rootfs, os.O_PATH | os.O_DIRECTORY)
    mounts.apply(kernel, root_fd, mounts.standard_plan())

    # 5. The terminal, if asked for: made from the container's devpts.
    slave = None
    if spec.terminal:
        from kubirun import console

        master, slave = console.open_pty_inside(kernel, root_fd)
        console.bind_console(kernel, root_fd, slave)
        console.send_master(console_socket, master)
    kernel.close(root_fd)

    # 6. Switch root: the host's filesystem is gone from view.
    rootfs.pivot_into(kernel, config.rootfs)

    # 7. Name the host and bring up loopback.
    _native.sethostname(config.hostname)
    network.bring_up_loopback()

    # 8. Who runs, where, with which environment (read from the image).
    identity = process.resolve_user(spec.user)
    env = process.build_env(spec.env, config.hostname, identity.home, spec.terminal)
    _make_workdir(spec.cwd)
    process.switch_user(identity)
    _enter_workdir(spec.cwd)
    program = process.find_executable(spec.args[0], env.get("PATH", process.DEFAULT_PATH))

    # 9. Standard streams: the pty, or the caller's own.
    if slave is not None:
        console.become_controlling_terminal(slave)

    # 10. Leave nothing of the runtime behind: signal dispositions Python
    #     changed, and every fd but 0, 1 and 2 (close-on-exec, so the report
    #     pipe still carries an ``execve`` failure).
    _reset_signals()
    _native.close_range(3, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC)

    # 11. Become the container's program.
    process.exec_program(program, spec.args, env)


def _make_workdir(cwd: str) -> None:
    """Create a missing working directory (as root, before the user switch),
    as docker and podman do."""
    if not os.path.isdir(cwd):
        os.makedirs(cwd, 0o755, exist_ok=True)


def _enter_workdir(cwd: str) -> None:
    """``chdir`` and verify that the result is inside the new root: a cwd
    reached through a leaked host fd would be "unreachable" (CVE-2024-21626)."""
    os.chdir(cwd)
    try:
        here = os.getcwd()
    except FileNotFoundError:
        here = ""
    if not here.startswith("/"):
        raise ExecError(f"working directory {cwd!r} is outside the container's root", 1)


def _reset_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive execve.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


# --- the report pipe: one message, or end-of-file on success --------------

def write_report(fd: int, code: int, message: str) -> None:
    try:
        os.write(fd, f"{code}\0{message}".encode(errors="replace"))
    except OSError:
        pass


def read_report(fd: int) -> None:
    """Block until the init's ``execve`` (end-of-file) or its failure report,
    which is raised as ``ContainerStartError`` with the init's exit code."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    if chunks:
        code, _, message = b"".join(chunks).partition(b"\0")
        raise ContainerStartError(message.decode(errors="replace"), int(code or 1))
