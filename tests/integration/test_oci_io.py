"""The container's stdio beyond the plain pipes: a terminal handed over a
console socket, and extra fds kept with --preserve-fds; one behaviour per
test, against kubirun and runc (``oci``)."""
from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import threading
import time

from tests.integration.oci_helpers import TIMEOUT, assert_nothing_left


class ConsoleSocket:
    """A unix stream socket that receives one pty master (SCM_RIGHTS)."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.master: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        try:
            self.server.settimeout(TIMEOUT)
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
            if fds:
                self.master = fds[0]
                for extra in fds[1:]:
                    os.close(extra)
        except BaseException as err:  # noqa: BLE001 - reported by wait()
            self.error = err

    def wait(self) -> int:
        self.thread.join(TIMEOUT)
        if self.error is not None:
            raise self.error
        assert self.master is not None, "no pty master was received"
        return self.master

    def close(self) -> None:
        self.server.close()
        if self.master is not None:
            os.close(self.master)


def read_until_closed(fd: int, timeout: float = 10.0) -> bytes:
    """Everything the pty gives until its last slave closes (EIO)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError as err:
            if err.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        data += chunk
    return data


def terminal(config):
    config["process"]["terminal"] = True


def test_console_socket_receives_the_pty_master(oci, bundle, tmp_path):
    b = bundle(["sh", "-c", "tty; echo hi"], edit=terminal)
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        cid = oci.new_id()
        result = oci.create(cid, b, "--console-socket", console.path)
        assert result.returncode == 0, result.stderr
        master = console.wait()
        assert os.isatty(master)
        assert oci.cmd("start", cid).returncode == 0
        output = read_until_closed(master).decode(errors="replace")
        assert "/dev/pts/0" in output
        assert "hi" in output
        oci.wait_status(cid, "stopped")
    finally:
        console.close()


def test_terminal_output_uses_crlf(oci, bundle, tmp_path):
    b = bundle(["echo", "line"], edit=terminal)
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        cid = oci.new_id()
        assert oci.create(cid, b, "--console-socket", console.path).returncode == 0
        master = console.wait()
        assert oci.cmd("start", cid).returncode == 0
        assert read_until_closed(master) == b"line\r\n"
    finally:
        console.close()


def test_the_pty_reaches_stdin(oci, bundle, tmp_path):
    b = bundle(["sh", "-c", "read line; echo got:$line"], edit=terminal)
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        cid = oci.new_id()
        assert oci.create(cid, b, "--console-socket", console.path).returncode == 0
        master = console.wait()
        assert oci.cmd("start", cid).returncode == 0
        os.write(master, b"typed\n")
        assert "got:typed" in read_until_closed(master).decode(errors="replace")
    finally:
        console.close()


def test_terminal_without_console_socket_fails_detached(oci, bundle):
    b = bundle(["true"], edit=terminal)
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert_nothing_left(oci, cid, b)


def test_console_socket_that_does_not_exist_fails(oci, bundle, tmp_path):
    b = bundle(["true"], edit=terminal)
    cid = oci.new_id()
    result = oci.create(cid, b, "--console-socket", str(tmp_path / "nobody-listens"))
    assert result.returncode != 0
    assert result.stderr.strip()
    assert_nothing_left(oci, cid, b)


FD3_EXEC = """import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_fd3(oci, args: list[str], write_end: int, **kw) -> subprocess.CompletedProcess:
    """Run the runtime with ``write_end`` as its fd 3 (and not elsewhere)."""
    return subprocess.run([sys.executable, "-c", FD3_EXEC, str(write_end), *oci.argv(*args)],
                          pass_fds=(write_end,), capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT, **kw)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def test_preserve_fds_passes_fd_3_to_run(oci, bundle):
    b = bundle(["sh", "-c", "echo via-fd3 >&3"])
    cid = oci.new_id()
    r, w = os.pipe()
    try:
        result = _with_fd3(oci, ["run", "--preserve-fds", "1", "--bundle", str(b), cid], w)
        os.close(w)
        w = -1
        assert result.returncode == 0, result.stderr
        assert _read_all(r) == b"via-fd3\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _fds_seen_by_ls(oci, bundle, *extra) -> list[str]:
    """What ``ls /proc/self/fd`` lists in the container when the runtime is
    given a pipe as fd 3 (ls's own directory fd is the lowest free one)."""
    b = bundle(["ls", "/proc/self/fd"])
    cid = oci.new_id()
    r, w = os.pipe()
    try:
        result = _with_fd3(oci, ["run", *extra, "--bundle", str(b), cid], w)
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split(), key=int)
    finally:
        os.close(r)
        os.close(w)


def test_without_preserve_fds_only_stdio_reaches_the_container(oci, bundle):
    assert _fds_seen_by_ls(oci, bundle) == ["0", "1", "2", "3"]  # 3: ls's own


def test_with_preserve_fds_nothing_else_reaches_the_container(oci, bundle):
    assert _fds_seen_by_ls(oci, bundle, "--preserve-fds", "1") == ["0", "1", "2", "3", "4"]


def test_listen_fds_are_passed_through(oci, bundle, tmp_path):
    """systemd socket activation: with LISTEN_FDS=1 in the runtime's
    environment, fd 3 reaches the container, which is told LISTEN_FDS=1 and
    LISTEN_PID=1."""
    import os

    r, w = os.pipe()
    cid = oci.new_id()
    b = bundle(["sh", "-c", "echo \"$LISTEN_FDS $LISTEN_PID\"; echo through-fd3 >&3"])

    def give_fd3():
        os.dup2(w, 3)

    import subprocess

    env = dict(os.environ, LISTEN_FDS="1")
    # LISTEN_PID must be the runtime's own PID (systemd's rule): exec from
    # a shell that knows it.
    argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *oci.argv("run", "--bundle", str(b), cid)]
    try:
        result = subprocess.run(argv, env=env, preexec_fn=give_fd3, pass_fds=(w, 3), capture_output=True,
                                text=True, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        passed = f.read()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 1"
    assert passed.strip() == "through-fd3"
