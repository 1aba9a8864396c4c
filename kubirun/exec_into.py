"""``kubirun exec``: a new process inside a running container.

    1. the container must be running; its init's namespaces are opened
       through /proc/PID/ns (checked to still be that init)
    2. we make ourselves non-dumpable, join its PID namespace, fork once:
       the child is born inside, never ptrace-able by the container
       (the CVE-2016-9962 class), and we return to our own
    3. the child joins the other namespaces (mount last: it moves our root
       into the container's)
    4. the child moves itself into the container's cgroup (before the
       mount namespace hides the host's /sys/fs/cgroup); on a hybrid host
       it was born in the unified hierarchy's (``creation.Birthplace``)
    5. the child becomes the process: terminal, user, capabilities,
       environment, the container's seccomp filter, ``execve`` (the same
       steps as the init's); a filter with a listener passes it to us,
       and we to the seccomp agent (``kubirun.seccomp_notify``)
    6. we wait and return its exit status, or return at once (``-d``)
"""
from __future__ import annotations

import errno
import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start
import sys

from kubirun import _native, process
from kubirun.base import explain
from kubirun._native import CLONE_NEWPID, PR_SET_DUMPABLE
from kubirun.channel import READY, InitChannel
from kubirun.children import reap
from kubirun.base.errors import KubirunError
from kubirun.init import cgroups_join, not_born_in
from kubirun.base.killpoint import reached
from kubirun.ns.namespaces import JOIN_ORDER, NAMESPACE_FLAGS, PROC_NS_NAMES, fork
from kubirun.tail import finish_and_exec, run_child


class ExecOptions:
    def __init__(self, detach: bool = False, pid_file: str | None = None,
                 console_socket: str | None = None, preserve_fds: int = 0,
                 ignore_paused: bool = False, cgroup: list[str] | None = None) -> None:
        self.detach = detach
        self.cgroup = list(cgroup or ())  # runc's --cgroup: sub-cgroups to join
        self.ignore_paused = ignore_paused  # runc's --ignore-paused
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds


def process_from_file(path: str) -> process.ProcessSpec:
    from kubirun.base import jsonio
    from kubirun.spec import SpecError, parse_process

    try:
        raw = jsonio.load_file(path)
    except OSError as err:
        raise KubirunError(f"cannot read process file {path}: {err.strerror}") from None
    except (jsonio.JSONError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: malformed JSON: {err}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a JSON object (a runtime-spec process)")
    return parse_process(raw, "process")


def process_from_args(args: list[str], state: dict) -> process.ProcessSpec:
    """``exec ID CMD...``: the container's own process (env, cwd, user,
    capabilities, no_new_privs, rlimits) with CMD as its arguments, as runc
    does for a bundle's and docker for an image run's.

    ``state`` is the container's state (``Container.load()``); its runtime-spec
    ``process`` object alone is accepted too, as library callers passed it
    before image runs recorded theirs."""
    if "cwd" in state and "id" not in state:  # a runtime-spec process object
        state = {"process": state}
    if state.get("process"):
        from kubirun.spec import parse_process

        return parse_process(dict(state["process"], args=args, terminal=False), "process")
    if state.get("image_process"):
        return process.exec_process_from_image_state(state["image_process"], args)
    why = ("its config.json has no process" if state.get("no_process")
           else "it was made by an older kubirun")
    raise KubirunError(f"container {state.get('id')} has no process to exec from ({why}):"
                       " give the whole process with --process FILE")


def exec_in(container, spec: process.ProcessSpec, options: ExecOptions) -> int:
    """Run ``spec`` in ``container`` (a kubirun.container.Container, which
    imports this module: hence an argument, not an import); by id:
    kubirun.container.exec_in_container."""
    container_id = container.id
    state = container.load()
    status = container.status(state)
    if status not in ("running", "created") and not (status == "paused" and options.ignore_paused):
        raise KubirunError(f"cannot exec in container {container_id}: it is {status}")
    if spec.terminal and options.detach and not options.console_socket:
        raise KubirunError("exec -t -d needs --console-socket to hand the terminal to")
    pid = state["pid"]
    seccomp = agent = None
    if state.get("seccomp"):
        from kubirun.seccomp import Program

        seccomp = Program.from_state(state["seccomp"])
        if seccomp.listener:
            if not state.get("seccomp_agent"):
                raise KubirunError(f"container {container_id}: its seccomp filter has a listener"
                                   " but no agent is recorded for it")
            # Its state as `kubirun state` shows it, as runc sends it.
            agent = dict(state["seccomp_agent"], state=container._hook_state(state, status))
    join, birthplace = state.get("cgroup_join", []), state.get("cgroup_birthplace")
    if options.cgroup:
        join, birthplace = _sub_cgroups(container_id, state, options.cgroup, join, birthplace)
    namespaces = _open_namespaces(pid, state.get("namespaces", {}))
    try:
        return _fork_and_wait(container, state, spec, options, namespaces, join, birthplace,
                              seccomp, agent)
    finally:
        for _, fd in namespaces:
            os.close(fd)


def _open_namespaces(pid: int, configured: dict) -> list[tuple[str, int]]:
    """The init's namespaces that differ from ours, in join order."""
    result = []
    for kind in JOIN_ORDER:
        if kind not in configured:
            continue  # shared with the host: nothing to join
        name = PROC_NS_NAMES[kind]
        theirs = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
            result.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
        except FileNotFoundError:
            raise KubirunError(f"container's init {pid} is gone") from None
    if "mount" not in configured:
        # It shares our mount namespace, chrooted (ns.hostmount): so are we.
        try:
            result.append(("root", os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)))
        except FileNotFoundError:
            raise KubirunError(f"container's init {pid} is gone") from None
    return result


