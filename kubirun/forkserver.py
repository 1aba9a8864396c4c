"""The fork server: the one process that forks containers for a library
caller (``kubirun.api``), so that the caller itself never forks.

An orchestrator is multi-threaded, runs asyncio, holds locks in other
threads; ``fork()`` from such a process copies all of that half-done into
the child.  So ``api.Runtime`` starts this server once (``posix_spawn``,
which is safe in a threaded process, in a session of its own so that a
Ctrl-C at the orchestrator's terminal reaches neither it nor the
containers), and asks it over a unix socket:

    create  a container (the caller's stdio fds passed with SCM_RIGHTS and
            made the init's 0, 1, 2): ``Container.create`` runs here, and
            the init is this server's child: a spare its zygote forked
            before the create came (``kubirun.zygote``: as root, on a host
            whose inits are not born in a cgroup), or forked by the server
    exec    a process in a container (detached: the server is its parent)
    watch   "tell me when PID 1 of this container (or this exec'd
            process) exits, and how"
    socket  a socket made in a container's network namespace (its init's
            pidfd passed in), handed back with SCM_RIGHTS: for probes into
            a pod of network "none", which no socket of the caller's reaches

The server is single-threaded: one request at a time, each on a socket
pair of its own that the caller sends over the control socket, so
requests from many threads (and many coroutines: ``Runtime.create_async``
has several requests queued here at once) never mix; they are served in
turn.  A caller that hangs up on its request (a cancelled
``create_async``) gets nothing made: a request whose caller is gone before
it is served is dropped, and a container (or exec'd process) made for a
caller who hung up meanwhile, which no answer can reach, is removed (or
killed) at once, as if never made.  It reaps every child it has (pidfds
in its event loop: no SIGCHLD handler) and records each container's exit
status in its state directory (``exit.json``, see ``kubirun.exitstatus``)
before it reaps it (the init stays a zombie until its record is written, so
whoever waits on its pidfd finds the record once the PID is gone) and
before telling the watchers: a restarted orchestrator reads it there.

It ends when its owner says ``bye`` (``Runtime.close``): the containers
stay, as they do when the CLI that created them exits.  When the owner dies
instead (the control socket closes without it: ``kill -9`` of a node
supervisor, or ``Runtime.close(keep_reaping=True)``), the server outlives it only while it still has container
inits as children, reaping and recording them as they exit, and then ends
(the host's init, or a subreaper, reaps it in turn).  It takes no new
requests then: nothing can reach it, a new owner starts a new server, and
a container's exit status still reaches the new owner through exit.json.
"""
from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys

from kubirun.base import jsonio

MAX_MESSAGE = 1 << 20
MAX_FDS = 8
FINISHED_KEPT = 4096
CLONE_NEWNET = 0x40000000


# --- the wire: one JSON object per datagram, fds alongside --------------------

