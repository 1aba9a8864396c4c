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
    sock = await _connect(dialer, host, port)
    ssl_context = None
    if scheme == "HTTPS":
        import ssl

        ssl_context = ssl.create_default_context()
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl.CERT_NONE  # kubelet does not verify a probe's certificate
    reader, writer = await asyncio.open_connection(sock=sock, ssl=ssl_context,
                                                   server_hostname=host if ssl_context else None)
    try:
        fields = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/kubirun", "Accept": "*/*",
                  "Connection": "close", **headers}
        request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                         fields.items()) + "\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"malformed HTTP response {status_line[:80]!r}")
        location, length = None, None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "location":
                location = value.strip()
            elif name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        want = MAX_BODY if length is None else min(length, MAX_BODY)
        body = b""
        while len(body) < want:
            chunk = await reader.read(want - len(body))
            if not chunk:
                break
            body += chunk
        return int(parts[1]), location, body.decode(errors="replace")
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
