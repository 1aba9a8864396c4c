"""kubirun as a library: what an orchestrator (and ``kubirun.node``) may
import.  Everything else in the package is kubirun's own business.

    from kubirun.api import Runtime, Stdio

    with Runtime(root="/run/my-orchestrator", store="/var/lib/my-images") as runtime:
        box = runtime.create("web", "/bundles/web", stdio=Stdio(stdout=Stdio.PIPE))
        box.start()
        print(box.stdout.read())
        print(box.wait(timeout=10))      # ExitStatus(code=0, signal=None, oom_killed=False)
        box.delete()

        pod = runtime.sandbox("pod", network="bridge", hostname="pod")
        app = runtime.run_image("busybox.tar.gz", ["httpd", "-f"], sandbox=pod)
        for event in runtime.events(app.id, stats_interval=10):   # or `async for`
            ...                          # StatsEvent, OOMEvent, then ExitEvent(status)

``Runtime.create`` runs an OCI bundle, ``Runtime.run_image`` an image (as
``kubirun run`` does, detached), ``Runtime.sandbox`` a pod sandbox whose
network, IPC and UTS namespaces image containers join.  Each container's
stdio is its own (``Stdio``: /dev/null, inherited, pipes, files appended,
or a pty whose master the caller gets).

Safe from any thread and from asyncio: no call installs a signal handler,
forks the caller, or changes its umask, working directory, environment,
dumpable flag or fds (every fd it opens is close-on-exec and closed by
``wait``/``delete``).

In asyncio, await the ``_async`` twins; the plain calls block the loop
while they work (a create, 10-20 ms)::

    box = await runtime.create_async("web", "/bundles/web")   # also run_image_async,
    await box.start_async()                                   # sandbox_async, exec_async
    status = await box.wait_async()
    await box.delete_async()

``create_async``, ``run_image_async``, ``sandbox_async`` and ``exec_async``
send their request to the fork server and await its answer on the running
loop (no thread): many are in flight at once, but the server makes one
container at a time, so 100 creates take about as long as 100 in a row;
what changes is that the loop goes on meanwhile.  Before the request, a
short synchronous part: the stdio fds opened, and (``exec_async``,
``run_image_async`` with a sandbox) the container's state read.
``start_async`` and ``delete_async`` are done in this process (lock,
state, cgroups, the init released or killed), in the loop's default
executor.  Cancelling an awaited create (or exec) leaves nothing: the
server drops the request, or removes what it made for a caller who hung
up; cancelled ``start_async``/``delete_async`` still complete.  Containers are forked by
a fork server (``kubirun.forkserver``), started on first use, which reaps
them and records how PID 1 ended in the container's state directory: a
``Runtime`` started later (a restarted orchestrator) reads it with
``runtime.load(id).exit_status``.  An orchestrator killed (``kill -9``)
leaves its fork server running while its containers do, to reap and
record them: their exit statuses survive it.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading

from kubirun.base.errors import KubirunError
from kubirun.events import Event, Events, ExitEvent, OOMEvent, StatsEvent
from kubirun.exitstatus import ExitStatus

TYPE_CHECKING = False  # typing costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Container", "Event", "ExitEvent", "ExitStatus", "KubirunError", "OOMEvent", "Process",
           "Runtime", "StatsEvent", "Stdio"]


class Stdio:
    """Where a container's (or exec'd process's) stdin, stdout and stderr
    go, each one of: ``Stdio.DEVNULL`` (the default), ``Stdio.INHERIT``
    (the caller's own), ``Stdio.PIPE`` (the caller reads or writes the
    other end: ``container.stdout``...), a path (stdin read from it,
    stdout/stderr appended to it, made if missing) or an open fd (dup'd)."""

    DEVNULL, INHERIT, PIPE = "devnull", "inherit", "pipe"
    PTY: "Stdio"  # Stdio(terminal=True), below

    def __init__(self, stdin: str | int = DEVNULL, stdout: str | int = DEVNULL,
                 stderr: str | int = DEVNULL, *, terminal: bool = False) -> None:
        """``terminal``: the process gets a new pty as its controlling
        terminal and its stdin, stdout and stderr (the others are then
        ignored); the caller gets the master as ``.pty`` (a binary file
        object, read and write, closed by ``delete``/``wait``)."""
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.terminal = terminal
        if terminal:
            self.stdin = self.stdout = self.stderr = Stdio.DEVNULL

    def open(self) -> tuple[list[int], list]:
        """The three fds to hand over (ours to close once sent), and the
        caller's ends of the pipes (file objects, or None)."""
        given, ends = [], []
        try:
            for target, how in enumerate((self.stdin, self.stdout, self.stderr)):
                fd, end = _open_one(target, how)
                given.append(fd)
                ends.append(end)
        except BaseException:
            for fd in given:
                os.close(fd)
            for end in ends:
                if end is not None:
                    end.close()
            raise
        return given, ends


Stdio.PTY = Stdio(terminal=True)


def _open_one(target: int, how: str | int):
    if how == Stdio.DEVNULL:
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC), None
    if how == Stdio.INHERIT:
        return os.dup(target), None
    if how == Stdio.PIPE:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        if target == 0:
            return read_end, os.fdopen(write_end, "wb", buffering=0)
        return write_end, os.fdopen(read_end, "rb", buffering=0)
    if isinstance(how, int):
        return os.dup(how), None
    if isinstance(how, (str, os.PathLike)):
        flags = os.O_RDONLY if target == 0 else os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            return os.open(how, flags | os.O_CLOEXEC, 0o640), None
        except OSError as err:
            raise KubirunError(f"stdio: cannot open {os.fspath(how)}: {err.strerror}") from None
    raise KubirunError(f"stdio: expected Stdio.DEVNULL, INHERIT, PIPE, a path or an fd,"
                       f" got {how!r}")


