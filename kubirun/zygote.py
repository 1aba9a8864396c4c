"""The fork server's zygote, and the spare init it keeps ready: the
container's init is forked before it is asked for, and handed its
config when a ``create`` comes.

Why.  A create through the fork server used to fork the init from the
server itself, half-way through the create.  Two costs came with that
fork, both measured on this project's 2-vCPU VM:

- the fork and the wait for the child to be first scheduled (on the
  other, idle CPU): 0.6-2 ms of the create, on its critical path;
- copy-on-write: ``fork`` shares every page of the forking process with
  the child until one of them writes it, and the server, which goes on
  to make the cgroup, write the state and answer while the init sets
  itself up, wrote ~650 pages a container (the
  ``exceptions:page_fault_user`` tracepoint: write faults on present
  pages), ~2 ms of CPU at ~3 µs a fault.

So the server forks, once, a zygote (a copy of itself with kubirun
imported), and the zygote forks *spare inits*: each waits, blocked on a
socket of its own, until the server sends it a config (``init.InitConfig``,
pickled: server, zygote and spare are one program, made by the same
forks) with its fds (SCM_RIGHTS: stdio, its ends of the channel, the
exec fifo, the exec helper).  The spare then runs ``container_init`` as a
freshly forked init would.  The server asks for the next spare once its
create has answered: that fork is off the critical path, and the pages
the zygote shares with an init are pages the zygote does not write.

A spare is forked with ``CLONE_PARENT``: its parent is the server, as if
the server had forked it (the server reaps it and watches its pidfd; its
``PDEATHSIG`` fires when the server dies, set before it waits).  It is
PID 1 of a new PID namespace (``CLONE_NEWPID``), non-dumpable (the
zygote is: the CVE-2019-5736 rule for any process that forks an init),
and in the server's cgroup until it joins the container's, as any init.
While it waits it makes the network and IPC namespaces its container will
most likely ask for (``_Ahead``).  The zygote and the spare die with the
server (``PDEATHSIG``); a server that closes kills them.

What is decided at the fork cannot be decided after it, so a config
takes a spare only if it asks for what every spare is: a new PID
namespace, no new user namespace, no cgroup to be born in
(``creation.Birthplace``, a hybrid host's unified hierarchy), no time
namespace, and no terminal or seccomp listener (sockets the server holds
for the init).  Any other init is forked by the server itself, as is
every init once the zygote is gone.
"""
from __future__ import annotations

import os
import socket

MAX_CONFIG = 1 << 20
STDIO = 3
# The fds a config comes with, after stdio; the request names which it sends.
SLOTS = ("to_runtime", "to_init", "exec_fifo", "exec_helper")