def send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = jsonio.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """The next message and its fds; (None, []) at end-of-file."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    for fd in fds:
        os.set_inheritable(fd, False)
    return jsonio.loads(data), fds


# --- the server ------------------------------------------------------------------

class Server:
    """The event loop: the control socket, request sockets, children's pidfds."""

    def __init__(self, control: socket.socket, zygote=None) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, self._on_control)
        self.zygote = zygote  # forks the inits (kubirun.zygote); None: we do
        if zygote is not None:
            self.selector.register(zygote, selectors.EVENT_READ, self._on_zygote)
        self.children: dict[int, tuple[str, str | None, str]] = {}  # pid: (kind, root, id)
        self.pidfds: dict[int, int] = {}  # pid: its pidfd, in the selector
        self.watchers: dict[int, list[socket.socket]] = {}  # pid: sockets told at its exit
        # How recent children ended, for a watch that comes after the reaping
        # (a container's is also in its exit.json): the newest FINISHED_KEPT.
        self.finished: dict[int, dict] = {}
        self.done = False
        self.owned = True  # until the owner says bye or dies
        self._own_netns: int | None = None  # opened at the first socket request

    def run(self) -> None:
        try:
            while not self.done:
                for key, _ in self.selector.select():
                    key.data(key.fileobj)
        finally:
            if self.zygote is not None:
                self.zygote.close()

    def _on_zygote(self, zygote) -> None:
        """The spare asked for is ready (or the zygote is gone)."""
        zygote.on_readable()
        self._forget_zygote_if_gone()

    def _forget_zygote_if_gone(self) -> None:
        """Once the zygote is gone (killed by someone), we fork the inits."""
        if self.zygote is not None and self.zygote.sock is None:
            self.selector.unregister(self.zygote)
            self.zygote = None

    # control: new request sockets, or the owner gone
    def _on_control(self, control: socket.socket) -> None:
        message, fds = receive(control)
        if message is None or message.get("op") == "bye":
            for fd in fds:
                os.close(fd)
            self.selector.unregister(control)
            control.close()
            self.owned = False
            # "bye": the owner closed us.  End of file alone: it died; its
            # containers' exit statuses are still to be recorded.
            self.done = message is not None or not self._containers()
            return
        for fd in fds:
            request = socket.socket(fileno=fd)
            self.selector.register(request, selectors.EVENT_READ, self._on_request)

    def _on_request(self, request: socket.socket) -> None:
        self.selector.unregister(request)
        message, fds = receive(request)
        if message is None or _hung_up(request):
            # Its caller is gone already (a cancelled create_async): nothing
            # is made for no one.
            for fd in fds:
                _close_quietly(fd)
            request.close()
            return
        keep_open = False
        try:
            handler = getattr(self, f"_op_{message.get('op')}", None)
            if handler is None:
                raise ValueError(f"unknown request {message.get('op')!r}")
            keep_open = handler(request, message, fds)
        except BaseException as err:  # noqa: BLE001 - the caller gets it, the server goes on
            try:
                send(request, _error_reply(err))
            except OSError:
                pass  # the caller hung up: no one to tell
        finally:
            for fd in fds:
                _close_quietly(fd)
        if not keep_open:
            request.close()
        if self.zygote is not None:
            self.zygote.refill()  # the next create's init, forked while we wait
            self._forget_zygote_if_gone()

    def _op_create(self, request: socket.socket, message: dict, fds: list[int]) -> bool:
        from kubirun.base import log
        from kubirun.container import Container, CreateOptions
        from kubirun.spec import load_bundle, parse

        warnings: list[str] = []
        with log.captured(warnings):
            if message.get("config") is not None:
                spec = parse(message["config"], message["bundle"])
            else:
                spec = load_bundle(message["bundle"])
            if message.get("terminal"):
                spec.process.terminal = True
            with _Console(spec.process.terminal) as console:
                options = CreateOptions(no_pivot=bool(message.get("no_pivot")),
                                        new_keyring=not message.get("no_new_keyring"),
                                        console_socket=console.path)
                if self.zygote is not None:
                    options.init_forker = self.zygote.fork_init
                with _as_stdio(fds):
                    container = Container.create(message["id"], spec, root=message.get("root"),
                                                 options=options)
                pid = container._init_pid
                container._channel.close()  # what it says after `start` goes to start's fifo
                container._init_pid = None  # ours to reap, not the Container object's
                self._adopt(pid, "container", message.get("root"), message["id"])
                with self._unmade_unless_told(pid, message.get("root"), message["id"]):
                    console.reply(request, {"ok": True, "pid": pid, "warnings": warnings})
        return False

    def _op_run_image(self, request: socket.socket, message: dict, fds: list[int]) -> bool:
        """A detached image container (``Runtime.run_image``), or a pod
        sandbox (no image: an empty root, the exec helper as a pause PID 1)."""
        from kubirun import imagerun
        from kubirun.base import log
        from kubirun.ns.net import NetworkOptions
        from kubirun.process import ProcessSpec

        process = ProcessSpec(args=message.get("command") or None,
                              env=[f"{k}={v}" for k, v in (message.get("env") or {}).items()],
                              cwd=message.get("workdir") or "/", user=message.get("user"))
        if message.get("pause"):
            process.init = "pause"
        joined = message.get("join") or {}

        def configure(config: dict) -> None:
            config["mounts"] = list(config.get("mounts") or []) + list(message.get("mounts") or [])
            if message.get("read_only"):
                config["root"]["readonly"] = True
            for ns in config["linux"]["namespaces"]:
                if ns["type"] in joined:
                    ns["path"] = joined[ns["type"]]
            if "uts" in joined:
                config.pop("hostname", None)  # the sandbox's: never set again from here
            if message.get("cgroups_path"):
                config["linux"]["cgroupsPath"] = message["cgroups_path"]

        options = imagerun.RunOptions(
            image=message.get("image"), name=message["id"], hostname=message.get("hostname"),
            process=process, resources=message.get("resources") or {},
            network=NetworkOptions(message.get("network") or "none",
                                   [f"{host}:{port}" for host, port in message.get("ports") or ()],
                                   loopback=False),
            command=message.get("command") or [], entrypoint=message.get("entrypoint"),
            workdir_given=message.get("workdir") is not None, store=message["store"],
            configure=configure)
        process.terminal = bool(message.get("terminal"))
        warnings: list[str] = []
        with _Console(process.terminal) as console:
            options.console_socket = console.path
            with log.captured(warnings), _as_stdio(fds):
                created = imagerun.create(options, message["root"], message["store"],
                                          foreground=False)
            created.release()  # its state owns its store directory now
            if created.network is not None:
                created.network.close(torn_down=True)  # the helper is done; the rest is delete's
            container = created.container
            pid = container._init_pid
            container._channel.close()
            container._init_pid = None
            self._adopt(pid, "container", message["root"], message["id"])
            with self._unmade_unless_told(pid, message["root"], message["id"], message["store"]):
                console.reply(request, {"ok": True, "pid": pid, "warnings": warnings,
                                        "image_config": created.image_config})
        return False

    def _op_exec(self, request: socket.socket, message: dict, fds: list[int]) -> bool:
        import tempfile

        from kubirun.base import log
        from kubirun.container import exec_in_container
        from kubirun.exec_into import ExecOptions
        from kubirun.spec import parse_process

        if message.get("process") is not None:
            spec = parse_process(message["process"], "process")
        else:  # an image container's process, as `kubirun exec ID ARGS...` makes it
            from kubirun.container import Container
            from kubirun.exec_into import process_from_args

            spec = process_from_args(message["args"], Container(message["id"],
                                                                message.get("root")).load())
            spec.env = spec.env + list(message.get("env") or [])
            if message.get("cwd"):
                spec.cwd = message["cwd"]
        if message.get("terminal"):
            spec.terminal = True
        warnings: list[str] = []
        with tempfile.TemporaryDirectory(prefix="kubirun-exec-") as scratch, \
                _Console(spec.terminal) as console:
            pid_file = os.path.join(scratch, "pid")
            with log.captured(warnings), _as_stdio(fds):
                exec_in_container(message["id"], spec,
                                  ExecOptions(detach=True, pid_file=pid_file,
                                              console_socket=console.path),
                                  root=message.get("root"))
            with open(pid_file) as f:
                pid = int(f.read())
            self._adopt(pid, "exec", message.get("root"), message["id"])
            try:
                console.reply(request, {"ok": True, "pid": pid, "warnings": warnings})
            except BaseException:
                # No one has heard of it (its caller hung up, or its terminal
                # never came): ended; the loop reaps it as any other.
                os.kill(pid, 9)  # our child, not yet reaped: its PID is its own
                raise
        return False

    def _op_socket(self, request: socket.socket, message: dict, fds: list[int]) -> bool:
        """A socket in the network namespace of the process whose pidfd
        came with the request.  setns there and back in this (single-
        threaded) process: two syscalls, where a forked child per socket
        would cost a fork and an exit.  A pidfd cannot name a process that
        has since ended (ESRCH), so a reused PID never gets it.  The
        container reaches none of this process: only its network namespace
        is entered, and nothing runs there but socket(2)."""
        from kubirun import _native

        if len(fds) != 1:
            raise ValueError("socket: expected one pidfd")
        family, kind = int(message.get("family", socket.AF_INET)), int(message.get("type",
                                                                             socket.SOCK_STREAM))
        if self._own_netns is None:
            self._own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _native.setns(fds[0], CLONE_NEWNET)
        try:
            made = socket.socket(family, kind | socket.SOCK_CLOEXEC)
        finally:
            try:
                _native.setns(self._own_netns, CLONE_NEWNET)
            except OSError:
                # Not back home: every later socket would be in the wrong
                # namespace.  End; the owner starts a new server.
                os._exit(70)
        with made:
            send(request, {"ok": True}, [made.fileno()])
        return False

    def _op_watch(self, request: socket.socket, message: dict, fds: list[int]) -> bool:
        pid = int(message["pid"])
        if pid in self.finished and pid not in self.children:
            send(request, {"ok": True, "exit": self.finished[pid]})
            return False
        if pid not in self.children:
            send(request, {"ok": False, "error": f"process {pid} is not a child of this server",
                           "code": 1})
            return False
        self.watchers.setdefault(pid, []).append(request)
        return True  # answered at the exit

    def _adopt(self, pid: int, kind: str, root: str | None, container_id: str) -> None:
        from kubirun import _native

        self.children[pid] = (kind, root, container_id)
        pidfd = _native.pidfd_open(pid)
        self.pidfds[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, lambda fd, pid=pid: self._on_exit(fd, pid))

    def _disown(self, pid: int) -> None:
        """Forget child ``pid``: whoever disowns it reaps it."""
        pidfd = self.pidfds.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        self.children.pop(pid, None)

    @contextlib.contextmanager
    def _unmade_unless_told(self, pid: int, root: str | None, container_id: str,
                            store: str | None = None):
        """The container just made (init ``pid``) is removed if its answer
        cannot be delivered: its caller hung up meanwhile (a cancelled
        ``create_async``; the caller's ``shutdown`` makes our send fail, so
        an answer is either read or refused, never lost), or its terminal
        never came.  Nothing of it stays: init, cgroup, state, root, network."""
        try:
            yield
        except BaseException:
            from kubirun import reclaim
            from kubirun.container import Container

            self._disown(pid)
            container = Container(container_id, root)
            container._init_pid = pid  # reaped by its delete (no exit record: no one asked)
            try:
                container.delete(force=True, leftovers=False)
            finally:
                if container._init_pid is not None:  # the delete failed before reaping it
                    from kubirun.children import kill_and_reap

                    kill_and_reap(pid)
                if store is not None:
                    reclaim.leftovers_of(container_id, root, store)
            raise

    def _on_exit(self, pidfd: int, pid: int) -> None:
        from kubirun import exitstatus

        self.selector.unregister(pidfd)
        os.close(pidfd)
        self.pidfds.pop(pid, None)
        # How it ended, while it is still a zombie; recorded; then reaped.
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        status = (info.si_status << 8 if info.si_code == os.CLD_EXITED
                  else info.si_status & 0x7f)
        kind, root, container_id = self.children.pop(pid)
        result = exitstatus.from_wait_status(status)
        if kind == "container":
            result = exitstatus.record(root, container_id, result)
        os.waitpid(pid, 0)
        self.finished[pid] = result
        while len(self.finished) > FINISHED_KEPT:
            del self.finished[next(iter(self.finished))]
        for watcher in self.watchers.pop(pid, []):
            try:
                send(watcher, {"ok": True, "exit": result})
            except OSError:
                pass  # that caller is gone
            watcher.close()
        if not self.owned and not self._containers():
            self.done = True  # its owner is gone, and so are the last of its containers

    def _containers(self) -> bool:
        return any(kind == "container" for kind, _, _ in self.children.values())


