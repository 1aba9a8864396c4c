"""A terminal's ioctls: its window size and the controlling terminal.

A module of its own, imported (with fcntl, struct and termios) by
kubirun.console only, so that a start without a terminal never pays for
them, and imported at the top, so that they are loaded before the
container's root switch, after which Python's own files are out of reach.
"""
from __future__ import annotations

import fcntl
import struct
import termios


def window_size(fd: int) -> tuple[int, int, int, int]:
    """A terminal's size: rows, columns, x and y pixels (TIOCGWINSZ)."""
    return struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))


def set_window_size(fd: int, rows: int, columns: int, xpixel: int = 0, ypixel: int = 0) -> None:
    """Size a terminal (TIOCSWINSZ): its program gets SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, xpixel, ypixel))


def set_controlling_terminal(fd: int) -> None:
    """Make the terminal at ``fd`` the session's controlling one (TIOCSCTTY;
    the caller leads a session without one)."""
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