class _ForkServer:
    """Our connection to the fork server: started on first use (by
    ``posix_spawn``, in a session of its own), one socket pair per request."""

    def __init__(self) -> None:
        from kubirun import forkserver

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(theirs.fileno(), True)
        from kubirun.base import jsonio

        code = ("import sys; sys.path[:0] = " + jsonio.dumps([p for p in sys.path if p])
                + "; from kubirun.forkserver import serve; serve(" + str(theirs.fileno()) + ")")
        try:
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-S", "-c", code],
                                      dict(os.environ), setsid=True)
        finally:
            theirs.close()
        self.control = ours
        self.lock = threading.Lock()  # one sender at a time on the control socket
        self.wire = forkserver
        self.ended = ""  # how it ended, once alive() has seen it

    def request(self, message: dict, fds: list[int] = ()) -> tuple[socket.socket, dict | None]:
        """Send ``message`` on a new socket pair; the pair's end for the
        answer (open: a watch answers later) and, unless ``message`` is a
        watch, the answer (with ``"fds"``: those that came with it, the
        caller's to close)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self.lock:
                self.wire.send(self.control, {"op": "request"}, [theirs.fileno()])
        finally:
            theirs.close()
        self.wire.send(mine, message, fds)
        if message["op"] == "watch":
            return mine, None
        try:
            answer, received = self.wire.receive(mine)
        finally:
            mine.close()
        return mine, _checked(answer, received)

    async def request_async(self, message: dict, fds: list[int],
                            undo: "Callable[[dict], None]") -> dict:
        """``request`` on the running loop: the request sent and its answer
        awaited there (non-blocking sockets, loop readers), so that many are
        in flight at once without a thread each; the server serves them in
        turn.  ``fds`` are closed once sent (or on failure).

        Cancelled once sent, we hang up (``shutdown``): the server then
        makes nothing, or removes what it made, since its answer cannot be
        delivered; an answer that came before the hang-up is read here and
        handed to ``undo`` (which removes what it names), then
        CancelledError goes on."""
        import asyncio

        from kubirun.base import jsonio

        loop = asyncio.get_running_loop()
        data = jsonio.dumps(message).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            mine.setblocking(False)
            try:
                # No lock: a SOCK_SEQPACKET datagram (fds with it) is atomic,
                # and a sending thread's lock must not stall the loop.
                await _send_async(loop, self.control, _REQUEST, [theirs.fileno()])
            finally:
                theirs.close()
            try:
                await _send_async(loop, mine, data, fds)
            finally:
                for fd in fds:
                    os.close(fd)
                fds = []
            try:
                answer, received = await _receive_async(loop, mine)
            except BaseException:
                self._hang_up(mine, undo)
                raise
        finally:
            for fd in fds:
                os.close(fd)
            mine.close()
        return _checked(answer, received)

    def _hang_up(self, mine: socket.socket, undo: "Callable[[dict], None]") -> None:
        """Give up on a sent request: from the ``shutdown`` on, the
        server's answer is refused (and it undoes what it made); one
        already here is read and undone by us."""
        try:
            mine.shutdown(socket.SHUT_RDWR)
        except OSError:
            return  # the server is gone: it made nothing it could tell of
        try:
            answer, received = self.wire.receive(mine)
        except OSError:
            return  # no answer came: the server never tells, and undoes
        for fd in received:
            os.close(fd)
        if answer is not None and answer.get("ok"):
            undo(answer)

    def alive(self) -> bool:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.ended = "reaped by someone else"
            return False
        if pid == 0:
            return True
        self.ended = (f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                      else f"signal {os.WTERMSIG(status)}")
        return False

    def close(self, keep_reaping: bool = False) -> None:
        if not keep_reaping:
            try:
                with self.lock:
                    self.wire.send(self.control, {"op": "bye"})  # it ends now
            except OSError:
                pass  # it is gone already
        self.control.close()
        try:
            os.waitpid(self.pid, os.WNOHANG if keep_reaping else 0)
        except ChildProcessError:
            pass


_REQUEST = b'{"op": "request"}'
IN_FLIGHT = 32  # async requests of one loop at the fork server at once (it serves one at a time)


async def _ready(loop, fd: int, write: bool = False) -> None:
    """Until ``fd`` is readable (or writable): a callback on the loop."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _send_async(loop, sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """One datagram (``fds`` with it), without blocking the loop: when the
    socket is full, wait until it takes more.  MSG_DONTWAIT, since the
    control socket is shared with threads that send on it blocking."""
    import array

    ancillary = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                 if fds else [])
    while True:
        try:
            sock.sendmsg([data], ancillary, socket.MSG_DONTWAIT)
            return
        except BlockingIOError:
            pass
        # A loop takes one writer per fd, and several coroutines may wait on
        # this socket: each waits on a duplicate of its own.
        fd = os.dup(sock.fileno())
        try:
            await _ready(loop, fd, write=True)
        finally:
            os.close(fd)


async def _receive_async(loop, sock: socket.socket) -> tuple[dict | None, list[int]]:
    """``forkserver.receive`` of a non-blocking socket, awaited on the loop."""
    from kubirun import forkserver

    while True:
        try:
            return forkserver.receive(sock)
        except BlockingIOError:
            await _ready(loop, sock.fileno())


def _checked(answer: dict | None, received: list[int]) -> dict:
    """The server's answer, with ``"fds"``: the fds that came with it (the
    caller's to close); its refusal as KubirunError, those fds closed."""
    try:
        if answer is None:
            raise KubirunError("kubirun's fork server is gone")
        if not answer.get("ok"):
            raise KubirunError(answer.get("error") or "the fork server refused", answer.get("code", 1))
    except BaseException:
        for fd in received:
            os.close(fd)
        raise
    answer["fds"] = received
    return answer


