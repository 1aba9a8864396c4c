"""``kubirun node serve``: a ``Node`` behind an HTTP+JSON API on a unix
socket (mode 0600: root's only; never TCP), in one asyncio event loop.

    POST   /pods                    apply a manifest (JSON body)      -> the Pod
    GET    /pods                    list                              -> {"items": [Pod...]}
    GET    /pods/NAME               get                               -> the Pod
    DELETE /pods/NAME?grace=N       delete (waits until gone)         -> {}
    GET    /pods/NAME/events        its events                        -> {"items": [...]}
    GET    /pods/NAME/log?container=C&previous=1&tail=N&follow=1      -> text/plain (CRI lines)
    POST   /pods/NAME/exec          {"container", "command"}          -> {"exitCode", "output"}
    GET    /watch                   events of every pod, one JSON object a line, until closed

An error is ``{"error": "one line"}`` with a 4xx/5xx status.  The server
reads a request, answers, closes the connection (HTTP/1.1, Connection:
close): clients are the CLI and curl.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
from urllib.parse import parse_qs, unquote, urlsplit

from kubirun.api import KubirunError
from kubirun.node.supervisor import Node

MAX_BODY = 4 * 1024 * 1024
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           500: "Internal Server Error"}


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server:
    def __init__(self, node: Node, path: str) -> None:
        self.node, self.path = node, path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _answers(self.path):
                raise KubirunError(f"{self.path}: a node already serves there")
            os.unlink(self.path)  # a stale socket of a node that died
        old = os.umask(0o177)  # the socket is made 0600, never wider even for a moment
        try:
            self._server = await asyncio.start_unix_server(self._connection, self.path)
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            method, target, body = await _read_request(reader)
            await self._route(method, target, body, writer)
        except _Error as err:
            _respond(writer, err.status, {"error": str(err)})
        except KubirunError as err:
            status = 404 if "not found" in str(err) else 409 if "exists" in str(err) or \
                "already" in str(err) else 400
            _respond(writer, status, {"error": str(err)})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as err:  # a bug of ours: one line to the client, the traceback here
            self.node.log.exception("node API")
            _respond(writer, 500, {"error": f"internal error: {type(err).__name__}: {err}"})
        finally:
            try:
                await writer.drain()
                writer.close()
            except (ConnectionError, RuntimeError):
                pass

    async def _route(self, method: str, target: str, body: bytes,
                     writer: asyncio.StreamWriter) -> None:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        node = self.node
        if parts == ["pods"] and method == "POST":
            try:
                raw = json.loads(body or b"null")
            except ValueError as err:
                raise _Error(400, f"the manifest is not JSON: {err}") from None
            name = (raw.get("metadata") or {}).get("name") if isinstance(raw, dict) else None
            existed = isinstance(name, str) and name in node.pods
            pod = await node.apply(raw)
            _respond(writer, 200 if existed else 201, pod)
        elif parts == ["pods"] and method == "GET":
            _respond(writer, 200, {"apiVersion": "v1", "kind": "PodList", "items": node.list()})
        elif len(parts) == 2 and parts[0] == "pods" and method == "GET":
            _respond(writer, 200, node.status(parts[1]))
        elif len(parts) == 2 and parts[0] == "pods" and method == "DELETE":
            grace = query.get("grace")
            if grace is not None and not grace.isdigit():
                raise _Error(400, f"grace: expected a number of seconds, got {grace!r}")
            await node.delete(parts[1], None if grace is None else int(grace))
            _respond(writer, 200, {})
        elif len(parts) == 3 and parts[0] == "pods" and parts[2] == "events" and method == "GET":
            _respond(writer, 200, {"items": node.events(parts[1])})
        elif len(parts) == 3 and parts[0] == "pods" and parts[2] == "log" and method == "GET":
            await self._log(parts[1], query, writer)
        elif len(parts) == 3 and parts[0] == "pods" and parts[2] == "exec" and method == "POST":
            try:
                request = json.loads(body or b"{}")
            except ValueError as err:
                raise _Error(400, f"exec: the request is not JSON: {err}") from None
            if not isinstance(request, dict) or not isinstance(request.get("container"),
                                                               (str, type(None))):
                raise _Error(400, "exec: expected {\"container\": NAME or null,"
                                  " \"command\": [...]}")
            command = request.get("command")
            if not isinstance(command, list) or not command or \
                    not all(isinstance(a, str) for a in command):
                raise _Error(400, "exec: command: expected a non-empty list of strings")
            code, output = await node.exec(parts[1], request.get("container"), command)
            _respond(writer, 200, {"exitCode": code, "output": output})
        elif parts == ["watch"] and method == "GET":
            _head(writer, 200, "application/json")
            with node.watch() as events:  # forgotten when the client goes
                async for event in events:
                    writer.write(json.dumps(event).encode() + b"\n")
                    await writer.drain()
        elif parts and parts[0] in ("pods", "watch"):
            raise _Error(405, f"{method} {url.path}: not a method of this API")
        else:
            raise _Error(404, f"{url.path}: no such resource")

    async def _log(self, name: str, query: dict, writer: asyncio.StreamWriter) -> None:
        tail = query.get("tail")
        if tail is not None and not tail.lstrip("-").isdigit():
            raise _Error(400, f"tail: expected a number, got {tail!r}")
        container = query.get("container")
        previous = query.get("previous") in ("1", "true")
        lines = self.node.logs(name, container, previous,
                               None if tail is None or int(tail) < 0 else int(tail))
        _head(writer, 200, "text/plain")
        writer.write("".join(line + "\n" for line in lines).encode())
        if query.get("follow") not in ("1", "true") or previous:
            return
        worker = self.node.pods.get(name)
        if worker is None:
            return
        tracker = self.node._tracker(worker, container)
        instance = tracker.restart_count
        # Followed from where the read above ended: each line the log is
        # written is handed over as written (no await since that read, so
        # none is missed or sent twice, rotations included).
        pending: list[str] = []
        wake = asyncio.Event()

        def listener(number: int, line: str) -> None:
            if number == instance:
                pending.append(line)
                wake.set()

        listeners = worker.log_listeners.setdefault(tracker.name, [])
        listeners.append(listener)
        try:
            while self.node.pods.get(name) is worker:
                await writer.drain()
                try:
                    # the end of the instance is not a line: looked at each 0.2 s
                    await asyncio.wait_for(wake.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
                wake.clear()
                tracker = self.node._tracker(worker, container)
                # ended is judged first: an instance's output is all in its log
                # before it counts as ended (the supervisor drains it first)
                ended = tracker.restart_count != instance or "terminated" in tracker.state or \
                    tracker.state.get("waiting", {}).get("reason") == "CrashLoopBackOff"
                writer.write("".join(line + "\n" for line in pending).encode())
                pending.clear()
                if ended:
                    break  # that instance ended: kubectl logs -f ends with it
        finally:
            listeners.remove(listener)
        await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _Error(400, "not an HTTP request")
    length = 0
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        key, _, value = header.decode("latin-1").partition(":")
        if key.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise _Error(400, "Content-Length: not a number")
            length = int(value.strip())
    if length > MAX_BODY:
        raise _Error(413, f"request body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return parts[0], parts[1], body


def _head(writer: asyncio.StreamWriter, status: int, kind: str,
          length: int | None = None) -> None:
    head = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {kind}\r\n" \
           "Connection: close\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    writer.write((head + "\r\n").encode())


def _respond(writer: asyncio.StreamWriter, status: int, payload: object) -> None:
    body = json.dumps(payload).encode() + b"\n"
    _head(writer, status, "application/json", len(body))
    writer.write(body)


def _answers(path: str) -> bool:
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def serve(node: Node, path: str) -> None:
    """Adopt the pods a previous supervisor left, serve until SIGTERM or
    SIGINT, then leave every pod running (as a kubelet stopping does: the
    next ``serve`` adopts them) and remove the socket."""
    server = Server(node, path)
    await server.start()
    for name in await node.adopt():
        node.log.info("node: pod %s adopted", name)
    node.log.info("node: serving on %s", path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        node.log.info("node: stopping; its pods go on running")
        await server.close()
        await node.detach()
