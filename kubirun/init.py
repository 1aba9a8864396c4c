"""The container's init: everything between ``fork`` and ``execve``, in
order, as you would write it on a whiteboard.

This code runs in the forked child, already in the container's PID
namespace (``ns.namespaces.fork_init``).  It never returns: it either
becomes the container's program through ``execve`` or reports why it could
not on the channel to the runtime (``kubirun.channel``) and exits.  It
stops and waits twice: for the runtime to run the prestart/createRuntime
hooks, and (for ``create``) until ``start`` opens the exec fifo.
"""
from __future__ import annotations

import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start

from kubirun import _native, process
from kubirun.base import explain
from kubirun.base import jsonio
from kubirun._native import PR_SET_PDEATHSIG, Kernel
from kubirun.channel import CGROUP, HOOKS, READY, USERNS, WAITING, InitChannel
from kubirun.base.errors import ContainerStartError
from kubirun.base.log import one_line
from kubirun.ns import loopback, mounts, namespaces, rootfs
from kubirun.ns.mountspec import plan_mounts
from kubirun.tail import finish_and_exec, run_child


class InitConfig:
    """Everything the init needs, decided by the runtime before the fork."""

    def __init__(self, rootfs: str, process: process.ProcessSpec, channel: InitChannel,
                 plan: list, hostname: str | None = None) -> None:
        self.rootfs = rootfs
        self.process = process
        self.channel = channel
        self.plan = plan  # mount steps (ns.mounts), made from config.json
        self.cgroup_mounts: list[dict] = []  # config.json's cgroup mounts, made once it exists
        self.hostname = hostname
        self.domainname: str | None = None
        self.join: list[tuple[int, str]] = []  # (CLONE_NEW*, path) to setns into
        self.new_user = False  # born in a new user namespace (the fork made it)
        self.in_user_ns = False  # a new or joined user namespace
        self.unshare = 0  # CLONE_NEW* flags to create, except pid and cgroup
        self.new_cgroupns = False
        self.new_netns = False
        self.rootfs_propagation = _native.MS_PRIVATE | _native.MS_REC
        self.root_readonly = False
        self.masked_paths: list[str] = []
        self.readonly_paths: list[str] = []
        self.sysctl: dict[str, str] = {}
        self.personality: int | None = None  # linux.personality's domain
        self.no_pivot = False
        # no mount namespace of its own: ns.hostmount.record() of the root
        self.host_mount: dict | None = None
        # wait here for `start`: an O_PATH fd of the exec fifo, opened by the
        # runtime (as the user namespace's root we may not reach its path)
        self.exec_fifo: int | None = None
        self.die_with_runtime = False  # keep PDEATHSIG after `created` (foreground run)
        self.console_socket = None  # a unix socket for the pty master
        self.console_ack = False  # our own relay sizes the pty, then acks
        self.preserve_fds = 0
        self.session_keyring: str | None = None  # "_ses.ID", or None (--no-new-keyring)
        self.runtime_hooks = False  # prestart/createRuntime hooks: stop for them
        self.hooks_create_container: list = []
        self.hooks_start_container: list = []
        self.hook_state: dict = {}
        self.seccomp = None  # a compiled kubirun.seccomp.Program, loaded last
        # its listener goes to `start` over a connection accepted on this
        # socket (kubirun.seccomp_notify); None when it has no listener
        self.seccomp_socket = None
        # the sealed memfd of kubirun-exec: the program is exec'd through it
        # (_native.exec_helper_fd, the CVE-2019-5736 defence)
        self.exec_helper: int = -1


def container_init(config: InitConfig) -> "NoReturn":  # noqa: F821
    """Set up the container and ``execve`` its program; never returns."""
    channel = config.channel

    def body() -> None:
        channel.child_side()
        if explain.ON:
            from kubirun.ns.narrating import NarratingKernel

            kernel = NarratingKernel()
        else:
            kernel = Kernel()
        setup_and_exec(config, kernel)

    run_child(channel, body, also=report_after_start)