class Runtime:
    """Containers of one state root.  Two runtimes with different roots
    live side by side in one process; nothing here is process-wide."""

    def __init__(self, root: str | None = None, store: str | None = None,
                 cgroup_parent: str | None = None, log: logging.Logger | None = None) -> None:
        from kubirun.image.store import store_root
        from kubirun.state import default_root

        self.root = os.path.abspath(root or default_root())
        # The image store of this runtime's image containers (their layers,
        # and their directories under STORE/containers), given to every
        # call that needs it: never through the environment.
        self.store = os.path.abspath(store or store_root())
        # Where a config without linux.cgroupsPath puts its container's
        # cgroup (PARENT/ID); None: kubirun's default, /kubirun/ID.
        self.cgroup_parent = cgroup_parent
        self.log = log or logging.getLogger("kubirun")
        self._server: _ForkServer | None = None
        self._lock = threading.Lock()
        import weakref

        self._gates: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # loop: Semaphore

    def _fork_server(self) -> _ForkServer:
        """Ours, started now if there is none or the last one died (its
        children then belong to the host's init: their exit statuses are
        lost, the containers themselves go on)."""
        with self._lock:
            if self._server is not None and not self._server.alive():
                self.log.warning("kubirun's fork server died (%s): starting a new one",
                                 self._server.ended)
                self._server.close()
                self._server = None
            if self._server is None:
                self._server = _ForkServer()
            return self._server

    def create(self, container_id: str, bundle: str | os.PathLike, *, config: dict | None = None,
               stdio: Stdio | None = None, no_pivot: bool = False,
               no_new_keyring: bool = False) -> "Container":
        """Create container ``container_id`` from ``bundle`` (its config.json,
        or ``config`` for it): created, waiting for ``start``."""
        message = self._create_message(container_id, bundle, config, no_pivot, no_new_keyring)
        answer, ends = self._request_with_stdio(message, stdio)
        return Container(self, container_id, answer["pid"], ends)

    async def create_async(self, container_id: str, bundle: str | os.PathLike, *,
                           config: dict | None = None, stdio: Stdio | None = None,
                           no_pivot: bool = False, no_new_keyring: bool = False) -> "Container":
        """``create`` in asyncio: the fork server's work awaited on the
        running loop, which goes on meanwhile.  Cancelled, it leaves
        nothing: no container, process, cgroup or state directory."""
        message = self._create_message(container_id, bundle, config, no_pivot, no_new_keyring)
        answer, ends = await self._request_with_stdio_async(message, stdio)
        return Container(self, container_id, answer["pid"], ends)

    def _create_message(self, container_id: str, bundle: str | os.PathLike,
                        config: dict | None, no_pivot: bool, no_new_keyring: bool) -> dict:
        if self.cgroup_parent is not None:
            config = self._with_cgroup(container_id, bundle, config)
        return {"op": "create", "id": container_id, "root": self.root,
                "bundle": os.path.abspath(bundle), "config": config,
                "no_pivot": no_pivot, "no_new_keyring": no_new_keyring}

    def run_image(self, image: str, command: list[str] | None = None, *, name: str | None = None,
                  entrypoint: list[str] | None = None, env: dict[str, str] | None = None,
                  workdir: str | None = None, user: str | None = None,
                  hostname: str | None = None, network: str = "none",
                  ports: "list[tuple[int, int]] | tuple" = (), mounts: "list[dict] | tuple" = (),
                  read_only: bool = False, resources: dict | None = None,
                  sandbox: "Container | None" = None, stdio: Stdio | None = None,
                  start: bool = True) -> "Container":
        """A detached container of ``image`` (anything ``kubirun run``
        takes: a root filesystem tarball, a ``docker save`` archive, an OCI
        layout, a stored image's name or id), its process completed from
        the image's Entrypoint, Cmd, Env, WorkingDir and User as ``kubirun
        run`` does; started unless ``start`` is False.

        ``network``: "none", "host" or "bridge" (``ports``: (host port,
        container port) pairs published, bridge only).  ``mounts``:
        runtime-spec mounts added (binds of host directories for volumes).
        ``resources``: ``linux.resources``.  ``sandbox``: a container
        (``Runtime.sandbox``) whose network, IPC and UTS namespaces this one
        joins, as a pod's containers do; then ``network``, ``ports`` and
        ``hostname`` are the sandbox's and not given here.

        The container's root (an overlay of the image's layers) and its
        directory in the store go with its ``delete``; after a killed
        orchestrator, with ``kubirun delete --force NAME`` or ``kubirun gc``."""
        container = self._run(self._run_image_message(image, command, name, entrypoint, env,
                                                      workdir, user, hostname, network, ports,
                                                      mounts, read_only, resources, sandbox), stdio)
        if start:
            self._start_or_delete(container)
        return container

    async def run_image_async(self, image: str, command: list[str] | None = None, *,
                              name: str | None = None, entrypoint: list[str] | None = None,
                              env: dict[str, str] | None = None, workdir: str | None = None,
                              user: str | None = None, hostname: str | None = None,
                              network: str = "none", ports: "list[tuple[int, int]] | tuple" = (),
                              mounts: "list[dict] | tuple" = (), read_only: bool = False,
                              resources: dict | None = None, sandbox: "Container | None" = None,
                              stdio: Stdio | None = None, start: bool = True) -> "Container":
        """``run_image`` in asyncio (as ``create_async``; the start as
        ``Container.start_async``).  Cancelled, it leaves nothing."""
        container = await self._run_async(
            self._run_image_message(image, command, name, entrypoint, env, workdir, user,
                                    hostname, network, ports, mounts, read_only, resources,
                                    sandbox), stdio)
        if start:
            await self._start_or_delete_async(container)
        return container

    def _run_image_message(self, image, command, name, entrypoint, env, workdir, user, hostname,
                           network, ports, mounts, read_only, resources, sandbox) -> dict:
        from kubirun.base.ids import new_id, validate_id

        container_id = validate_id(name) if name is not None else new_id()
        if not isinstance(image, (str, os.PathLike)):
            raise KubirunError(f"run_image: image: expected a path or an image name, got {image!r}")
        image = os.fspath(image)
        if os.path.lexists(image):
            image = os.path.abspath(image)  # the fork server's cwd is not ours
        join: dict[str, str] = {}
        mounts = [dict(m) for m in mounts]
        if sandbox is not None:
            if network != "none" or ports or hostname is not None:
                raise KubirunError(f"run_image {container_id}: network, ports and hostname are the"
                                   f" sandbox's ({sandbox.id}), not given with it")
            join, shared = sandbox._namespaces_to_join()
            mounts = shared + mounts
        if network not in ("none", "host", "bridge"):
            raise KubirunError(f"run_image {container_id}: network: expected none, host or bridge,"
                               f" got {network!r}")
        return {
            "op": "run_image", "id": container_id, "root": self.root, "store": self.store,
            "image": image, "command": None if command is None else [str(a) for a in command],
            "entrypoint": None if entrypoint is None else [str(a) for a in entrypoint],
            "env": {str(k): str(v) for k, v in (env or {}).items()}, "workdir": workdir,
            "user": user, "hostname": hostname, "network": network,
            "ports": [[int(h), int(c)] for h, c in ports], "mounts": mounts,
            "read_only": bool(read_only), "resources": resources, "join": join,
            "cgroups_path": self._cgroups_path(container_id)}

    def sandbox(self, name: str, *, network: str = "none", hostname: str | None = None,
                ports: "list[tuple[int, int]] | tuple" = ()) -> "Container":
        """A pod sandbox, started: a container that only holds a network,
        IPC and UTS namespace for others to join (``run_image(...,
        sandbox=it)``), as Kubernetes' pause container.  It needs no image:
        an empty root, and kubirun's exec helper as a PID 1 that reaps and
        exits 0 at SIGTERM.  ``delete(force=True)`` removes it and its network."""
        container = self._run(self._sandbox_message(name, network, hostname, ports), None)
        self._start_or_delete(container)
        return container

    async def sandbox_async(self, name: str, *, network: str = "none",
                            hostname: str | None = None,
                            ports: "list[tuple[int, int]] | tuple" = ()) -> "Container":
        """``sandbox`` in asyncio (as ``run_image_async``)."""
        container = await self._run_async(self._sandbox_message(name, network, hostname, ports),
                                          None)
        await self._start_or_delete_async(container)
        return container

    def _sandbox_message(self, name: str, network: str, hostname: str | None,
                         ports: "list[tuple[int, int]] | tuple") -> dict:
        from kubirun.base.ids import validate_id

        container_id = validate_id(name)
        if network not in ("none", "host", "bridge"):
            raise KubirunError(f"sandbox {container_id}: network: expected none, host or bridge,"
                               f" got {network!r}")
        return {"op": "run_image", "id": container_id, "root": self.root, "store": self.store,
                "image": None, "pause": True, "command": ["pause"], "hostname": hostname,
                "network": network, "ports": [[int(h), int(c)] for h, c in ports],
                "cgroups_path": self._cgroups_path(container_id)}

    def _run(self, message: dict, stdio: Stdio | None) -> "Container":
        answer, ends = self._request_with_stdio(message, stdio)
        container = Container(self, message["id"], answer["pid"], ends)
        container._image_config = answer.get("image_config")
        return container

    async def _run_async(self, message: dict, stdio: Stdio | None) -> "Container":
        answer, ends = await self._request_with_stdio_async(message, stdio)
        container = Container(self, message["id"], answer["pid"], ends)
        container._image_config = answer.get("image_config")
        return container

    @staticmethod
    def _start_or_delete(container: "Container") -> None:
        try:
            container.start()
        except BaseException:
            container.delete(force=True)
            raise

    @staticmethod
    async def _start_or_delete_async(container: "Container") -> None:
        import asyncio

        try:
            await container.start_async()
        except BaseException:
            # Shielded: cancelled again meanwhile, the removal still ends
            # (a start in the executor holds the container's lock until done).
            await asyncio.shield(container.delete_async(force=True))
            raise

    def _cgroups_path(self, container_id: str) -> str | None:
        return None if self.cgroup_parent is None else f"{self.cgroup_parent}/{container_id}"

    def _request_with_stdio(self, message: dict, stdio: Stdio | None) -> tuple[dict, list]:
        """Ask the fork server for a process whose stdio is ``stdio``: its
        answer (warnings logged) and our ends of the pipes.  The fds handed
        over are closed here, and on failure our ends too."""
        stdio = stdio or Stdio()
        fds, ends = stdio.open()
        if stdio.terminal:
            message["terminal"] = True
        try:
            _, answer = self._fork_server().request(message, fds)
        except BaseException:
            for end in ends:
                if end is not None:
                    end.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self._say(answer)
        # The pty's master (a terminal asked for): ours, one read-write file.
        pty = open(answer["fds"][0], "r+b", buffering=0) if answer["fds"] else None
        return answer, ends + [pty]

    async def _request_with_stdio_async(self, message: dict,
                                        stdio: Stdio | None) -> tuple[dict, list]:
        """``_request_with_stdio`` awaited on the running loop.  At most
        IN_FLIGHT requests of one loop are at the server at once: it serves
        one at a time, and the others wait here holding no fd."""
        stdio = stdio or Stdio()
        if stdio.terminal:
            message["terminal"] = True
        async with self._gate():
            server = self._fork_server()  # its first start: posix_spawn, about 1 ms
            fds, ends = stdio.open()
            try:
                answer = await server.request_async(message, fds,
                                                    lambda answer: self._undo(message, answer))
            except BaseException:
                for end in ends:
                    if end is not None:
                        end.close()
                raise
        self._say(answer)
        pty = open(answer["fds"][0], "r+b", buffering=0) if answer["fds"] else None
        return answer, ends + [pty]

    def _gate(self):
        """This loop's semaphore of requests in flight."""
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = asyncio.Semaphore(IN_FLIGHT)
            return gate

    def _undo(self, message: dict, answer: dict) -> None:
        """What a cancelled request made, its answer read as it was given
        up: removed (a container, with its cgroup, state and root) or
        ended (an exec'd process).  Synchronous: a short cleanup while the
        CancelledError goes on, never left to a later loop turn that may not come."""
        if message["op"] == "exec":
            from kubirun import _native

            try:
                # The server's child, reaped by it only after it exits:
                # until then the pidfd names this process alone.
                pidfd = _native.pidfd_open(answer["pid"])
            except ProcessLookupError:
                return
            try:
                _native.pidfd_send_signal(pidfd, 9)
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
            return
        Container(self, message["id"], answer["pid"], []).delete(force=True)

    def _with_cgroup(self, container_id: str, bundle: str | os.PathLike,
                     config: dict | None) -> dict:
        from kubirun.base import jsonio

        if config is None:
            path = os.path.join(bundle, "config.json")
            try:
                config = jsonio.load_file(path)
            except (OSError, ValueError) as err:
                raise KubirunError(f"{path}: {getattr(err, 'strerror', None) or err}") from None
        if isinstance(config, dict) and isinstance(config.get("linux", {}), dict) \
                and not config.get("linux", {}).get("cgroupsPath"):
            config = dict(config, linux=dict(config.get("linux") or {},
                                             cgroupsPath=f"{self.cgroup_parent}/{container_id}"))
        return config

    def load(self, container_id: str) -> "Container":
        """A container of this root, made by anyone (its state must exist)."""
        container = Container(self, container_id, None, [None, None, None])
        container.state()
        return container

    def events(self, container_id: str, stats_interval: float | None = None) -> "Events":
        """Container ``container_id``'s events: an iterator (``for``) and an
        async iterator (``async for``) of ``OOMEvent``, ``StatsEvent`` (every
        ``stats_interval`` seconds, if given) and a last ``ExitEvent``
        (its exit status) when its PID 1 exits or it is deleted."""
        from kubirun.events import Events

        return Events(container_id, self.root, stats_interval=stats_interval)

    def list(self) -> list[str]:
        from kubirun.state import list_ids

        return list_ids(self.root)

    def _say(self, answer: dict) -> None:
        for message in answer.get("warnings") or []:
            self.log.warning(message)

    def close(self, keep_reaping: bool = False) -> None:
        """Stop the fork server (the containers stay; how they end later is
        not recorded).  ``keep_reaping``: leave it running until the
        containers it made have exited, recording how each ended (as it
        does when its owner dies), then it ends: for a process about to
        exit (``kubirun node serve`` stopping), whose parent then reaps it;
        a process that lives on would keep it as a zombie child."""
        with self._lock:
            if self._server is not None:
                self._server.close(keep_reaping)
                self._server = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _in_executor(work: "Callable[[], None]") -> None:
    """``work`` in the running loop's default executor, and awaited.
    Shielded: a cancelled caller does not wait, but the work (which holds
    the container's lock) completes all the same; its error, if any, is
    then retrieved and dropped."""
    import asyncio

    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise


