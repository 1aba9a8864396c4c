"""A seccomp agent for the tests (``linux.seccomp.listenerPath``), run as
its own process: ``python seccomp_agent.py SOCKET LOG``.

It listens on SOCKET; for each connection it reads the container process
state (JSON) and the listener fd (SCM_RIGHTS) a runtime sends, and appends
a line to LOG: ``{"state": <the JSON>, "fds": <how many fds came>}``.
Then it answers the notifications of every listener it holds:

    mkdir, mkdirat        SECCOMP_USER_NOTIF_FLAG_CONTINUE (the call goes on)
    chmod, fchmodat(2)    EPERM
    anything else         ENOSYS

and appends ``{"call": NAME, "pid": PID}`` to LOG for each (with
AGENT_HOLD=1 in its environment it answers none: the calls wait).  It
prints "ready" once it listens, and runs until killed.  Test-only: plain ioctls
through ``fcntl`` (struct layouts of linux/seccomp.h).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import select
import socket
import struct
import sys

# struct seccomp_notif: u64 id, u32 pid, u32 flags, struct seccomp_data
# (int nr, u32 arch, u64 instruction_pointer, u64 args[6]) = 80 bytes.
NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp: u64 id, s64 val, s32 error, u32 flags = 24 bytes.
RESP = struct.Struct("=QqiI")


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("!") << 8) | nr  # _IOWR('!', nr, size)


NOTIF_RECV = _iowr(0, NOTIF.size)
NOTIF_SEND = _iowr(1, RESP.size)
FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE
HOLD = os.environ.get("AGENT_HOLD") == "1"

SYSCALLS = {
    "x86_64": {83: "mkdir", 258: "mkdirat", 90: "chmod", 268: "fchmodat", 452: "fchmodat2"},
    "aarch64": {34: "mkdirat", 53: "fchmodat", 452: "fchmodat2"},
}[platform.machine()]


def answer(call: str) -> tuple[int, int]:
    """(error, flags) of the response to ``call``."""
    if call in ("mkdir", "mkdirat"):
        return 0, FLAG_CONTINUE
    if call in ("chmod", "fchmodat", "fchmodat2"):
        return -errno.EPERM, 0
    return -errno.ENOSYS, 0


def log(path: str, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """The state JSON and the fds sent with it.  Read until the JSON is
    whole, not to end of file: runc 1.1 leaves its end open."""
    data, fds = b"", []
    while True:
        chunk, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
        data += chunk
        try:
            return json.loads(data), fds
        except ValueError:
            if not chunk:
                return {"unreadable": data.decode(errors="replace")}, fds


def handle(fd: int, path: str) -> None:
    buf = bytearray(NOTIF.size)
    try:
        fcntl.ioctl(fd, NOTIF_RECV, buf)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.EINTR):
            return  # the caller died or was interrupted before we read it
        raise
    notif_id, pid, _, nr, _, _, *_ = NOTIF.unpack(buf)
    call = SYSCALLS.get(nr, f"nr{nr}")
    log(path, {"call": call, "pid": pid})
    if HOLD:
        return
    error, flags = answer(call)
    try:
        fcntl.ioctl(fd, NOTIF_SEND, bytearray(RESP.pack(notif_id, 0, error, flags)))
    except OSError as err:
        if err.errno != errno.ENOENT:  # the caller is gone
            raise


def main(socket_path: str, log_path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(16)
    poller = select.poll()
    poller.register(server.fileno(), select.POLLIN)
    print("ready", flush=True)
    while True:
        for fd, events in poller.poll():
            if fd == server.fileno():
                conn, _ = server.accept()
                with conn:
                    state, fds = receive(conn)
                log(log_path, {"state": state, "fds": len(fds)})
                for listener in fds:
                    poller.register(listener, select.POLLIN)
            elif events & select.POLLIN:
                handle(fd, log_path)
            elif events & (select.POLLHUP | select.POLLERR):
                poller.unregister(fd)  # every process of that filter is gone
                os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
