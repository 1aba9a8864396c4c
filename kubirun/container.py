"""A container's lifecycle, as the OCI runtime spec defines it
(runtime.md): create -> created -> start -> running -> stopped -> delete.

``Container`` is the library API; every CLI command is a thin call into it.

    create   claim the id, make the cgroup, fork the init; the init sets up
             the namespaces and mounts and waits on the exec fifo; the
             hooks run at their points; returns once the container is
             ``created``
    start    open the exec fifo: the init goes on to ``execve``
    state    derived from the kernel (is the init alive, the same process,
             frozen, still waiting?), never trusted from the file alone
    kill     a signal through a pidfd (never a recycled PID), or to every
             process of the cgroup (``--all``)
    delete   kill what is left (``--force``), poststop hooks, remove the
             cgroup and the state directory; with ``--force`` also what a
             killed runtime left of the id (``kubirun.reclaim``)
"""
from __future__ import annotations

import os
import time

from kubirun.base import log
from kubirun.base.errors import ContainerStartError, KubirunError
from kubirun.base.killpoint import reached
from kubirun.children import reap, write_pid_file  # noqa: F401 (kubirun.container.reap)
from kubirun.state import (Corrupt, NotFound, StateDir, default_root, derive_status, oci_state,
                           proc_stat_fields, process_start_time)

# kubirun.spec (the ``Spec`` of the annotations) and kubirun._native are
# imported where they are used: kill, delete, start and state need neither.

DEFAULT_CGROUP_PARENT = "/kubirun"


class CreateOptions:
    """How ``create`` (or ``run``) was called, beyond the bundle."""

    def __init__(self, pid_file: str | None = None, console_socket: str | None = None,
                 no_pivot: bool = False, preserve_fds: int = 0, foreground: bool = False,
                 remove_on_delete: str | None = None, new_keyring: bool = True,
                 network: dict | None = None, ephemeral: bool = False) -> None:
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.foreground = foreground  # `run` without -d: we relay and wait
        self.remove_on_delete = remove_on_delete  # an unpacked image root of ours
        self.new_keyring = new_keyring  # False: --no-new-keyring
        self.network = network  # `run IMAGE`'s network record (kubirun.ns.net), undone at delete
        # Deleted by the command that made it when it ends (`run` without
        # -d or --keep): once that command is dead, the container is a
        # leftover that `gc` and `run` of the same name remove.
        self.ephemeral = ephemeral
        # (pid_ns, InitConfig, Birthplace) -> (pid, born_in) of an init
        # forked for us, or None: we fork it (the fork server's zygote)
        self.init_forker = None