class _Waitable:
    """A process the fork server is the parent of: wait for its exit."""

    runtime: Runtime
    pid: int | None

    def _watch(self) -> socket.socket | None:
        if self.pid is None or self.runtime._server is None:
            return None
        sock, _ = self.runtime._server.request({"op": "watch", "pid": self.pid})
        return sock

    def _answer(self, sock: socket.socket) -> ExitStatus | None:
        from kubirun import forkserver

        try:
            answer, _ = forkserver.receive(sock)
        finally:
            sock.close()
        if answer is None or not answer.get("ok"):
            return None  # not (or no longer) the server's child
        return ExitStatus.from_record(answer["exit"])

    def _wait_watch(self, timeout: float | None) -> tuple[bool, ExitStatus | None]:
        """(whether the server watched it, how it ended)."""
        sock = self._watch()
        if sock is None:
            return False, None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            sock.close()
            raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
        return True, self._answer(sock)

    async def _wait_watch_async(self) -> tuple[bool, ExitStatus | None]:
        sock = self._watch()
        if sock is None:
            return False, None
        import asyncio

        try:
            await _ready(asyncio.get_running_loop(), sock.fileno())
        except BaseException:
            sock.close()  # cancelled: the server's answer goes nowhere
            raise
        return True, self._answer(sock)