def setup_and_exec(config: InitConfig, kernel) -> None:
    """The init's steps, every system call through ``kernel`` (a
    ``_native.Kernel``; tests/unit/test_init_steps.py passes a recording
    fake and checks their order); returns only by raising."""
    explain.begin(config.rootfs)
    spec = config.process
    channel = config.channel

    # 1. Die with the runtime while it sets us up: a half-made container
    #    must not outlive a killed `kubirun create`.
    explain.step(1, "prctl(PR_SET_PDEATHSIG, SIGKILL)", "die with the runtime while set up")
    kernel.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    # 2. Namespaces.  Born in a new user namespace, wait for the runtime to
    #    map our ids, then become its root.  Then join those given by path,
    #    make the new ones (the PID namespace is already ours; the cgroup
    #    one comes at step 12).
    if config.new_user:
        rootless = kernel.geteuid() != 0
        if rootless:
            # The runtime, unprivileged, may write our id maps only while
            # /proc/OUR_PID belongs to us: dumpable for that moment (no
            # container process exists yet to take advantage of it).
            kernel.prctl(_native.PR_SET_DUMPABLE, 1)
        channel.ask(USERNS)
        if rootless:
            kernel.prctl(_native.PR_SET_DUMPABLE, 0)
        become_user_namespace_root(kernel)
    namespaces.join(kernel, config.join)
    explain.step(2, "unshare({:clone})", "namespaces of its own: mounts, hostname, IPC, network",
                 config.unshare)
    kernel.unshare(config.unshare)

    # 3. A session keyring of its own (unless --no-new-keyring): keys the
    #    caller's session holds stay out of the container's reach.
    if config.session_keyring:
        _join_session_keyring(kernel, config.session_keyring)

    # 4. Nothing we mount from here on reaches the host (sharing its mount
    #    namespace: nothing leaves a private bind of our root).
    explain.step(4, "mount(MS_REC|MS_PRIVATE /), mount(MS_BIND root on itself)",
                 "nothing mounted from here reaches the host; pivot_root needs a mount point")
    if config.host_mount is None:
        rootfs.set_propagation(kernel, config.rootfs_propagation)
        rootfs.bind_root(kernel, config.rootfs)
    else:
        from kubirun.ns import hostmount

        hostmount.bind_root(kernel, config.host_mount)

    # 5. The spec's mounts and devices, resolved inside the new root.
    root_fd = kernel.open(config.rootfs, os.O_PATH | os.O_DIRECTORY)
    explain.step(5, "{} mounts and nodes, each target opened by openat2(RESOLVE_IN_ROOT)",
                 "the spec's mounts, resolved inside the root: no symlink leads out", len(config.plan))
    mounts.apply(kernel, root_fd, config.plan)

    # 6. The terminal, if asked for: made from the container's devpts.
    slave = None
    if spec.terminal:
        from kubirun import console

        master, slave = console.open_pty_inside(kernel, root_fd)
        console.bind_console(kernel, root_fd, slave)
        console.hand_over_master(config.console_socket, master, spec.console_size,
                                 config.console_ack)
    kernel.close(root_fd)
    fifo = config.exec_fifo  # an O_PATH fd the runtime opened for us

    # 7. Into the container's cgroup, once the runtime has made it (it did
    #    while we mounted): every hierarchy but the one that charges
    #    memory, joined last (step 12) so that the interpreter's pages stay
    #    charged to the runtime.  Then its view under /sys/fs/cgroup.
    cgroup = jsonio.loads(channel.ask(CGROUP))
    explain.step(7, "write(cgroup.procs, \"0\") in each hierarchy but memory's",
                 "into the cgroup the runtime made: its limits hold us and all we start")
    memory_file = cgroups_join(kernel, cgroup["join"])
    if config.cgroup_mounts:
        root_fd = kernel.open(config.rootfs, os.O_PATH | os.O_DIRECTORY)
        mounts.apply(kernel, root_fd, plan_mounts(config.cgroup_mounts, cgroup["binds"]))
        kernel.close(root_fd)

    # 8. Hooks: prestart and createRuntime (run by the runtime), then
    #    createContainer (ours: in the container's namespaces, before the
    #    host's filesystem leaves our view).
    if config.runtime_hooks:
        channel.ask(HOOKS)
    # Our PID as the host sees it, for the hooks' state: /proc is still
    # the host's here.
    config.hook_state["pid"] = int(kernel.readlink("/proc/self"))
    if config.hooks_create_container:
        kernel.chdir(config.rootfs)  # their working directory is the container's root, as runc's
    _run_hooks("createContainer", config.hooks_create_container, config.hook_state,
               config.exec_helper)

    # 9. Switch root: the host's filesystem is gone from view (and with it
    #    Python's own modules: import now what the steps below need).
    process.preload(spec)
    if config.sysctl:
        import kubirun.ns.procfs  # noqa: F401
    if config.hooks_start_container:
        import kubirun.hooks  # noqa: F401
    if config.seccomp_socket is not None:
        import _socket  # noqa: F401
        import kubirun.seccomp_notify  # noqa: F401
    explain.step(9, "switch root: {}", "the host's file system leaves the container's view",
                 "chroot" if config.host_mount else "MS_MOVE, chroot" if config.no_pivot else
                 "pivot_root(\".\", \".\"), umount2(\".\", MNT_DETACH)")
    if config.host_mount is not None:
        rootfs.chroot_into(kernel, config.rootfs)  # pivot_root would move the host's root
    elif config.no_pivot:
        rootfs.move_into(kernel, config.rootfs)
    else:
        rootfs.pivot_into(kernel, config.rootfs)
    rootfs.share_root_if_asked(kernel, config.rootfs_propagation)

    # 10. Finish the root: sysctls, read-only and masked paths, ro root.
    explain.step(10, "{} read-only and {} masked paths", "what of /proc and /sys it may not"
                 " change or read", len(config.readonly_paths), len(config.masked_paths))
    rootfs.write_sysctls(config.sysctl)  # before /proc/sys turns read-only, as runc
    rootfs.make_paths_readonly(kernel, config.readonly_paths)
    rootfs.mask_paths(kernel, config.masked_paths)
    if config.root_readonly:
        rootfs.remount_root_readonly(kernel)

    if config.personality is not None:
        kernel.set_personality(config.personality)

    # 11. Name the host, bring up loopback.
    explain.step(11, "sethostname({!r}); lo up: {}", "its own name (uts namespace) and loopback"
                 " (net namespace)", config.hostname, config.new_netns)
    if config.hostname is not None:
        kernel.sethostname(config.hostname)
    if config.domainname is not None:
        kernel.setdomainname(config.domainname)
    if config.new_netns:
        loopback.bring_up_loopback(kernel)

    # 12. Into the memory cgroup, then a cgroup namespace rooted where we
    #     are now.
    explain.step(12, "write(memory's cgroup.procs, \"0\"), unshare(CLONE_NEWCGROUP)",
                 "charged to the memory limit from now on; its cgroup becomes its /")
    if memory_file is not None:
        kernel.write(memory_file, b"0")
        kernel.close(memory_file)
    if config.new_cgroupns:
        kernel.unshare(_native.CLONE_NEWCGROUP)

    # 13. What runs, found in the container's PATH, with which environment
    #     (nothing, for a config without a process: `start` refuses it).
    if not spec.absent:
        identity, program, env = process.prepare(spec, config.hostname or "")
        explain.step(13, "{!r} found in PATH, to run as uid {} gid {}", "what runs and as whom,"
                     " resolved inside the container", program, identity.uid, identity.gid)
    if slave is not None:
        console.give_terminal_to(kernel, slave, identity.uid)
        console.become_controlling_terminal(kernel, slave)

    # 14. Created: wait for `start` (it opens the exec fifo).
    explain.step(14, "open(exec.fifo) blocks until `start`", "created: it waits to be started")
    channel.ask(READY)
    if not config.die_with_runtime:
        kernel.prctl(PR_SET_PDEATHSIG, 0)
    channel.tell(WAITING)
    if fifo is not None:
        _wait_for_start(kernel, fifo)
    if spec.absent:  # released all the same, by hand: there is nothing to run
        os._exit(1)

    # 15. Leave nothing of the runtime behind: signal dispositions Python
    #     changed, and every fd but stdio and the preserved ones
    #     (close-on-exec, so the channel still carries an execve failure).
    # 16. Who runs: limits, capabilities, user, no_new_privs, working dir.
    #     The seccomp filter comes last, but a process left with neither
    #     no_new_privs nor CAP_SYS_ADMIN can only load it before this step.
    #     A filter with a listener hands it to `start`, which connected
    #     to us once it released us (accepted then: before any filter).
    # 17. The filter, then the startContainer hooks: they run as the
    #     container's process does (user, capabilities, seccomp filter), as
    #     runc's do, so a hook cannot do what the program may not.
    # 18. Become the container's program: execve, by way of the exec
    #     helper, which reports a failure of it where we would.
    # Steps 15 to 18 are exec's last steps too: kubirun.tail has them.
    def start_connection():
        if config.seccomp_socket is None:
            return None
        from kubirun.seccomp_notify import accept  # imported before pivot_root (step 9)

        return _after_start(accept, config.seccomp_socket.detach())

    def start_container_hooks(execveat_allowed: bool) -> None:
        config.hook_state["status"] = "created"
        _after_start(_run_hooks, "startContainer", config.hooks_start_container,
                     config.hook_state, config.exec_helper, execveat_allowed)

    report_fds = (channel.report_fd(),) if _start_report_fd is None else \
        (channel.report_fd(), _start_report_fd)
    finish_and_exec(kernel, spec, identity, program, env, preserve_fds=config.preserve_fds,
                    seccomp=config.seccomp, exec_helper=config.exec_helper,
                    report_fds=report_fds, say_on_stderr=True, as_init=spec.init,
                    seccomp_conn=start_connection, before_exec=start_container_hooks,
                    guard=_after_start, init_steps=True)


