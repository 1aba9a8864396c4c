"""The ``grpc`` probe: one ``grpc.health.v1.Health/Check`` call, as
kubelet makes it, on a socket of the pod's network namespace (``netns``).

gRPC libraries dial addresses themselves, in the caller's namespace; a
probe of a pod with network "none" must talk on a socket made in the pod's.
So this is the smallest client that does that one call over cleartext
HTTP/2 (prior knowledge, as gRPC's ``insecure`` channels): the preface, a
SETTINGS frame, a HEADERS frame (HPACK literals, no Huffman, no table), a
DATA frame with the request message; then frames are read until the
response message and the end of the stream.  The response's headers are
never decoded (that needs HPACK's Huffman table and dynamic table): a
``SERVING`` message is success, anything else failure, as kubelet decides.
"""
from __future__ import annotations

import asyncio
import socket
import struct

from kubirun.node.netns import Dialer
from kubirun.node.prober import FAILURE, SUCCESS

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
STREAM = 1
MAX_FRAME = 1 << 14  # the default SETTINGS_MAX_FRAME_SIZE we accept
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def _integer(value: int, prefix: int) -> bytes:
    """HPACK's integer (RFC 7541 5.1) with an N-bit prefix, flags zero."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes([value])
    out, value = bytearray([top]), value - top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name (RFC 7541 6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _integer(len(raw_name), 7) + raw_name + \
        _integer(len(raw_value), 7) + raw_value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def request(authority: str, service: str) -> bytes:
    """All the client sends: preface, SETTINGS, HEADERS and DATA."""
    headers = b"".join(_literal(name, value) for name, value in (
        (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers"),
        ("user-agent", "kube-probe/kubirun")))
    raw = service.encode()
    message = (b"\x0a" + _varint(len(raw)) + raw) if raw else b""  # HealthCheckRequest
    body = b"\x00" + struct.pack(">I", len(message)) + message  # not compressed
    return (PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, STREAM, headers)
            + _frame(DATA, END_STREAM, STREAM, body))


def serving_status(message: bytes) -> int:
    """HealthCheckResponse's ``status`` (field 1, an enum): 0 if absent."""
    i, status = 0, 0
    while i < len(message):
        key, i = _read_varint(message, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(message, i)
            if field == 1:
                status = value
        elif wire == 2:
            length, i = _read_varint(message, i)
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"malformed HealthCheckResponse (wire type {wire})")
    return status


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("malformed HealthCheckResponse (varint)")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 128:
            return value, i


async def _call(dialer: Dialer, host: str, port: int, service: str) -> bytes | None:
    """The response message (None: the stream ended without one)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await dialer.socket(family)
    try:
        await loop.sock_connect(sock, (host, port))
        authority = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        await loop.sock_sendall(sock, request(authority, service))
        buffer, body = b"", b""
        while True:
            while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise ConnectionError("connection closed by the server")
                buffer += chunk
                if len(buffer) > 9 + MAX_FRAME + 65536:
                    raise ValueError("HTTP/2 frame too large")
            length = int.from_bytes(buffer[:3], "big")
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9:9 + length], buffer[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                await loop.sock_sendall(sock, _frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                await loop.sock_sendall(sock, _frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                raise ConnectionError("the server sent GOAWAY")
            elif stream == STREAM and kind == RST_STREAM:
                raise ConnectionError(f"stream reset (HTTP/2 error"
                                      f" {int.from_bytes(payload[:4], 'big')})")
            elif stream == STREAM and kind == DATA:
                if flags & PADDED and payload:
                    payload = payload[1:len(payload) - payload[0]]
                body += payload
            if stream == STREAM and kind in (DATA, HEADERS) and flags & END_STREAM:
                break
        if len(body) < 5:
            return None  # no message: an error status, in trailers
        if body[0]:
            raise ValueError("compressed gRPC message (none was offered)")
        return body[5:5 + int.from_bytes(body[1:5], "big")]
    finally:
        sock.close()


async def check(dialer: Dialer, host: str, port: int, service: str,
                timeout: float) -> tuple[str, str]:
    """kubelet's ``(result, output)`` of a grpc probe."""
    try:
        message = await asyncio.wait_for(_call(dialer, host, port, service), timeout)
    except asyncio.TimeoutError:
        return FAILURE, f"timeout: health rpc did not complete within {timeout:g}s"
    except (OSError, ValueError) as err:
        return FAILURE, f"error: health rpc probe failed: {getattr(err, 'strerror', None) or err}"
    if message is None:
        return FAILURE, "error: health rpc probe failed: no response message (an error status)"
    try:
        status = serving_status(message)
    except ValueError as err:
        return FAILURE, f"error: health rpc probe failed: {err}"
    if status != 1:
        return FAILURE, f'service unhealthy (responded with "{STATUSES.get(status, status)}")'
    return SUCCESS, ""