class Container:
    """One container of a state root; its id is checked with runc's rules."""

    def __init__(self, container_id: str, root: str | None = None) -> None:
        self.dir = StateDir(root or default_root(), container_id)
        self.id = self.dir.id
        self._init_pid: int | None = None  # set when this process forked the init
        self._channel = None
        self._master: int | None = None

    # --- reading ---------------------------------------------------------

    def load(self) -> dict:
        return self.dir.read()

    def status(self, state: dict | None = None) -> str:
        return derive_status(self.dir, state or self.load())

    def state(self) -> dict:
        """The OCI state (runtime.md#state)."""
        return oci_state(self.dir, self.load())

    def _hook_state(self, state: dict, status: str) -> dict:
        hook_state = {"ociVersion": state["ociVersion"], "id": self.id, "status": status,
                      "pid": state.get("pid", 0), "bundle": state["bundle"]}
        if state.get("annotations"):
            hook_state["annotations"] = state["annotations"]
        return hook_state

    def _cgroup(self, state: dict):
        from kubirun.cgroups import open_cgroup

        cg = state.get("cgroup")
        if not cg:
            raise KubirunError(f"container {self.id} has no cgroup (rootless, none delegated)")
        return open_cgroup(cg["path"], cg)

    # --- create ----------------------------------------------------------

    @classmethod
    def create(cls, container_id: str, spec: Spec, root: str | None = None,
               options: CreateOptions | None = None) -> "Container":
        options = options or CreateOptions()
        if spec.process is None:
            # The runtime-spec requires `process` only at start: the
            # container is made, its init waits, and `start` refuses.
            from kubirun.process import absent_process

            spec.process = absent_process()
        container = cls(container_id, root)
        container.dir.make()  # the id claimed, its lock held
        try:
            reached("create.claimed")
            container._create(spec, options)
        except BaseException:
            container._abort_create()
            raise
        finally:
            container.dir.unlock()
        return container

    def _create(self, spec: Spec, options: CreateOptions) -> None:
        from kubirun import creation
        from kubirun.process import image_process_state

        state = {
            "ociVersion": spec.version, "id": self.id, "status": "creating",
            "pid": 0, "pid_start": 0,
            "creator": [os.getpid(), process_start_time(os.getpid())],
            "bundle": spec.bundle, "rootfs": spec.root,
            "created": _now(), "annotations": spec.annotations,
            "hooks": {phase: [h.to_json() for h in spec.hooks.get(phase, [])]
                      for phase in ("poststart", "poststop")},
            "namespaces": {ns.type: ns.path for ns in spec.namespaces},
            # `exec` without --process starts from the config's process, as runc's
            "process": spec.raw.get("process") if spec.process.oci else None,
            "no_process": spec.process.absent,
            "image_process": None if spec.process.oci else
            image_process_state(spec.process, spec.hostname or ""),
            # `exec`'d processes get the container's seccomp filter, as runc's;
            # compiled now (its errors and warnings come before anything is made)
            "seccomp": spec.seccomp.compile().to_state() if spec.seccomp else None,
            # where `start` and `exec` send the filter's listener, if it has one
            "seccomp_agent": _seccomp_agent(spec),
            "remove_on_delete": options.remove_on_delete,
            "network": options.network,
            # the init's session keyring, which `exec`'d processes join (runc's)
            "session_keyring": f"_ses.{self.id}" if options.new_keyring else None,
            "ephemeral": options.ephemeral,
        }
        self._creating = state  # what _abort_create undoes, kept up to date
        os.mkfifo(self.dir.fifo, 0o600)
        reached("create.fifo")
        if spec.uid_mappings:
            # The init opens it as the user namespace's root (as runc does).
            from kubirun.ns.namespaces import host_id

            os.chown(self.dir.fifo, host_id(spec.uid_mappings, 0) or 0,
                     host_id(spec.gid_mappings, 0) or 0)
        state["cgroup_path"] = creation.cgroup_path(spec, self.id)
        layout = creation.host_layout()

        def fork(born: creation.Birthplace | None) -> creation.InitRun:
            run = creation.start_init(self.id, spec, self.dir.fifo, options, state.get("host_mount"), born)
            self._init_pid, self._channel, self._master = run.pid, run.channel, run.master
            reached("create.forked")
            state["pid"], state["pid_start"] = run.pid, process_start_time(run.pid)
            log.debug(f"container {self.id}: init forked, pid {run.pid}"
                      + (f", born in {run.born_in}" if run.born_in else ""))
            return run

        # A spare init of the fork server (kubirun.zygote) starts setting
        # itself up now, while we record it and make its cgroup; it dies
        # with us (PDEATHSIG since its birth), as an init forked later would.
        run = fork(None) if creation.init_before_record(spec, options, layout) else None
        # A cgroup someone made before us (an engine's, a test's) is never
        # ours to remove when this create fails half-way.
        state["cgroup_existed"] = creation.cgroup_exists(state["cgroup_path"], layout)
        if spec.namespace("mount") is None:
            from kubirun.ns import hostmount

            log.warning(f"container {self.id}: no mount namespace: it shares kubirun's, in a chroot")
            state["host_mount"] = hostmount.record(spec.root, self.dir.path)  # before the init binds
        # Written twice only (each write is a rename, ~0.3 ms on ext4): now,
        # so that a runtime killed from here on leaves a record of what to
        # clean up, and once the init is waiting.
        self.dir.write(state)
        reached("create.recorded")

        born = None
        if run is None:
            born = creation.birthplace(state["cgroup_path"], spec, layout)
            try:
                if born is not None:
                    state["cgroup"] = born.state  # what a failed create removes, until set_up_cgroup's
                run = fork(born)
            finally:
                if born is not None:
                    born.close()
        try:
            cgroup = creation.set_up_cgroup(state["cgroup_path"], spec, self.id, born, run.pid, layout)
        except BaseException:
            if born is not None:
                state["cgroup"] = born.state  # removed by _abort_create, once the init is dead
            raise
        if cgroup is not None:
            state["cgroup"] = cgroup.to_state()
            state["cgroup_join"] = creation.join_files(spec, cgroup)
            # `exec`'d processes are born there too (see creation.Birthplace)
            state["cgroup_birthplace"] = born.directory if born is not None else None
            state["freezer_file"] = cgroup.freezer_file()
            log.debug(f"container {self.id}: cgroup {cgroup.path} ({cgroup.kind})")
        else:
            state["cgroup_path"] = None
        reached("create.cgroup")

        def record_created() -> None:
            state["status"] = "created"
            self.dir.write(state)
            reached("create.created")

        def apply_limits() -> None:
            creation.apply_resources(cgroup, spec, self.id)
            state["cgroup"] = cgroup.to_state()  # with the controllers the limits enabled

        creation.complete(run, spec, cgroup, hook_state=lambda: self._hook_state(state, "creating"),
                          persist=lambda: self.dir.write(state), record_created=record_created,
                          meanwhile=_import_for_wait if options.foreground else None,
                          limits=apply_limits if cgroup is not None else None)
        if options.pid_file:
            write_pid_file(options.pid_file, run.pid)
        reached("create.done")
        log.debug(f"container {self.id}: created")

    def _abort_create(self) -> None:
        """Undo a failed create (its lock still held): the init, the cgroup,
        the state directory."""
        if self._init_pid:
            try:
                os.kill(self._init_pid, 9)  # our own child: its PID cannot be recycled before we reap it
            except ProcessLookupError:
                pass
            reap(self._init_pid)
            self._init_pid = None
        if self._channel is not None:
            self._channel.close()
        if self._master is not None:
            os.close(self._master)
        state = getattr(self, "_creating", None)
        if state is None:
            try:
                state = self.dir.read()
            except KubirunError:
                state = {}
        try:
            self._remove_cgroup(state)
        except Exception as err:  # noqa: BLE001 - report, and still remove the state
            log.warning(f"container {self.id}: cannot remove its cgroup: {err}")
        _detach_host_mount(state)
        self.dir.remove()

    # --- start -----------------------------------------------------------

    def start(self) -> None:
        with self.dir:
            state = self.load()
            status = self.status(state)
            if status != "created":
                raise KubirunError(f"cannot start container {self.id}: it is {status}, not created")
            if state.get("no_process"):
                # The init keeps waiting: delete ends it as any created one.
                raise KubirunError(f"cannot start container {self.id}: its config.json has no"
                                   " process (the runtime-spec requires one at start)")
            _release_init(self.dir.fifo, state, self._seccomp_agent(state))
            os.unlink(self.dir.fifo)
            if state.get("seccomp_agent"):
                self.dir.remove_seccomp_socket()
            log.debug(f"container {self.id}: started")
        hooks = _recorded_hooks(state, "poststart")
        if hooks:
            from kubirun.hooks import run_hooks

            run_hooks("poststart", hooks, self._hook_state(state, "running"), log.warning)

    def _seccomp_agent(self, state: dict) -> tuple[str, dict] | None:
        """Where the init's seccomp listener goes, and the container
        process state sent with it; None without a listener.  Its status
        is "creating", as runc's and crun's (they load the filter during
        `create`): the program does not run yet."""
        agent = state.get("seccomp_agent")
        if not agent:
            return None
        from kubirun.seccomp_notify import process_state

        return agent["listenerPath"], process_state(
            state["ociVersion"], state["pid"], agent["listenerMetadata"],
            self._hook_state(state, "creating"))

    # --- foreground run (the caller forked the init) ---------------------

    def start_and_wait(self, interactive: bool = False) -> int:
        """``run`` in the foreground: start and wait, forwarding our signals
        from before the start on (the program may be ready at once)."""
        return self.wait(interactive, start=True)

    def wait(self, interactive: bool = False, start: bool = False) -> int:
        """Wait for the init we forked: relay its terminal, forward our
        signals, report an ``execve`` failure; its exit status (128+N for
        death by signal N)."""
        if self._init_pid is None:
            raise KubirunError(f"container {self.id}: wait needs the process that created it")
        from kubirun.signals import SignalForwarder

        from kubirun import _native

        pid = self._init_pid
        pidfd = _native.pidfd_open(pid)
        try:
            with SignalForwarder(pidfd):
                if start:
                    self.start()
                try:
                    self._channel.expect(b"", "running")
                except ContainerStartError:
                    reap(pid)
                    self._init_pid = None
                    raise
                if self._master is not None:
                    from kubirun import console

                    master, self._master = self._master, None
                    with console.TerminalRelay(master, pidfd, interactive) as relay:
                        relay.run()
                code = reap(pid)
                self._init_pid = None
                if code == 137:
                    self._say_if_oom_killed()
                return code
        finally:
            os.close(pidfd)
            self._channel.close()

    def _say_if_oom_killed(self) -> None:
        """Exit 137 is SIGKILL: say when it was the kernel's OOM killer."""
        try:
            state = self.load()
            kills = self._cgroup(state).oom_kills() if state.get("cgroup") else 0
        except Exception:  # noqa: BLE001 - an explanation, not a requirement
            return
        if kills:
            log.error(f"container {self.id} was killed by the kernel's OOM killer"
                      " (over its memory limit)")

    # --- kill, delete ----------------------------------------------------

    def kill(self, signal: int, all_processes: bool = False) -> None:
        with self.dir:
            state = self.load()
            status = self.status(state)
            if status == "stopped":
                if all_processes:
                    # runc's: what is left in the cgroup (children of an init
                    # without a PID namespace of its own) is signalled, and a
                    # stopped container is no failure: containerd's CRI
                    # StopContainer sends `kill --all ID 9` after the task
                    # exited, and retries for ~40 s while that fails.
                    self._signal_left_over(state, signal)
                    return
                raise KubirunError(f"cannot signal container {self.id}: container not running")
            log.debug(f"container {self.id}: signal {signal} to {'all' if all_processes else 'init'}")
            if all_processes:
                self._cgroup(state).kill_all(signal)
            else:
                _signal_init(state, signal)
            if signal == 9 and status == "paused":
                self._cgroup(state).thaw()  # a frozen process cannot die

    def _signal_left_over(self, state: dict, signal: int) -> None:
        """``kill --all`` of a stopped container: the processes still in its
        cgroup, if it has one and any are left."""
        if not state.get("cgroup"):
            return
        cgroup = self._cgroup(state)
        if cgroup.pids():
            log.debug(f"container {self.id}: stopped; signal {signal} to what is left in its cgroup")
            cgroup.kill_all(signal)

    def delete(self, force: bool = False, leftovers: bool = True) -> None:
        """Delete the container; ``force`` kills it first if need be, and
        removes whatever a killed runtime left of the id: a state directory
        without a (readable) state, the store's directory of an image run
        of that name, its network leases (``kubirun.reclaim``; not when
        the run that owns the name deletes its own container: ``leftovers``
        False, nor after a bundle's container deleted by its record: an
        image run's store directory and leases are in the record of the
        container that has them, and engines ``delete --force`` every task)."""
        recorded_bundle = False
        try:
            try:
                self.dir.lock()
            except NotFound:
                if force:
                    return
                raise
            try:
                try:
                    state = self.load()
                except (NotFound, Corrupt):
                    if not force:
                        raise
                    # Its creator died before the first write (we hold the
                    # lock: no live command is working on it), or the file
                    # was damaged: nothing recorded to go by.
                    self._remove_unrecorded()
                    return
                recorded_bundle = not state.get("remove_on_delete") and not state.get("network")
                self._delete(state, force)
            finally:
                self.dir.unlock()
        finally:
            if force and leftovers and not recorded_bundle:
                from kubirun import reclaim

                reclaim.leftovers_of(self.id, self.dir.root)

    def _delete(self, state: dict, force: bool) -> None:
        status = self.status(state)
        log.debug(f"container {self.id}: delete ({status}{', force' if force else ''})")
        if status in ("running", "paused") and not force:
            raise KubirunError(f"cannot delete container {self.id}: it is {status}"
                               " (stop it first, or use --force)")
        if status != "stopped":
            self._kill_and_wait(state, status)
        if self._init_pid is not None:
            # This process forked the init (the library used in-process):
            # reap it, or it stays a zombie of ours.
            reap(self._init_pid)
            self._init_pid = None
        reached("delete.killed")
        self._destroy(state)

    def _remove_unrecorded(self) -> None:
        """A state directory with no state to go by: the id's cgroup at
        kubirun's default place (a damaged state file may have been that
        of a created container), its processes killed, and the directory."""
        log.debug(f"container {self.id}: removing a directory without a readable state")
        try:
            from kubirun.cgroups import DESTROY_TIMEOUT, fs, open_cgroup
            from kubirun.creation import cgroup_path

            cgroup = open_cgroup(cgroup_path(_NoSpec, self.id))
            if any(os.path.isdir(d) for d in cgroup.dirs()):
                cgroup.kill_all(9)
                deadline = fs.monotonic() + DESTROY_TIMEOUT
                for directory in cgroup.dirs():
                    if os.path.isdir(directory):
                        fs.remove_tree(directory, deadline)
        except Exception as err:  # noqa: BLE001 - nothing recorded: a best effort
            log.warning(f"container {self.id}: cannot remove its cgroup: {err}")
        self.dir.remove()

    def dead(self) -> str | None:
        """Remove the container if it is a leftover of a killed runtime;
        why, or None (alive, kept, or busy with another command).

        Leftovers: a directory without a readable state; a container whose
        creator died before it was created; one that its creator was to
        delete when done (``ephemeral``: ``run`` without -d or --keep)
        while that creator is dead."""
        try:
            if not self.dir.lock(wait=False):
                return None
        except NotFound:
            return None
        try:
            try:
                state = self.load()
            except NotFound:
                why = "its runtime was killed before recording it"
            except Corrupt:
                why = "its state file is damaged"
            else:
                creator = state.get("creator") or [0, 0]
                creator_alive = bool(creator[0]) and process_start_time(creator[0]) == creator[1]
                if creator_alive:
                    return None
                if state.get("status") == "creating":
                    why = "its runtime was killed while creating it"
                elif state.get("ephemeral"):
                    why = "its runtime was killed before deleting it"
                else:
                    return None  # a container like any other: its user deletes it
                self._delete(state, force=True)
                return why
            self._remove_unrecorded()
            return why
        finally:
            self.dir.unlock()

    def _kill_and_wait(self, state: dict, status: str) -> None:
        cgroup = self._cgroup(state) if state.get("cgroup") else None
        _signal_init(state, 9)
        if cgroup is not None:
            if not _own_pid_namespace(state):
                cgroup.kill_all(9)  # its processes are not all in a PID namespace the init's death ends
            if status == "paused":
                cgroup.thaw()
        _wait_gone(state, cgroup)

    def _destroy(self, state: dict) -> None:
        hooks = _recorded_hooks(state, "poststop")
        if hooks:
            from kubirun.hooks import run_hooks

            run_hooks("poststop", hooks, self._hook_state(state, "stopped"), log.warning)
        self._remove_cgroup(state)
        reached("delete.cgroup")
        _detach_host_mount(state)
        if state.get("network"):
            from kubirun.ns.net import teardown

            teardown(state["network"])  # veth, port rules, lease: also after a killed runtime
        reached("delete.network")
        if state.get("remove_on_delete"):
            from kubirun.containerdir import remove

            remove(state["remove_on_delete"])
        reached("delete.store")
        self.dir.remove()

    def _remove_cgroup(self, state: dict, wait: bool = True) -> None:
        if state.get("cgroup") and _own_pid_namespace(state):
            # The init's death ended every process of the container (any
            # other in the cgroup is someone else's: a cgroup that had
            # processes before, runc's rule too), so nothing is killed: the
            # directories it recorded go, without loading the cgroup driver
            # (delete runs for every task).
            from kubirun.cgroups.cgroup import remove_created

            recorded = state["cgroup"]
            remove_created(recorded["path"], recorded.get("dirs") or [], recorded.get("created") or [])
        elif state.get("cgroup"):
            cgroup = self._cgroup(state)
            if cgroup.pids():
                # Left over: the children of an init that shared our PID
                # namespace (or joined one).
                cgroup.kill_all(9)
            cgroup.destroy()
        elif state.get("cgroup_path") and not state.get("cgroup_existed"):
            # The runtime died while making it: the container's own
            # directories (never the parents) may exist unrecorded, with
            # its init still leaving them (it dies with that runtime).
            from kubirun.cgroups import DESTROY_TIMEOUT, fs, open_cgroup

            deadline = fs.monotonic() + (DESTROY_TIMEOUT if wait else 0)
            for directory in open_cgroup(state["cgroup_path"]).dirs():
                if os.path.isdir(directory):
                    fs.remove_tree(directory, deadline)

    def keep_stopped(self) -> None:
        """``run --keep``, once the container has exited: it stays (stopped,
        listed, removed by ``delete``), without its network, which the
        caller gives back now (its address may be leased again at once)."""
        with self.dir:
            state = self.load()
            if self.status(state) != "stopped":
                self._kill_and_wait(state, self.status(state))
            if self._init_pid is not None:
                reap(self._init_pid)
                self._init_pid = None
            if state.get("network"):
                state["network"] = None
                self.dir.write(state)

    # --- what runs inside ------------------------------------------------

    def exec(self, process, detach: bool = False, pid_file: str | None = None,
             console_socket: str | None = None, preserve_fds: int = 0) -> int:
        """Run ``process`` (a ``ProcessSpec``) inside; its exit status, or 0
        at once with ``detach``."""
        from kubirun.exec_into import ExecOptions, exec_in

        return exec_in(self, process, ExecOptions(
            detach=detach, pid_file=pid_file, console_socket=console_socket,
            preserve_fds=preserve_fds))

    def processes(self) -> list[int]:
        """Host PIDs of every process of the container."""
        state = self.load()
        if self.status(state) == "stopped":
            return []
        if not state.get("cgroup"):
            return [state["pid"]]  # rootless without a cgroup: the init is what we know
        return self._cgroup(state).pids()

    def pause(self) -> None:
        with self.dir:
            state = self.load()
            status = self.status(state)
            if status not in ("running", "created"):
                raise KubirunError(f"cannot pause container {self.id}: it is {status}")
            self._cgroup(state).freeze()

    def resume(self) -> None:
        with self.dir:
            state = self.load()
            status = self.status(state)
            if status != "paused":
                raise KubirunError(f"cannot resume container {self.id}: it is {status}, not paused")
            self._cgroup(state).thaw()

    def stats(self) -> dict:
        return self._cgroup(self.load()).stats()

    def oom_kills(self) -> int:
        return self._cgroup(self.load()).oom_kills()

    def update(self, resources: dict) -> list[str]:
        with self.dir:
            state = self.load()
            if self.status(state) == "stopped":
                raise KubirunError(f"cannot update container {self.id}: it is stopped")
            return self._cgroup(state).apply(resources)