def _after_start(step, *args):
    """A last step, whose failure is also said on stderr: `start` has
    returned already and nobody reads the channel any more (unless this is
    a foreground run), so say it where the user looks."""
    try:
        return step(*args)
    except ContainerStartError as err:
        if not getattr(err, "reported_by_runtime", False):  # seccomp_notify.AgentUnreachable
            os.write(2, f"kubirun: {one_line(str(err))}\n".encode(errors="replace"))
        raise


def become_user_namespace_root(kernel) -> None:
    """Uid and gid 0 of the new user namespace, no supplementary groups
    (its creator has every capability there, so it may)."""
    try:
        kernel.setgroups([])
    except PermissionError:
        pass  # rootless: setgroups is denied in this namespace, and we have none
    kernel.setresgid(0)
    kernel.setresuid(0)


def _join_session_keyring(kernel, name: str) -> None:
    """Join a new session keyring, searchable by its user (runc's
    permissions without a user namespace); a kernel without keyrings is
    not an error."""
    import errno

    try:
        key = kernel.join_session_keyring(name)
    except OSError as err:
        if err.errno == errno.ENOSYS:
            return
        raise
    kernel.add_key_permissions(key, 0x80000)  # KEY_USR_SEARCH


def not_born_in(files: list[tuple[str, bool]], born_in: str | None) -> list[tuple[str, bool]]:
    """``files`` (``Cgroup.join_files``) but that of the cgroup directory
    the process was born in (``creation.Birthplace``)."""
    if born_in is None:
        return files
    return [(path, memory) for path, memory in files if os.path.dirname(path) != born_in]