class _Console:
    """A console socket of our own, for a process asked for with a
    terminal: its init (or exec'd process) sends the pty master there, as
    to an engine's ``--console-socket``; ``reply`` passes it on to the
    caller with the answer.  Nothing without a terminal (``path`` None)."""

    ACCEPT_TIMEOUT = 30.0  # the process has sent it before create/exec returns: never reached

    def __init__(self, wanted: bool) -> None:
        self.path: str | None = None
        self.listener: socket.socket | None = None
        self.scratch: str | None = None
        if wanted:
            import tempfile

            self.scratch = tempfile.mkdtemp(prefix="kubirun-pty-")
            self.path = os.path.join(self.scratch, "console.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.listener.bind(self.path)
            self.listener.listen(1)

    def reply(self, request: socket.socket, answer: dict) -> None:
        if self.listener is None:
            send(request, answer)
            return
        self.listener.settimeout(self.ACCEPT_TIMEOUT)
        conn, _ = self.listener.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 64, 1)
        if not fds:
            raise OSError("the container's process sent no terminal")
        try:
            send(request, answer, fds[:1])
        finally:
            for fd in fds:
                os.close(fd)

    def __enter__(self) -> "_Console":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)


def _error_reply(err: BaseException) -> dict:
    from kubirun.base.errors import KubirunError, describe

    if isinstance(err, KubirunError):
        return {"ok": False, "error": str(err), "code": err.exit_code}
    return {"ok": False, "error": describe(err), "code": 1}


