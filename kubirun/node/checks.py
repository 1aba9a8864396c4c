"""The probe and hook actions, run in the supervisor's event loop: tcpSocket
and httpGet on sockets made in the pod's network namespace (``netns``),
exec through ``kubirun.api`` (``Container.exec``: the fork server, never a
new interpreter per probe).  Each returns kubelet's ``(result, output)``:
the output is what the ``Unhealthy`` event says.

The semantics are ``prober``'s (200-399 is success, at most 10 KiB of body
read, redirects to the same host followed, elsewhere: success); these are
their asynchronous, namespace-aware forms.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket

from kubirun.api import Container, KubirunError, Stdio
from kubirun.node.netns import Dialer
from kubirun.node.prober import FAILURE, MAX_BODY, MAX_REDIRECTS, SUCCESS

MAX_OUTPUT = 10 * 1024  # of an exec probe, as kubelet keeps


async def _connect(dialer: Dialer, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await dialer.socket(family)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp(dialer: Dialer, host: str, port: int, timeout: float) -> tuple[str, str]:
    try:
        sock = await asyncio.wait_for(_connect(dialer, host, port), timeout)
    except asyncio.TimeoutError:
        return FAILURE, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as err:
        return FAILURE, f"dial tcp {host}:{port}: {err.strerror or err}"
    sock.close()
    return SUCCESS, ""


async def http(dialer: Dialer, host: str, port: int, path: str = "/", timeout: float = 1.0,
               headers: dict[str, str] | None = None, scheme: str = "HTTP") -> tuple[str, str]:
    from urllib.parse import urljoin, urlsplit

    target = path or "/"
    base = f"{scheme.lower()}://{host}:{port}"
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, location, body = await asyncio.wait_for(
                _get(dialer, host, port, target, headers or {}, scheme), timeout)
        except asyncio.TimeoutError:
            return FAILURE, (f'Get "{base}{target}": context deadline exceeded'
                             " (Client.Timeout exceeded while awaiting headers)")
        except (OSError, ValueError) as err:
            return FAILURE, f'Get "{base}{target}": {getattr(err, "strerror", None) or err}'
        if 300 <= status < 400 and location:
            url = urlsplit(urljoin(f"{base}{target}", location))
            if url.hostname != host or (url.port or port) != port:
                return SUCCESS, f"Probe terminated redirects, Response body: {body}"
            target = url.path + (f"?{url.query}" if url.query else "")
            continue
        if 200 <= status < 400:
            return SUCCESS, body
        return FAILURE, f"HTTP probe failed with statuscode: {status}"
    return FAILURE, f"stopped after {MAX_REDIRECTS} redirects"


async def _get(dialer: Dialer, host: str, port: int, target: str, headers: dict[str, str],
               scheme: str) -> tuple[int, str | None, str]:
    fields = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/kubirun", "Accept": "*/*",
              "Connection": "close", **headers}
    request = (f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                     fields.items()) + "\r\n").encode("latin-1")
    sock = await _connect(dialer, host, port)
    if scheme == "HTTPS":
        return await _get_tls(sock, host, request)
    # Plain HTTP on the socket itself: no stream objects per probe (a probe
    # a second per container, on hundreds of containers, is this loop's work)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 65536:
                raise ValueError("HTTP response headers over 64 KiB")
        status, location, length, body = _parse_head(data)
        want = MAX_BODY if length is None else min(length, MAX_BODY)
        while len(body) < want:
            chunk = await loop.sock_recv(sock, want - len(body))
            if not chunk:
                break
            body += chunk
        return status, location, body[:want].decode(errors="replace")
    finally:
        sock.close()


def _parse_head(data: bytes) -> tuple[int, str | None, int | None, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"malformed HTTP response {status_line[:80]!r}")
    location, length = None, None
    for line in header_lines:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "location":
            location = value
        elif name == "content-length" and value.isdigit():
            length = int(value)
    return int(parts[1]), location, length, body


async def _get_tls(sock: socket.socket, host: str,
                   request: bytes) -> tuple[int, str | None, str]:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # kubelet does not verify a probe's certificate
    reader, writer = await asyncio.open_connection(sock=sock, ssl=context,
                                                   server_hostname=host)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        while b"\r\n\r\n" not in data and len(data) <= 65536:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        status, location, length, body = _parse_head(data)
        want = MAX_BODY if length is None else min(length, MAX_BODY)
        while len(body) < want:
            chunk = await reader.read(want - len(body))
            if not chunk:
                break
            body += chunk
        return status, location, body[:want].decode(errors="replace")
    finally:
        writer.close()


async def run_exec(container: Container, command: list[str],
                   timeout: float | None) -> tuple[int | None, str]:
    """``command`` in ``container``: its exit code (None: it timed out and
    was killed) and its output (stdout and stderr, at most 10 KiB)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            process = container.exec(list(command),
                                     stdio=Stdio(stdout=write_end, stderr=write_end))
        finally:
            os.close(write_end)
        waiting = asyncio.ensure_future(process.wait_async())
        done, _ = await asyncio.wait({waiting}, timeout=timeout)
        timed_out = not done
        if timed_out:
            try:
                os.kill(process.pid, signal.SIGKILL)  # the fork server's child: ours to end
            except ProcessLookupError:
                pass
        try:
            status = await waiting
        except KubirunError:
            status = None
        os.set_blocking(read_end, False)
        try:
            output = os.read(read_end, MAX_OUTPUT)
        except BlockingIOError:
            output = b""
    finally:
        os.close(read_end)
    if timed_out or status is None:
        return None, output.decode(errors="replace")
    return status.code, output.decode(errors="replace")


async def exec_probe(container: Container, command: list[str], timeout: float) -> tuple[str, str]:
    try:
        code, output = await run_exec(container, command, timeout)
    except KubirunError as err:
        return FAILURE, str(err)
    if code is None:
        return FAILURE, f"command {command!r} timed out"
    return (SUCCESS, output) if code == 0 else (FAILURE, output or
                                                 f"command {command!r} exited {code}")
