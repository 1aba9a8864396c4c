"""Sockets in a pod's network namespace, for httpGet and tcpSocket probes
and hooks.

A pod of network "none" has a namespace of its own that the supervisor
(in the host's) cannot reach, and the node may use only ``kubirun.api``
and the standard library, which on Python < 3.12 has no ``setns``.  But a
socket belongs to the namespace it was made in, wherever it is used: so a
tiny helper per pod, started by ``nsenter --net`` inside the pod's network
namespace, makes sockets there on request and hands them back over a unix
socket (SCM_RIGHTS); the supervisor then connects and talks on them in its
own event loop.  The helper makes sockets, nothing else, and ends when the
supervisor closes its end (or dies).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

# The helper: one request (a family, as text) -> one new stream socket.
_HELPER = """\
import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
while True:
    req = s.recv(8)
    if not req:
        break
    fam = socket.AF_INET6 if req == b"6" else socket.AF_INET
    c = socket.socket(fam, socket.SOCK_STREAM)
    socket.send_fds(s, [b"k"], [c.fileno()])
    c.close()
"""


class Dialer:
    """Makes stream sockets in the network namespace of process ``pid``
    (a pod sandbox's PID 1); None: in the supervisor's own."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", sys.executable, "-S", "-c",
                 _HELPER, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours

    async def socket(self, family: int = socket.AF_INET) -> socket.socket:
        if self.pid is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            return sock
        async with self._lock:
            if self._sock is None:
                self._start()
            loop = asyncio.get_running_loop()
            assert self._sock is not None
            await loop.sock_sendall(self._sock, b"6" if family == socket.AF_INET6 else b"4")
            readable = loop.create_future()
            loop.add_reader(self._sock.fileno(),
                            lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(self._sock.fileno())
            _, fds, _, _ = socket.recv_fds(self._sock, 8, 1)
        if not fds:
            raise OSError(f"no socket from the helper in the network namespace of {self.pid}")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """End the helper (end of file on its socket) and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        process, self._process = self._process, None
        if process is None:
            return
        pidfd = os.pidfd_open(process.pid)
        try:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
            try:
                await asyncio.wait_for(done, 5)
            except asyncio.TimeoutError:
                process.kill()
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        process.wait()