# --- helpers ---------------------------------------------------------------

def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _recorded_hooks(state: dict, phase: str) -> list:
    """The ``phase`` hooks the state recorded at create (kubirun.spec's
    ``Hook``s; that module, which brings the cffi one, only when there
    are some: most containers have none, and start and delete stay light)."""
    recorded = (state.get("hooks") or {}).get(phase) or []
    if not recorded:
        return []
    from kubirun.spec import Hook

    return [Hook(h["path"], h["args"], h["env"], h.get("timeout")) for h in recorded]


def _own_pid_namespace(state: dict) -> bool:
    """Whether the container has a PID namespace made for it, which ends
    with its init (and takes every process of the container with it)."""
    namespaces = state.get("namespaces") or {}
    return "pid" in namespaces and namespaces["pid"] is None


def _seccomp_agent(spec: Spec) -> dict | None:
    """``linux.seccomp``'s agent when the filter has a listener (a
    listenerPath without SCMP_ACT_NOTIFY rules is not used).  A relative
    path is the bundle's, as runc's (it runs in the bundle directory)."""
    if spec.seccomp is None or not spec.seccomp.compile().listener:
        return None
    return {"listenerPath": os.path.join(spec.bundle, spec.seccomp.listener_path),
            "listenerMetadata": spec.seccomp.listener_metadata}


