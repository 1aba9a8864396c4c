"""The container's terminal (``-t``): a pty made *inside* the container.

The pty pair comes from the container's own devpts instance, so ``tty``
inside prints ``/dev/pts/0`` and ``/dev/console`` is that pty (runc does the
same).  The init sends the master end to the runtime over a unix socket
(SCM_RIGHTS) and keeps the slave as its controlling terminal; the runtime
relays bytes and window size between the caller's terminal and the master.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import termios
import tty
from kubirun._native import (MS_BIND, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS,
                             Kernel, open_pty_peer)
from kubirun._native.terminal import set_window_size, window_size
from kubirun.ns.mounts import open_dir_in_root, proc_fd_path


PTY_MESSAGE = b"pty"


# --- inside the container's init -----------------------------------------

def open_pty_inside(kernel: Kernel, root_fd: int) -> tuple[int, int]:
    """Open a (master, slave) pair from the root's ``/dev/pts`` instance.

    ``TIOCGPTPEER`` opens the slave from the master itself, with no path
    lookup of ``/dev/pts/N`` that an image could redirect.
    """
    master = kernel.open_in_root(root_fd, "dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY,
                                 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    return master, kernel.open_pty_peer(master)


def open_pty_in_current_root() -> tuple[int, int]:
    """``exec -t``: a pty from the container's devpts, after joining its
    mount namespace (our root is the container's now)."""
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return master, open_pty_peer(master)


def bind_console(kernel: Kernel, root_fd: int, slave: int) -> None:
    """``/dev/console`` is the container's pty, bound over an empty file."""
    dev = open_dir_in_root(kernel, root_fd, "/dev")
    try:
        fd = os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dev)
        try:
            kernel.mount(proc_fd_path(slave), proc_fd_path(fd), None, MS_BIND)
        finally:
            os.close(fd)
    finally:
        kernel.close(dev)


def hand_over_master(channel: socket.socket, master: int, size: tuple[int, int] | None,
                     wait_for_ack: bool) -> None:
    """Send the master over ``channel``: to our own relay (which sizes the
    pty and acks), or to an engine's ``--console-socket`` (conmon, the
    containerd shim), which expects just the fd, as runc sends it."""
    if size is not None and any(size):
        set_window_size(master, size[0], size[1])
    if wait_for_ack:
        send_master(channel, master)
        return
    socket.send_fds(channel, [b"/dev/ptmx"], [master])
    os.close(master)
    channel.close()


def connect_console_socket(path: str) -> socket.socket:
    """The engine's ``--console-socket``: a unix stream socket it listens on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot connect to console socket: {err.strerror}", path) from None
    return sock


def send_master(channel: socket.socket, master: int) -> None:
    """Hand the master to the runtime and wait until it has sized the pty:
    the program may ask for its window size as soon as it starts."""
    socket.send_fds(channel, [PTY_MESSAGE], [master])
    os.close(master)
    channel.recv(1)  # the runtime's go-ahead (or end-of-file if it died)
    channel.close()


def receive_master(channel: socket.socket, size_from: int) -> int | None:
    """Take the pty master the init sent (None if it failed before sending),
    give it the caller's window size, and let the init go on."""
    with channel:
        message, fds, _flags, _addr = socket.recv_fds(channel, len(PTY_MESSAGE), 1)
        if message == PTY_MESSAGE and fds:
            copy_window_size(size_from, fds[0])
            channel.send(b"\0")
            return fds[0]
    for fd in fds:
        os.close(fd)
    return None


def give_terminal_to(kernel: Kernel, slave: int, uid: int) -> None:
    """The process's terminal is its user's (its group stays devpts' tty,
    gid 5), as runc leaves it: ``mesg``, ``write`` and programs that check
    who owns their tty (ssh-agent, gpg's pinentry) need that."""
    kernel.fchown(slave, uid, -1)


def become_controlling_terminal(kernel: Kernel, slave: int) -> None:
    """New session, the pty as its controlling terminal, and stdio on it."""
    kernel.setsid()
    kernel.set_controlling_terminal(slave)
    for target in (0, 1, 2):
        kernel.dup2(slave, target)
    kernel.close(slave)


# --- in the runtime, the caller's side -----------------------------------

def caller_terminal(stdin: int = 0, stdout: int = 1) -> int:
    """The caller's fd whose window size the container's pty follows."""
    return stdin if os.isatty(stdin) else stdout


def copy_window_size(source_fd: int, master: int) -> None:
    try:
        size = window_size(source_fd)
    except OSError:
        return  # the caller has no terminal: the pty keeps its default size
    set_window_size(master, *size)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class TerminalRelay:
    """Relays the caller's terminal and the container's pty until the
    container's init exits; the caller's terminal is restored on the way out."""

    def __init__(self, master: int, pidfd: int, forward_stdin: bool,
                 stdin: int = 0, stdout: int = 1) -> None:
        self.master = master
        self.pidfd = pidfd
        self.forward_stdin = forward_stdin
        self.stdin = stdin
        self.stdout = stdout
        self._saved_mode: list | None = None

    def __enter__(self) -> "TerminalRelay":
        size_source = caller_terminal(self.stdin, self.stdout)
        signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(size_source, self.master))
        if self.forward_stdin and os.isatty(self.stdin):
            self._saved_mode = termios.tcgetattr(self.stdin)
            # TCSANOW, not setraw's default TCSAFLUSH: keys typed before
            # the container's shell started are kept for it.
            tty.setraw(self.stdin, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        if self._saved_mode is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved_mode)
        os.close(self.master)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        if self.forward_stdin:
            poller.register(self.stdin, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self.master:
                    if not self._pump_output():
                        return
                elif fd == self.pidfd:
                    self._drain_output()
                    return
                elif fd == self.stdin:
                    data = os.read(self.stdin, 65536) if events & (select.POLLIN | select.POLLHUP) else b""
                    if not data:
                        # End of input: send EOF as a terminal would (^D).
                        poller.unregister(self.stdin)
                        _write_all(self.master, b"\x04")
                    else:
                        _write_all(self.master, data)

    def _pump_output(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave is closed
            return False
        if not data:
            return False
        _write_all(self.stdout, data)
        return True

    def _drain_output(self) -> None:
        """After the init exited: read until every slave is closed (EIO).

        Not until EAGAIN: the tty layer hands written bytes to the master
        asynchronously, so the last output may arrive a moment after the
        writer is gone.  The timeout only guards against a slave some
        process still holds (none should: the PID namespace is gone).
        """
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        while poller.poll(1000) and self._pump_output():
            pass