def _sub_cgroups(container_id: str, state: dict, args: list[str], join: list,
                 birthplace: str | None) -> tuple[list, str | None]:
    """The join files and birthplace (see ``_fork_and_wait``) for
    ``exec --cgroup ARGS``: those of the existing sub-cgroups named."""
    from kubirun.cgroups import CgroupError, detect_layout, subcgroup

    cgroup_path = (state.get("cgroup") or {}).get("path")  # normalised (no "//", no "/." )
    try:
        paths = subcgroup.parse(args)
        if not cgroup_path or not (join or birthplace):
            raise CgroupError("--cgroup: the container has no cgroup of its own")
        layout = detect_layout()
        keyed = [(path, memory, subcgroup.hierarchy_keys(os.path.dirname(path), cgroup_path, layout))
                 for path, memory in join]
        born_keys = subcgroup.hierarchy_keys(birthplace, cgroup_path, layout) if birthplace else []
        subcgroup.check_controllers(
            paths, {k for *_, keys in keyed for k in keys} | set(born_keys))
        join = [(os.path.join(subcgroup.redirect(os.path.dirname(path), keys, paths),
                              os.path.basename(path)), memory)
                for path, memory, keys in keyed]
        if birthplace:
            birthplace = subcgroup.redirect(birthplace, born_keys, paths)
    except CgroupError as err:
        raise KubirunError(f"cannot exec in container {container_id}: {err}") from None
    return join, birthplace