def exec_in_container(container_id: str, spec, options, root: str | None = None) -> int:
    """``kubirun exec ID``: run ``spec`` (a ProcessSpec) in the container
    with ``options`` (a kubirun.exec_into.ExecOptions)."""
    from kubirun.exec_into import exec_in

    return exec_in(Container(container_id, root), spec, options)


def _detach_host_mount(state: dict) -> None:
    """A container without a mount namespace: the mounts it made in ours."""
    if state.get("host_mount"):
        from kubirun.ns import hostmount

        hostmount.detach(state["host_mount"])


def _open_init(state: dict) -> int | None:
    """A pidfd of the container's init, or None if that process is gone
    (checked by start time, so a recycled PID is never signalled)."""
    pid = state.get("pid") or 0
    if not pid:
        return None
    try:
        # The standard library's pidfd_open (kill is os.kill's kin): `kill`
        # and `delete` then never load the cffi module.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if process_start_time(pid) != state.get("pid_start"):
        os.close(pidfd)
        return None
    return pidfd


def _signal_init(state: dict, signal: int) -> None:
    pidfd = _open_init(state)
    if pidfd is None:
        return
    import _signal

    try:
        _signal.pidfd_send_signal(pidfd, signal)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _wait_gone(state: dict, cgroup=None, timeout: float = 10.0) -> None:
    """Wait until the init, SIGKILLed, is gone: exited, or (an init of a
    PID namespace waiting for its last processes to be reaped, such as an
    ``exec``'d one orphaned by a killed runtime, whose new parent may be
    slow) past the point of no return, its memory freed, its cgroup left."""
    import select

    pidfd = _open_init(state)
    if pidfd is None:
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        wait_ms = 5
        while not poller.poll(wait_ms):
            if _exiting(state["pid"]) and (cgroup is None or not cgroup.pids()):
                return
            if time.monotonic() > deadline:
                raise KubirunError(f"container {state['id']}: init {state['pid']} did not die"
                                   f" within {timeout:.0f}s of SIGKILL")
            wait_ms = min(wait_ms * 2, 100)
    finally:
        os.close(pidfd)


