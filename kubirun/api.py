"""kubirun as a library: what an orchestrator (and ``kubirun.node``) may
import.  Everything else in the package is kubirun's own business.

    from kubirun.api import Runtime, Stdio

    with Runtime(root="/run/my-orchestrator") as runtime:
        box = runtime.create("web", "/bundles/web", stdio=Stdio(stdout=Stdio.PIPE))
        box.start()
        print(box.stdout.read())
        print(box.wait(timeout=10))      # ExitStatus(code=0, signal=None, oom_killed=False)
        box.delete()

Safe from any thread and from asyncio (``await box.wait_async()``): no call
installs a signal handler, forks the caller, or changes its umask, working
directory, environment, dumpable flag or fds (every fd it opens is
close-on-exec and closed by ``wait``/``delete``).  Containers are forked by
a fork server (``kubirun.forkserver``), started on first use, which reaps
them and records how PID 1 ended in the container's state directory: a
``Runtime`` started later (a restarted orchestrator) reads it with
``runtime.load(id).exit_status``.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from dataclasses import dataclass

from kubirun.base.errors import KubirunError

__all__ = ["ExitStatus", "KubirunError", "Process", "Runtime", "Container", "Stdio"]


@dataclass(frozen=True)
class ExitStatus:
    """How a container's PID 1 (or an exec'd process) ended: ``code`` as a
    shell has it (128+N for a death by signal N)."""

    code: int
    signal: int | None = None
    oom_killed: bool = False

    @classmethod
    def from_record(cls, record: dict) -> "ExitStatus":
        return cls(int(record["code"]), record.get("signal"), bool(record.get("oom_killed")))


class Stdio:
    """Where a container's (or exec'd process's) stdin, stdout and stderr
    go, each one of: ``Stdio.DEVNULL`` (the default), ``Stdio.INHERIT``
    (the caller's own), ``Stdio.PIPE`` (the caller reads or writes the
    other end: ``container.stdout``...), a path (stdin read from it,
    stdout/stderr appended to it, made if missing) or an open fd (dup'd)."""

    DEVNULL, INHERIT, PIPE = "devnull", "inherit", "pipe"

    def __init__(self, stdin: str | int = DEVNULL, stdout: str | int = DEVNULL,
                 stderr: str | int = DEVNULL) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

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

    def request(self, message: dict, fds: list[int] = ()) -> tuple[socket.socket, dict | None]:
        """Send ``message`` on a new socket pair; the pair's end for the
        answer (open: a watch answers later) and, unless ``message`` is a
        watch, the answer."""
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
            answer, _ = self.wire.receive(mine)
        finally:
            mine.close()
        return mine, _checked(answer)

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def close(self) -> None:
        self.control.close()  # the server ends at end-of-file
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _checked(answer: dict | None) -> dict:
    if answer is None:
        raise KubirunError("kubirun's fork server is gone")
    if not answer.get("ok"):
        raise KubirunError(answer.get("error") or "the fork server refused", answer.get("code", 1))
    return answer


class Runtime:
    """Containers of one state root.  Two runtimes with different roots
    live side by side in one process; nothing here is process-wide."""

    def __init__(self, root: str | None = None, log: logging.Logger | None = None,
                 cgroup_parent: str | None = None) -> None:
        from kubirun.state import default_root

        self.root = os.path.abspath(root or default_root())
        # Where a config without linux.cgroupsPath puts its container's
        # cgroup (PARENT/ID); None: kubirun's default, /kubirun/ID.
        self.cgroup_parent = cgroup_parent
        self.log = log or logging.getLogger("kubirun")
        self._server: _ForkServer | None = None
        self._lock = threading.Lock()

    def _fork_server(self) -> _ForkServer:
        """Ours, started now if there is none or the last one died (its
        children then belong to the host's init: their exit statuses are
        lost, the containers themselves go on)."""
        with self._lock:
            if self._server is not None and not self._server.alive():
                self.log.warning("kubirun's fork server died: starting a new one")
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
        if self.cgroup_parent is not None:
            config = self._with_cgroup(container_id, bundle, config)
        answer, ends = self._request_with_stdio(
            {"op": "create", "id": container_id, "root": self.root,
             "bundle": os.path.abspath(bundle), "config": config,
             "no_pivot": no_pivot, "no_new_keyring": no_new_keyring}, stdio)
        return Container(self, container_id, answer["pid"], ends)

    def _request_with_stdio(self, message: dict, stdio: Stdio | None) -> tuple[dict, list]:
        """Ask the fork server for a process whose stdio is ``stdio``: its
        answer (warnings logged) and our ends of the pipes.  The fds handed
        over are closed here, and on failure our ends too."""
        fds, ends = (stdio or Stdio()).open()
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
        return answer, ends

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

    def list(self) -> list[str]:
        from kubirun.state import list_ids

        return list_ids(self.root)

    def _say(self, answer: dict) -> None:
        for message in answer.get("warnings") or []:
            self.log.warning(message)

    def close(self) -> None:
        """Stop the fork server (the containers stay)."""
        with self._lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())
        sock.setblocking(True)
        return True, self._answer(sock)


