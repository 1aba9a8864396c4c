"""Sockets in a pod's network namespace, for httpGet and tcpSocket probes
and hooks.

A pod of network "none" has a namespace of its own that the supervisor
(in the host's) cannot reach.  But a socket belongs to the namespace it
was made in, wherever it is used: so the fork server makes one there
(``kubirun.api.Container.socket`` of the pod's sandbox) and hands it over,
and the supervisor connects and talks on it in its own event loop.  No
process per pod, no thread: one request to the fork server per socket.
"""
from __future__ import annotations

import socket

from kubirun.api import Container


class Dialer:
    """Makes non-blocking stream sockets in the network namespace of
    ``sandbox`` (a pod's sandbox container); None: in the supervisor's own."""

    def __init__(self, sandbox: Container | None) -> None:
        self.sandbox = sandbox

    async def socket(self, family: int = socket.AF_INET) -> socket.socket:
        if self.sandbox is None:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        else:
            # A round trip to the fork server (well under a millisecond):
            # made synchronously, as the supervisor's other requests to it.
            sock = self.sandbox.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Nothing held: kept for the callers' symmetry."""