class _as_stdio:
    """The request's fds as this process's 0, 1, 2 while the init (or exec
    process) is forked, which inherits them; ours again afterwards."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds[:3]
        self.saved: list[int] = []

    def __enter__(self) -> "_as_stdio":
        for target, fd in enumerate(self.fds):
            self.saved.append(os.dup(target))
            os.dup2(fd, target)
        return self

    def __exit__(self, *exc: object) -> None:
        for target, fd in enumerate(self.saved):
            os.dup2(fd, target)
            os.close(fd)


def _hung_up(request: socket.socket) -> bool:
    """Whether the caller has closed (or shut down) its end of ``request``."""
    import select

    poller = select.poll()
    poller.register(request, select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def serve(control_fd: int) -> None:
    """The server's main: run until the owner is gone."""
    control = socket.socket(fileno=control_fd)
    os.set_inheritable(control_fd, False)
    # Our stdio is /dev/null: a container gets the caller's only if asked.
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)
    _warm_up()
    from kubirun import zygote

    spares = zygote.Zygote() if zygote.spares_can_serve() else None
    if spares is not None:
        spares.refill()
    Server(control, spares).run()


def _warm_up() -> None:
    """Import what every request needs before the first one comes, and
    leave those modules out of the garbage collector's passes (gc.freeze):
    a full collection then walks what requests made, not all of kubirun."""
    import gc

    import pickle  # noqa: F401 - a request to the zygote is pickled

    from kubirun import container, creation, exec_into, init, spec, zygote  # noqa: F401
    # What an init imports just before pivot_root (process.preload) for
    # the usual config (rlimits, capabilities, oomScoreAdj): imported here
    # once, not read from disk by every init (0.9 ms measured).
    from kubirun import capabilities, rlimits  # noqa: F401
    from kubirun.ns import procfs  # noqa: F401
    from kubirun.cgroups import hybrid, v1, v2  # noqa: F401

    gc.freeze()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