class Container(_Waitable):
    """One container.  ``stdin``/``stdout``/``stderr``: the caller's ends
    of the pipes asked for with ``Stdio.PIPE`` (binary, unbuffered), else None."""

    def __init__(self, runtime: Runtime, container_id: str, pid: int | None, ends: list) -> None:
        from kubirun.container import Container as Lifecycle

        self.runtime = runtime
        self.id = container_id
        self.pid = pid  # PID 1, when this runtime's fork server made it
        self.stdin, self.stdout, self.stderr = ends
        self._lifecycle = Lifecycle(container_id, runtime.root)

    def start(self) -> None:
        self._lifecycle.start()

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

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block (this thread only) until PID 1 exits; raises TimeoutError."""
        recorded = self.exit_status
        if recorded is not None:
            return recorded
        watched, result = self._wait_watch(timeout)
        if not watched:
            self._wait_pidfd(timeout)
        return result or self._recorded_or_unknown()

    async def wait_async(self) -> ExitStatus:
        recorded = self.exit_status
        if recorded is not None:
            return recorded
        watched, result = await self._wait_watch_async()
        if not watched:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, self._wait_pidfd, None)
        return result or self._recorded_or_unknown()

    def _wait_pidfd(self, timeout: float | None) -> None:
        """For a container this runtime did not fork: wait on its pidfd."""
        try:
            pidfd = self.pidfd()
        except (ProcessLookupError, KubirunError):
            return
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                raise TimeoutError(f"container {self.id} still runs after {timeout} s")
        finally:
            os.close(pidfd)

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
        process = dict(self._lifecycle.load().get("process") or {})
        if not process:
            raise KubirunError(f"container {self.id} has no runtime-spec process to exec from")
        process.update(args=list(args), terminal=False)
        if env is not None:
            process["env"] = list(env)
        if cwd is not None:
            process["cwd"] = cwd
        answer, ends = self.runtime._request_with_stdio(
            {"op": "exec", "id": self.id, "root": self.runtime.root, "process": process}, stdio)
        return Process(self.runtime, answer["pid"], ends)

    def delete(self, force: bool = False) -> None:
        """Remove the container (``force``: kill it first); closes our pipe ends."""
        self._lifecycle.delete(force=force)
        for end in (self.stdin, self.stdout, self.stderr):
            if end is not None:
                end.close()


class Process(_Waitable):
    """A process ``Container.exec`` started."""

    def __init__(self, runtime: Runtime, pid: int, ends: list) -> None:
        self.runtime = runtime
        self.pid = pid
        self.stdin, self.stdout, self.stderr = ends

    def wait(self, timeout: float | None = None) -> ExitStatus:
        _, result = self._wait_watch(timeout)
        return self._known(result)

    async def wait_async(self) -> ExitStatus:
        _, result = await self._wait_watch_async()
        return self._known(result)

    def _known(self, result: ExitStatus | None) -> ExitStatus:
        if result is None:
            raise KubirunError(f"exec'd process {self.pid}: its fork server is gone, and its"
                               " exit status with it")
        return result
