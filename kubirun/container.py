"""Running a container in the foreground (``kubirun run``): the runtime's
side of the story.

    1. the container gets a directory of its own (``$KUBIRUN_STORE/containers/ID``)
    2. the image becomes a root filesystem (in place, or unpacked there)
    3. one fork makes the container's init, PID 1 of a new PID namespace
       (its steps, up to ``execve``, are in ``kubirun.init``)
    4. the runtime waits on a socket: an error report, the pty master, or
       end-of-file when ``execve`` succeeded
    5. it relays the terminal and forwards signals until the init exits
    6. the exit status becomes ours (128+N for death by signal N)
    7. the container's directory is removed, unless ``--keep``
"""
from __future__ import annotations

import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start
import sys

from kubirun import _native
from kubirun.errors import ContainerStartError, KubirunError
from kubirun.ids import new_id, validate_id
from kubirun.init import InitConfig, container_init, read_report
from kubirun.ns.namespaces import RUN_NAMESPACES, fork_into_new_pid_namespace
from kubirun.process import ProcessSpec
from kubirun.signals import SignalForwarder

DEFAULT_STORE = "/var/lib/kubirun"


def store_dir() -> str:
    return os.environ.get("KUBIRUN_STORE") or DEFAULT_STORE


class RunOptions:
    """What ``kubirun run`` was asked for."""

    def __init__(self, image: str, name: str | None = None, hostname: str | None = None,
                 process: ProcessSpec | None = None, keep: bool = False) -> None:
        self.image = image
        self.name = name
        self.hostname = hostname
        self.process = process or ProcessSpec()
        self.keep = keep


class _Terminated(BaseException):
    """SIGTERM/SIGHUP while preparing: unwind so nothing is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise _Terminated(signum)


def run(options: RunOptions) -> int:
    """Run a container to completion and return its exit status."""
    name = validate_id(options.name or new_id())
    container_dir = os.path.join(store_dir(), "containers", name)
    os.makedirs(os.path.dirname(container_dir), 0o700, exist_ok=True)
    try:
        os.mkdir(container_dir, 0o700)
    except FileExistsError:
        raise KubirunError(f"container name {name!r} is already in use ({container_dir})") from None

    previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        from kubirun.image.source import materialize

        rootfs = materialize(options.image, os.path.join(container_dir, "rootfs"))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        config = InitConfig(
            rootfs=rootfs,
            hostname=options.hostname or name,
            process=options.process,
            namespaces=RUN_NAMESPACES,
        )
        return start_and_wait(config)
    except _Terminated as err:
        return err.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not options.keep:
            remove_container_dir(container_dir)


def remove_container_dir(path: str) -> None:
    try:
        os.rmdir(path)  # a root used in place leaves the directory empty
    except FileNotFoundError:
        pass
    except OSError:
        import shutil  # rmtree never follows symlinks out of the tree

        shutil.rmtree(path, ignore_errors=True)


def start_and_wait(config: InitConfig) -> int:
    """Fork the container's init, wait for its ``execve``, relay, reap."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    console_ours = console_theirs = None
    if config.process.terminal:
        import socket

        console_ours, console_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = fork_into_new_pid_namespace()
    if pid == 0:
        os.close(report_r)
        container_init(config, report_w, console_theirs)  # never returns
    os.close(report_w)
    pidfd = _native.pidfd_open(pid)
    try:
        with SignalForwarder(pidfd):
            master = None
            if console_ours is not None:
                from kubirun import console

                console_theirs.close()
                master = console.receive_master(console_ours, console.caller_terminal())
            try:
                read_report(report_r)
            except ContainerStartError:
                if master is not None:
                    os.close(master)
                wait_for_exit(pid)
                raise
            if master is not None:
                with console.TerminalRelay(master, pidfd, config.process.interactive) as relay:
                    relay.run()
            return wait_for_exit(pid)
    finally:
        os.close(pidfd)
        os.close(report_r)


def wait_for_exit(pid: int) -> int:
    """Reap ``pid``; its exit status, or 128+N if signal N killed it."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