def _fork_and_wait(container, state: dict, spec: process.ProcessSpec, options: ExecOptions,
                   namespaces: list[tuple[str, int]], join: list, birthplace_dir: str | None,
                   seccomp=None, agent: dict | None = None) -> int:
    """``join``: the cgroup files the child writes itself into (see
    ``Cgroup.join_files``); ``birthplace_dir``: the cgroup it is born in
    (see ``creation.Birthplace``), whose file it then skips."""
    channel = InitChannel()
    to_agent = theirs = None  # the child passes its seccomp listener on this socketpair
    if agent is not None:
        import socket

        import kubirun.seccomp_notify  # noqa: F401 - the child's, once in the container's root

        to_agent, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    console = None
    ours = None
    if spec.terminal:
        from kubirun import console as console_module

        if options.console_socket:
            console = console_module.connect_console_socket(options.console_socket)
        else:
            import socket

            ours, console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    helper = _native.exec_helper_fd()
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    pid_fd = next((fd for kind, fd in namespaces if kind == "pid"), None)
    birthplace = _open_birthplace(birthplace_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    _native.prctl(PR_SET_DUMPABLE, 0)
    try:
        if pid_fd is not None:
            explain.say("setns(pid, CLONE_NEWPID)", "our next child is born in the container's"
                        " PID namespace")
            _native.setns(pid_fd, CLONE_NEWPID)
        child, born_in = _fork(birthplace, birthplace_dir)
        if child == 0:
            if to_agent is not None:
                to_agent.close()
            _exec_child(spec, channel, namespaces, not_born_in(join, born_in),
                        console, ours is not None, options.preserve_fds, seccomp, helper,
                        state.get("session_keyring"), theirs)
        if pid_fd is not None:
            _native.setns(own_pid_ns, CLONE_NEWPID)
    finally:
        os.close(own_pid_ns)
        if birthplace is not None:
            os.close(birthplace)
    channel.parent_side()
    if theirs is not None:
        theirs.close()
    master = None
    try:
        if console is not None:
            console.close()
        if ours is not None:
            from kubirun import console as console_module

            master = console_module.receive_master(ours, console_module.caller_terminal())
        reached("exec.forked")
        if to_agent is not None:
            # Its listener, before its READY (it waits for our answer); end
            # of file if it failed before: READY's wait then says why.
            from kubirun.seccomp_notify import process_state, relay

            conn, to_agent = to_agent, None
            relay(conn, agent["listenerPath"], process_state(  # closes conn
                state["ociVersion"], child, agent["listenerMetadata"], agent["state"]))
        channel.expect(READY, "preparing its process")
        reached("exec.ready")
        from kubirun.base import log

        log.debug(f"container {container.id}: exec {spec.args[0]!r} ready, pid {child}")
        if options.detach:
            # As runc: a detached exec returns once the program runs (the
            # report fd closes at its execve), so the pid file names the
            # program and not our helper, and a failed execve is an error.
            channel.expect(b"", "running")
        if options.pid_file:
            from kubirun.children import write_pid_file

            write_pid_file(options.pid_file, child)
        if options.detach:
            return 0
        return _wait(child, channel, master, spec.interactive or spec.terminal)
    except BaseException:
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass
        reap(child)
        raise
    finally:
        channel.close()
        if to_agent is not None:
            to_agent.close()


def _open_birthplace(directory: str | None) -> int | None:
    """The container's unified cgroup directory on a hybrid host, which the
    process is born in as its init was (see ``creation.Birthplace``); None
    without one, or when it cannot be opened (it then joins it by writing)."""
    if directory is None:
        return None
    try:
        return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _fork(birthplace: int | None, directory: str | None) -> tuple[int, str | None]:
    """Fork (0 in the child); with the directory the child was born in."""
    if birthplace is not None:
        try:
            return fork(0, birthplace), directory
        except OSError as err:
            if err.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                raise
    return _native.fork(), None


def _wait(child: int, channel: InitChannel, master: int | None, interactive: bool) -> int:
    from kubirun.signals import SignalForwarder

    pidfd = _native.pidfd_open(child)
    try:
        with SignalForwarder(pidfd):
            channel.expect(b"", "running")
            if master is not None:
                from kubirun import console

                with console.TerminalRelay(master, pidfd, interactive) as relay:
                    relay.run()
            return reap(child)
    finally:
        os.close(pidfd)


def _exec_child(spec: process.ProcessSpec, channel: InitChannel, namespaces: list[tuple[str, int]],
                cgroup_join: list, console, ack: bool, preserve_fds: int,
                seccomp=None, helper: int = -1, session_keyring: str | None = None,
                to_runtime=None) -> "NoReturn":  # noqa: F821
    """Steps 3 to 5, in the forked child; never returns."""
    run_child(channel, lambda: enter_and_exec(
        _native.Kernel(), spec, channel, namespaces, cgroup_join, console, ack, preserve_fds,
        seccomp, helper, session_keyring, to_runtime))


def enter_and_exec(kernel, spec: process.ProcessSpec, channel: InitChannel,
                   namespaces: list[tuple[str, int]], cgroup_join: list, console, ack: bool,
                   preserve_fds: int, seccomp, helper: int, session_keyring: str | None,
                   to_runtime) -> None:
    """Exec's steps in the child, every system call through ``kernel`` (a
    ``_native.Kernel``; tests/unit/test_init_steps.py records them)."""
    channel.child_side()
    process.preload(spec)  # the container's root has no Python modules
    if spec.terminal:
        from kubirun import console as console_module
    # 3. Into the container's cgroup (ourselves: see Cgroup.join_files),
    #    the memory hierarchy last.
    memory_file = cgroups_join(kernel, cgroup_join)
    # 4. Join the container's namespaces; the mount namespace last (or,
    #    for a container without one, its chroot).
    for kind, fd in namespaces:
        if kind == "root":
            kernel.fchdir(fd)
            kernel.chroot(".")
        elif kind != "pid":
            explain.say("setns({}, {:clone})", "join the running container's namespace",
                        kind, NAMESPACE_FLAGS[kind])
            kernel.setns(fd, NAMESPACE_FLAGS[kind])
    kernel.chdir("/")
    if memory_file is not None:
        kernel.write(memory_file, b"0")
        kernel.close(memory_file)
    # The container's session keyring, not the caller's (its keys are
    # not the container's to see): the one its init made, found by name.
    if session_keyring:
        _join_session_keyring(kernel, session_keyring)
    # 5. Terminal, user, capabilities, environment.
    slave = None
    if spec.terminal:
        master, slave = console_module.open_pty_in_current_root()
        console_module.hand_over_master(console, master, spec.console_size, ack)
    identity, program, env = process.prepare(spec, "")
    if slave is not None:
        console_module.give_terminal_to(kernel, slave, identity.uid)
        console_module.become_controlling_terminal(kernel, slave)
    # 6. What init does last (kubirun.init, steps 15 to 18; one copy:
    #    kubirun.tail): signals, fds, seccomp, user, then READY (after
    #    the filter, so that its failure reaches `exec -d` too), execve.
    finish_and_exec(kernel, spec, identity, program, env, preserve_fds=preserve_fds,
                    seccomp=seccomp, exec_helper=helper,
                    report_fds=(channel.report_fd(),), say_on_stderr=False,
                    seccomp_conn=lambda: to_runtime,
                    before_exec=lambda _execveat_allowed: channel.tell(READY))


def _join_session_keyring(kernel, name: str) -> None:
    """Join the keyring ``name`` (made, searchable by its user, by the
    container's init); a kernel without keyrings is not an error."""
    try:
        kernel.join_session_keyring(name)
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
