"""``kubirun demo escape``: the lesson of CVE-2024-21626 ("Leaky Vessels").

runc before 1.1.12 left a file descriptor of the host's /sys/fs/cgroup
open in the container's init.  A config (or an image's WorkingDir) naming
``/proc/self/fd/N`` as the working directory made ``chdir`` follow that
descriptor: the container's program started *in the host's file system*,
and ``../../..`` led to the host's root.

kubirun's init, too, holds host objects open until ``execve`` (its state's
lock, its cgroup directory, the exec fifo...).  The demo asks for each
``/proc/self/fd/N`` in turn, with a program that would list the host's
root; kubirun refuses every one, and says why: after ``chdir`` the init
checks where it landed (``process.enter_workdir``: ``getcwd`` fails, or
the kernel's answer is "(unreachable)", outside the new root).
"""
from __future__ import annotations

import os
import subprocess
import sys

FDS = range(3, 13)
# What the escape would do: list the host's root from the leaked directory.
ATTACK = "echo ESCAPED; ls ../../../../../.."


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def attempt(image: str, fd: int) -> tuple[int, str, str]:
    """One run with ``-w /proc/self/fd/FD``: exit status, stdout, and
    kubirun's message."""
    result = subprocess.run([sys.executable, "-m", "kubirun", "run", "--network", "none",
                             "-w", f"/proc/self/fd/{fd}", image, "--", "sh", "-c", ATTACK],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result.returncode, result.stdout, message


def escape(image: str) -> int:
    _heading("CVE-2024-21626: a working directory through a leaked file descriptor")
    print("runc < 1.1.12 leaked an fd of the host's /sys/fs/cgroup into the container's init;")
    print("`cwd: /proc/self/fd/7` started the program inside the host's file system, and")
    print("`cat ../../../../etc/shadow` read the host's files.  Here each fd is tried in turn:")
    print(f"  kubirun run -w /proc/self/fd/N {os.path.basename(image)} -- sh -c '{ATTACK}'\n")
    escaped = outside = 0
    for fd in FDS:
        code, out, message = attempt(image, fd)
        if "ESCAPED" in out or code == 0:
            escaped += 1
            print(f"  fd {fd:>2}: RAN (exit {code}): {out.strip()[:60]!r}")
            continue
        outside += "outside the container's root" in message
        print(f"  fd {fd:>2}: refused (exit {code}): {message.removeprefix('kubirun: ')}")
    if escaped:
        print(f"\nShown: {escaped} of {len(FDS)} working directories through /proc/self/fd ran:"
              " this kubirun is vulnerable.")
        return 1
    if outside:
        print(f"\nShown: all {len(FDS)} tries refused before the program ran; {outside} of them led"
              " to a host directory the init still held open (its cgroup: the CVE's very path),"
              " caught because the init checks, after chdir, that it landed inside the"
              " container's root.")
    else:
        print(f"\nShown: all {len(FDS)} tries refused before the program ran; none of these fds"
              " was a host directory here (on a cgroup v1 host one is: the container's cgroup),"
              " and one that is would be caught by the init's check, after chdir, that it landed"
              " inside the container's root.")
    return 0