class Zygote:
    """The fork server's side: start the zygote, hand configs to spares."""

    def __init__(self) -> None:
        from kubirun import _native

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        server = os.getpid()
        self.pid = _native.fork()
        if self.pid == 0:
            ours.close()
            _zygote_main(theirs, server)  # never returns
        theirs.close()
        self.sock: socket.socket | None = ours
        self.spare: tuple[int, socket.socket] | None = None
        self.asked = False  # a spare asked for, its answer not yet read

    def fileno(self) -> int:
        """Readable when the spare asked for is ready (``receive_spare``);
        -1 once the zygote is gone."""
        return self.sock.fileno() if self.sock is not None else -1

    def fork_init(self, pid_ns, config, born) -> tuple[int, None] | None:
        """``creation._fork_init`` by way of a spare: hand it ``config``;
        its PID (born in no cgroup of its own).  None when no spare can
        take this config (the caller forks the init itself)."""
        if not fits(pid_ns, config, born):
            return None
        spare = self._take_spare()
        if spare is None:
            return None
        pid, sock = spare
        import pickle

        fds = [0, 1, 2, config.channel._to_runtime_w, config.channel._to_init_r]
        sent = ["to_runtime", "to_init"]
        for slot, fd in (("exec_fifo", config.exec_fifo), ("exec_helper", config.exec_helper)):
            if fd is not None and fd >= 0:
                fds.append(fd)
                sent.append(slot)
        request = pickle.dumps((config, sent), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            socket.send_fds(sock, [request], fds)
        except OSError:
            # Dead before it was used (killed by someone): reaped, forgotten.
            _end_spare(pid, sock)
            return None
        sock.close()
        return pid, None

    def refill(self) -> None:
        """Ask for the next spare if there is none (answered while the
        server waits for its next request)."""
        if self.spare is None and not self.asked and self.sock is not None:
            try:
                self.sock.send(b"spare")
                self.asked = True
            except OSError:
                self._gone()

    def receive_spare(self) -> None:
        """Take the spare asked for: its PID and our end of its socket."""
        if not self.asked or self.sock is None:
            return
        self.asked = False
        try:
            answer, fds, _, _ = socket.recv_fds(self.sock, 64, 1)
        except OSError:
            answer, fds = b"", []
        if not answer or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self._gone()
            return
        os.set_inheritable(fds[0], False)
        self.spare = int(answer), socket.socket(fileno=fds[0])

    def on_readable(self) -> None:
        """Its socket is readable: the spare asked for, or (nothing asked)
        its end of file."""
        if self.asked:
            self.receive_spare()
        else:
            self._gone()

    def _take_spare(self) -> tuple[int, socket.socket] | None:
        self.refill()
        self.receive_spare()
        spare, self.spare = self.spare, None
        return spare

    def _gone(self) -> None:
        """The zygote is gone, or to be (killed by someone, or closed): the
        server forks from now on."""
        from kubirun.children import kill_and_reap

        if self.sock is not None:
            self.sock.close()
            self.sock = None
        kill_and_reap(self.pid)

    def close(self) -> None:
        """End the spare and the zygote, and reap them."""
        if self.asked and self.sock is not None:
            self.sock.settimeout(1.0)  # a zygote that does not answer is ended all the same
        self.receive_spare()
        if self.spare is not None:
            _end_spare(*self.spare)
            self.spare = None
        if self.sock is not None:
            self._gone()


def spares_can_serve() -> bool:
    """Whether spares would ever be used here: as root (a spare's fork
    makes a PID namespace), on a host whose inits are not born in a cgroup
    (a hybrid host's unified hierarchy, where every init of root's is:
    ``creation.birthplace``)."""
    if os.geteuid() != 0:
        return False
    from kubirun.creation import host_layout

    layout = host_layout()
    return layout is None or layout.kind != "hybrid"


def fits(pid_ns, config, born) -> bool:
    """Whether a spare can be this init: what its fork decided is what
    this config asks for (see the module's docstring)."""
    return (pid_ns is not None and not pid_ns.path and not config.new_user and born is None
            and config.console_socket is None and config.seccomp_socket is None)


def _end_spare(pid: int, sock: socket.socket) -> None:
    """A spare holds nothing that needs its end of file: killed, reaped."""
    from kubirun.children import kill_and_reap

    sock.close()
    kill_and_reap(pid)


# --- the zygote -----------------------------------------------------------------

def _zygote_main(sock: socket.socket, server: int) -> "NoReturn":  # noqa: F821
    """Fork a spare per request, until the server is gone.  Never
    returns: a fork must not unwind into the server's code."""
    try:
        from kubirun import _native

        _native.prctl(_native.PR_SET_PDEATHSIG, 9)
        if os.getppid() != server:
            return  # the server died before we could follow it
        _native.prctl(_native.PR_SET_DUMPABLE, 0)
        # Nothing of the server's but stdio: above all not its control
        # socket, whose end of file tells it that its owner is gone.
        mine = sock.fileno()
        os.closerange(STDIO, mine)
        os.closerange(mine + 1, 1 << 20)
        _native.forget_exec_helper()  # closed: every config brings the server's
        while sock.recv(64):
            ours, theirs = socket.socketpair(socket.AF_UNIX,
                                             socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            # PID 1 of a PID namespace of its own, the server's child.
            pid = _native.fork_with_flags(_native.CLONE_NEWPID | _native.CLONE_PARENT)
            if pid == 0:
                sock.close()  # the server must see the zygote's end of file, not ours
                theirs.close()
                _spare_main(ours)  # never returns
            ours.close()
            socket.send_fds(sock, [str(pid).encode()], [theirs.fileno()])
            theirs.close()
    finally:
        os._exit(0)


# --- a spare --------------------------------------------------------------------

def _spare_main(sock: socket.socket) -> "NoReturn":  # noqa: F821
    """Wait for a config, then be its init; exit at end of file."""
    try:
        from kubirun import _native

        _native.prctl(_native.PR_SET_PDEATHSIG, 9)  # the server's death (CLONE_PARENT)
        ahead = _Ahead()
        request, fds, _, _ = socket.recv_fds(sock, MAX_CONFIG, STDIO + len(SLOTS))
        sock.close()
        if not request:
            os._exit(0)  # end of file: not needed after all
        config = _config(request, fds)
        ahead.settle(config)
    except BaseException:  # noqa: BLE001 - nothing to report to: the server sees the exit
        os._exit(1)
    from kubirun.init import container_init

    container_init(config)  # never returns


class _Ahead:
    """The namespaces a spare makes while it waits: a network namespace
    (its loopback up) and an IPC one.  Making them is most of the init's
    ``unshare`` (0.4 and 0.1 of its 0.6 ms, measured), and a new one of
    either holds nothing of the host's, so one made a while ago is the
    same as one made now.  Unlike a mount namespace, say, which would copy
    the host's mounts of then, and miss a root an engine mounts just
    before its ``create``; or a UTS one, the host's names of then."""

    def __init__(self) -> None:
        from kubirun import _native

        self.host: dict[int, int] = {}  # CLONE_NEW* flag: an fd of the host's namespace
        for name, flag in (("net", _native.CLONE_NEWNET), ("ipc", _native.CLONE_NEWIPC)):
            self.host[flag] = os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        from kubirun.ns.loopback import bring_up_loopback

        try:
            _native.unshare(sum(self.host))
            bring_up_loopback(_native.Kernel())
        except OSError:
            self.settle(None)  # the init makes them, as without a spare

    def settle(self, config) -> None:
        """Keep ours for an init that asks for new ones (no path) and no
        user namespace (which would own those it makes); else back to the
        host's, where the init's own steps start from."""
        from kubirun import _native

        for flag, host in self.host.items():
            if config is not None and config.unshare & flag and not config.in_user_ns:
                config.unshare &= ~flag
                if flag == _native.CLONE_NEWNET:
                    config.new_netns = False  # its loopback is up
            else:
                _native.setns(host, flag)
            os.close(host)
        self.host = {}


def _config(request: bytes, fds: list[int]):
    """The ``InitConfig`` a request carries, its fds put in place: stdio
    as our 0, 1, 2, the rest (close-on-exec, as they were in the server)
    where the config names them."""
    import pickle

    config, sent = pickle.loads(request)
    for target in range(STDIO):
        os.dup2(fds[target], target)
        os.close(fds[target])
    got = dict(zip(sent, fds[STDIO:]))
    for fd in got.values():
        os.set_inheritable(fd, False)
    channel = config.channel
    channel._to_runtime_w, channel._to_init_r = got["to_runtime"], got["to_init"]
    channel._to_runtime_r = channel._to_init_w = None  # the server's ends stay there
    config.exec_fifo = got.get("exec_fifo")
    config.exec_helper = got.get("exec_helper", -1)
    return config
