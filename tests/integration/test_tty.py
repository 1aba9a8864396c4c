"""`kubirun run -t`: a pty made inside the container, driven here through a
pty of the test's own, as a person at a terminal would."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time

from tests.conftest import KUBIRUN_SCRIPT


def _run_on_pty(args: list[str], typed: bytes = b"", rows: int = 24, cols: int = 80,
                timeout: float = 20, typed_ahead: bytes = b"") -> tuple[int, bytes, list, list]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    mode_before = termios.tcgetattr(slave)
    if typed_ahead:
        os.write(master, typed_ahead)  # keys typed before kubirun even starts
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), *args], stdin=slave, stdout=slave, stderr=slave)
    output = b""
    try:
        if typed:
            time.sleep(0.3)  # let the shell start and print its prompt
            os.write(master, typed)
        deadline = time.monotonic() + timeout
        os.set_blocking(master, False)
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                output += os.read(master, 4096)
            except BlockingIOError:
                time.sleep(0.02)
        code = proc.wait(timeout=5)
        try:
            output += os.read(master, 65536)
        except (BlockingIOError, OSError):
            pass
        mode_after = termios.tcgetattr(slave)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    return code, output, mode_before, mode_after


def test_tty_inside_is_a_pts_of_the_container(busybox_dir):
    code, output, _, _ = _run_on_pty(["run", "-t", str(busybox_dir), "--", "tty"])
    assert code == 0
    assert output.strip() == b"/dev/pts/0"


def test_term_is_set_with_a_tty(busybox_dir):
    code, output, _, _ = _run_on_pty(["run", "-t", str(busybox_dir), "--", "sh", "-c", "echo $TERM"])
    assert output.strip() == b"xterm"


def test_window_size_is_relayed(busybox_dir):
    code, output, _, _ = _run_on_pty(["run", "-t", str(busybox_dir), "--", "stty", "size"], rows=33, cols=101)
    assert code == 0
    assert output.strip() == b"33 101"


def test_console_is_the_pty(busybox_dir):
    code, output, _, _ = _run_on_pty(["run", "-t", str(busybox_dir), "--", "sh", "-c",
                                      "echo via-console > /dev/console"])
    assert code == 0
    assert b"via-console" in output


def test_interactive_input_reaches_the_container_and_terminal_is_restored(busybox_dir):
    code, output, before, after = _run_on_pty(["run", "-it", str(busybox_dir), "--", "sh"],
                                               typed=b"echo typed-$((6*7))\rexit 3\r")
    assert code == 3
    assert b"typed-42" in output
    assert after == before, "the caller's terminal was not restored"


def test_window_resize_reaches_the_container(busybox_dir):
    import signal

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.1; done"
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "-t", str(busybox_dir), "--", "sh", "-c", script],
                            stdin=slave, stdout=slave, stderr=slave)
    try:
        output = b""
        deadline = time.monotonic() + 20
        while b"ready" not in output and time.monotonic() < deadline:
            output += os.read(master, 4096)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc.send_signal(signal.SIGWINCH)  # what the terminal would send us
        assert proc.wait(timeout=20) == 0
        os.set_blocking(master, False)
        try:
            output += os.read(master, 4096)
        except BlockingIOError:
            pass
        assert b"40 120" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_keys_typed_before_the_program_starts_reach_it(busybox_dir):
    code, output, _, _ = _run_on_pty(["run", "-it", str(busybox_dir), "--", "head", "-n1"],
                                     typed_ahead=b"typed-early\n", timeout=10)
    assert code == 0, output
    assert b"typed-early" in output