_PF_EXITING = 0x4  # include/linux/sched.h: set first thing in do_exit()


def _exiting(pid: int) -> bool:
    """The process is in ``do_exit`` and has given up its memory (vsize 0):
    it never returns to user space."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return True
    return bool(int(fields[6]) & _PF_EXITING) and int(fields[20]) == 0


class _NoSpec:
    """``creation.cgroup_path`` of a container whose spec is unknown."""

    cgroups_path = None


def _raise_start_failure(container_id: str, received: bytes) -> None:
    if not received.startswith(b"0"):
        raise KubirunError(f"cannot start container {container_id}: its init"
                           " closed the exec fifo without starting")
    report = received[1:]
    if report.startswith(b"E"):
        from kubirun.channel import parse_error

        raise parse_error(report[1:])


def _import_for_wait() -> None:
    """What a foreground run's ``start_and_wait`` imports, imported while
    its init pivots root and finishes (the runtime would be idle)."""
    import select  # noqa: F401

    from kubirun import signals  # noqa: F401


def _release_init(fifo: str, state: dict, agent: tuple[str, dict] | None = None) -> None:
    """``start``: open the fifo for reading; the init, blocked opening it
    for writing, writes one byte and goes on to ``execve``.  With
    ``agent`` (listenerPath, the state to send), we connect to the init
    and take its seccomp listener to the agent (kubirun.seccomp_notify)."""
    import select

    pidfd = _open_init(state)
    if pidfd is None:
        raise KubirunError(f"cannot start container {state['id']}: its init has exited")
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    conn = None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        if agent is not None:
            from kubirun import seccomp_notify

            conn = seccomp_notify.connect_to_init(os.path.dirname(fifo))
            if conn is not None:
                poller.register(conn, select.POLLIN)
        received = b""
        while True:
            for ready, _ in poller.poll():
                if ready == pidfd and not received:
                    raise KubirunError(f"cannot start container {state['id']}: its init has exited")
                if conn is not None and ready == conn.fileno():
                    # The listener (then we answer), or end of file: the init
                    # failed before its filter, and says why on the fifo.
                    poller.unregister(conn)
                    seccomp_notify.relay(conn, *agent)  # closes it
                    conn = None
                    continue
                if ready != fd:
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    received += data
                    continue
                # End of file: the init has exec'd its program (the fd was
                # close-on-exec), or died; what it wrote says which.
                _raise_start_failure(state["id"], received)
                return
    finally:
        os.close(fd)
        os.close(pidfd)
        if conn is not None:
            conn.close()