def cgroups_join(kernel, files: list[tuple[str, bool]]) -> int | None:
    """Move ourselves into the cgroup (see ``Cgroup.join_files``), except
    the memory hierarchy, whose file is returned open for later."""
    memory_file = None
    for path, charges_memory in files:
        fd = kernel.open(path, os.O_WRONLY)
        if charges_memory:
            memory_file = fd
            continue
        try:
            kernel.write(fd, b"0")
        except OSError as err:
            raise OSError(err.errno, f"cannot join cgroup: {err.strerror}", path) from None
        finally:
            kernel.close(fd)
    return memory_file


# While created, the init dies of the signals that would end a program
# that does not handle them (as runc's init does): `kill ID` (TERM) of a
# created container works.  A PID namespace's init only gets signals it has
# a handler for, hence handlers that exit, not default dispositions.
CREATED_FATAL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                         signal.SIGUSR1, signal.SIGUSR2)


def _die_of(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


# After `start`, the fifo stays open (close-on-exec) until execve: `start`
# reads to its end, so it returns once the program runs, and a failure in
# between (user, capabilities, seccomp, execve) is written there for it.
_start_report_fd: int | None = None


def _wait_for_start(kernel, fifo: int) -> None:
    """Block until `start` opens the fifo for reading, then tell it we are
    going (one byte).  Reopened through /proc/self/fd: the O_PATH fd
    cannot be written to."""
    global _start_report_fd
    previous = {sig: signal.signal(sig, _die_of) for sig in CREATED_FATAL_SIGNALS}
    fd = kernel.open(f"/proc/self/fd/{fifo}", os.O_WRONLY)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    kernel.write(fd, b"0")
    kernel.close(fifo)
    _start_report_fd = fd


def report_after_start(code: int, message: str, errno: int | None = None) -> None:
    """A failure after `start` released us: to `start`, which waits for it
    (framed as on the init channel: kubirun.channel.parse_error)."""
    if _start_report_fd is not None:
        head = f"{code}:{errno}" if errno else f"{code}"
        try:
            os.write(_start_report_fd, f"E{head}\0{message}".encode(errors="replace"))
        except OSError:
            pass


def _run_hooks(phase: str, hooks: list, state: dict, exec_helper: int,
               execveat_allowed: bool = True) -> None:
    if hooks:
        from kubirun.hooks import run_hooks

        run_hooks(phase, hooks, state, exec_helper=exec_helper,
                  execveat_allowed=execveat_allowed)