RECORD_WAIT = 5.0  # at most, for an exited PID 1's reaper to record it


class Container(_Waitable):
    """One container.  ``stdin``/``stdout``/``stderr``: the caller's ends
    of the pipes asked for with ``Stdio.PIPE`` (binary, unbuffered), else None."""

    def __init__(self, runtime: Runtime, container_id: str, pid: int | None, ends: list) -> None:
        from kubirun.container import Container as Lifecycle

        self.runtime = runtime
        self.id = container_id
        self.pid = pid  # PID 1, when this runtime's fork server made it
        self.stdin, self.stdout, self.stderr, self.pty = (list(ends) + [None] * 4)[:4]
        self._lifecycle = Lifecycle(container_id, runtime.root)
        self._image_config = Container._UNKNOWN
        self._socket_pidfd: int | None = None
        self._socket_lock = threading.Lock()

    def _close_socket_pidfd(self) -> None:
        if self._socket_pidfd is not None:
            os.close(self._socket_pidfd)
            self._socket_pidfd = None

    def start(self) -> None:
        self._lifecycle.start()

    async def start_async(self) -> None:
        """``start`` in asyncio.  Not a fork server's request: the start is
        done here (the container's lock, its state, releasing the init and
        waiting until it has exec'd, poststart hooks), so it runs in the
        loop's default executor (a few threads shared by all containers,
        never one each).  Cancelled, the start still completes."""
        await _in_executor(self.start)

    def state(self) -> dict:
        """The OCI state: id, status, pid, bundle..."""
        return self._lifecycle.state()

    def kill(self, signal: int = 15, all: bool = False) -> None:  # noqa: A002 - runc's word
        self._lifecycle.kill(signal, all)

    def pause(self) -> None:
        self._lifecycle.pause()

    def resume(self) -> None:
        self._lifecycle.resume()

    def update(self, resources: dict) -> list[str]:
        """Apply ``linux.resources``; the warnings (what the host could not
        apply) are returned."""
        return self._lifecycle.update(resources)

    def stats(self) -> dict:
        return self._lifecycle.stats()

    _UNKNOWN = object()

    @property
    def ip_address(self) -> str | None:
        """The container's address on its bridge (``network="bridge"``: a
        pod sandbox's is its pod's); None in any other network mode."""
        return (self._lifecycle.load().get("network") or {}).get("address")

    @property
    def image_config(self) -> dict | None:
        """The config of the image this container was made from (its
        ``config`` object: Entrypoint, Cmd, Env, StopSignal, ExposedPorts,
        Labels...); None for a container not made from an image."""
        if self._image_config is Container._UNKNOWN:
            self._image_config = self._stored_image_config()
        return self._image_config

    def _stored_image_config(self) -> dict | None:
        from kubirun.image.store import Store

        directory = self._lifecycle.load().get("remove_on_delete")
        if not directory:
            return None
        try:
            with open(os.path.join(directory, "image")) as f:
                image_id = f.read().strip()
        except OSError:
            return None  # an empty root (a sandbox), or a root directory used in place
        record = Store(self.runtime.store).load_image(image_id) or {}
        return (record.get("config") or {}).get("config") or {}

    @property
    def stop_signal(self) -> int:
        """The signal that asks this container to stop: its image's
        StopSignal ("SIGQUIT", "QUIT" or a number), else SIGTERM."""
        import signal as signals

        text = str((self.image_config or {}).get("StopSignal") or "").strip().upper()
        if text.isdigit() and 0 < int(text) < signals.NSIG:
            return int(text)
        name = text if text.startswith("SIG") else "SIG" + text
        number = getattr(signals.Signals, name, None) if text else None
        return int(number) if number is not None else int(signals.SIGTERM)

    def _namespaces_to_join(self) -> tuple[dict[str, str], list[dict]]:
        """A sandbox's network, IPC and UTS namespaces (paths, by PID 1's
        /proc entry), and binds of its /etc/hosts, hostname and
        resolv.conf if its network has them."""
        state = self._lifecycle.load()
        if self._lifecycle.status(state) != "running":
            raise KubirunError(f"sandbox {self.id} is {self._lifecycle.status(state)}, not running")
        pid = state["pid"]
        join = {kind: f"/proc/{pid}/ns/{file}"
                for kind, file in (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))}
        mounts = []
        files = (state.get("network") or {}).get("files")
        for name in ("hosts", "hostname", "resolv.conf"):
            if files and os.path.exists(os.path.join(files, name)):
                mounts.append({"destination": f"/etc/{name}", "type": "bind",
                               "source": os.path.join(files, name),
                               "options": ["rbind", "rprivate", "ro"]})
        return join, mounts

    def pidfd(self) -> int:
        """A pidfd of PID 1 (the caller's to close), readable once it exits."""
        from kubirun import _native

        state = self._lifecycle.load()
        return _native.pidfd_open(state["pid"])

    @property
    def exit_status(self) -> ExitStatus | None:
        """How PID 1 ended, as recorded by the fork server that reaped it."""
        from kubirun import exitstatus

        record = exitstatus.read(self.runtime.root, self.id)
        return ExitStatus.from_record(record) if record else None

    def socket(self, family: int = socket.AF_INET,
               type: int = socket.SOCK_STREAM) -> socket.socket:  # noqa: A002 - socket's word
        """A new socket (close-on-exec, blocking) in the container's network
        namespace: connected from the host, it reaches the container's own
        ``localhost`` and addresses, as a probe of a pod with network
        "none" must.  The fork server makes it there (it enters the
        namespace and comes back; the caller's threads never change
        namespace) and hands it over; the caller owns and closes it.
        About 20 us in the server (setns there and back), where a process
        forked per socket would take 2 ms."""
        import socket as sockets

        # PID 1's pidfd, opened once (a probe asks every second; the state
        # need not be read each time) and closed by ``delete``: it names
        # that process only, so a reused PID can never be entered.
        # (When PID 1 has exited the server's setns fails: ESRCH, raised.)
        with self._socket_lock:
            if self._socket_pidfd is None:
                self._socket_pidfd = self.pidfd()
        _, answer = self.runtime._fork_server().request(
            {"op": "socket", "family": int(family), "type": int(type)}, [self._socket_pidfd])
        if len(answer["fds"]) != 1:
            for fd in answer["fds"]:
                os.close(fd)
            raise KubirunError(f"container {self.id}: the fork server sent no socket")
        return sockets.socket(fileno=answer["fds"][0])

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block (this thread only) until PID 1 exits; raises TimeoutError."""
        recorded = self.exit_status
        if recorded is not None:
            return recorded
        watched, result = self._wait_watch(timeout)
        if watched:
            return result or self._recorded_or_unknown()
        pidfd = self._pidfd_or_none()
        if pidfd is None:
            return self._recorded_or_unknown()
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                raise TimeoutError(f"container {self.id} still runs after {timeout} s")
            import time

            deadline = time.monotonic() + RECORD_WAIT
            while not self._settled(pidfd) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.close(pidfd)
        return self._recorded_or_unknown()

    async def wait_async(self) -> ExitStatus:
        """``wait`` in asyncio: the fork server's answer, or (a container
        another runtime made) its pidfd, on the running loop."""
        recorded = self.exit_status
        if recorded is not None:
            return recorded
        watched, result = await self._wait_watch_async()
        if watched:
            return result or self._recorded_or_unknown()
        pidfd = self._pidfd_or_none()
        if pidfd is None:
            return self._recorded_or_unknown()
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            exited = loop.create_future()
            loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
            deadline = loop.time() + RECORD_WAIT
            while not self._settled(pidfd) and loop.time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            os.close(pidfd)
        return self._recorded_or_unknown()

    def _pidfd_or_none(self) -> int | None:
        try:
            return self.pidfd()
        except (ProcessLookupError, KubirunError):
            return None

    def _settled(self, pidfd: int) -> bool:
        """Whether PID 1, exited, has its record or has been reaped without
        one.  Its reaper (a fork server, perhaps one whose owner died)
        records it before reaping it: while it is a zombie, the record is
        on its way."""
        from kubirun import _native

        if self.exit_status is not None:
            return True
        try:
            _native.pidfd_send_signal(pidfd, 0)  # a zombie still takes signal 0
        except OSError:
            return True  # reaped
        return False

    def _recorded_or_unknown(self) -> ExitStatus:
        recorded = self.exit_status
        if recorded is None:
            raise KubirunError(f"container {self.id} has exited, but how is not known: it was not"
                               " created by a kubirun.api fork server, which records it")
        return recorded

    def exec(self, args: list[str], *, env: list[str] | None = None, cwd: str | None = None,
             stdio: Stdio | None = None) -> "Process":
        """Start ``args`` in the container (from its own process: user, env,
        capabilities... as ``kubirun exec``); a handle to wait for it."""
        answer, ends = self.runtime._request_with_stdio(self._exec_message(args, env, cwd), stdio)
        return Process(self.runtime, answer["pid"], ends)

    async def exec_async(self, args: list[str], *, env: list[str] | None = None,
                         cwd: str | None = None, stdio: Stdio | None = None) -> "Process":
        """``exec`` in asyncio: the fork server's work awaited on the loop
        (the container's state is read first, synchronously: one small
        file).  Cancelled, the process is not left running."""
        answer, ends = await self.runtime._request_with_stdio_async(
            self._exec_message(args, env, cwd), stdio)
        return Process(self.runtime, answer["pid"], ends)

    def _exec_message(self, args: list[str], env: list[str] | None, cwd: str | None) -> dict:
        state = self._lifecycle.load()
        message = {"op": "exec", "id": self.id, "root": self.runtime.root}
        if state.get("process"):
            process = dict(state["process"])
            process.update(args=list(args), terminal=False)
            if env is not None:
                process["env"] = list(env)
            if cwd is not None:
                process["cwd"] = cwd
            message["process"] = process
        elif state.get("image_process"):
            # An image container's: its user, env, capabilities... as
            # `kubirun exec` has them; ``env`` added to its environment.
            message.update(args=list(args), env=None if env is None else list(env), cwd=cwd)
        else:
            raise KubirunError(f"container {self.id} has no process to exec from")
        return message

    def delete(self, force: bool = False) -> None:
        """Remove the container (``force``: kill it first) with what it
        had: its cgroup, an image container's root, its directory in the
        store and its network; with ``force``, also what a killed runtime
        left of that name.  Closes our pipe ends."""
        try:
            self._lifecycle.delete(force=force, leftovers=False)
        finally:
            if force:
                from kubirun import reclaim

                reclaim.leftovers_of(self.id, self.runtime.root, self.runtime.store)
        self.close()

    async def delete_async(self, force: bool = False) -> None:
        """``delete`` in asyncio: done here as ``start_async`` is (in the
        loop's default executor: the container's lock, killing and waiting
        for its init with ``force``, removing its cgroup, root and state).
        Cancelled, the delete still completes."""
        await _in_executor(lambda: self.delete(force))

    def close(self) -> None:
        """Close what this handle holds (our pipe ends, the pidfd
        ``socket`` keeps), leaving the container as it is; ``delete``
        does it too."""
        self._close_socket_pidfd()
        for end in (self.stdin, self.stdout, self.stderr, self.pty):
            if end is not None:
                end.close()


class Process(_Waitable):
    """A process ``Container.exec`` started."""

    def __init__(self, runtime: Runtime, pid: int, ends: list) -> None:
        self.runtime = runtime
        self.pid = pid
        self.stdin, self.stdout, self.stderr, self.pty = (list(ends) + [None] * 4)[:4]

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Its exit status (the ``pty``, if any, is closed then: read it first)."""
        _, result = self._wait_watch(timeout)
        return self._known(result)

    async def wait_async(self) -> ExitStatus:
        _, result = await self._wait_watch_async()
        return self._known(result)

    def _known(self, result: ExitStatus | None) -> ExitStatus:
        if self.pty is not None:
            self.pty.close()
            self.pty = None
        if result is None:
            raise KubirunError(f"exec'd process {self.pid}: its fork server is gone, and its"
                               " exit status with it")
        return result
