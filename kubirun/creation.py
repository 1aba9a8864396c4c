"""The runtime's side of ``create``: from a validated spec to an init
waiting in its ``created`` state.

    1. the init's configuration: mount plan, namespaces to join or make,
       terminal, exec fifo, hooks it runs itself
    2. one fork, into the container's PID namespace (``container_init``
       takes over in the child); on a hybrid host, into its cgroup of the
       unified hierarchy too, made just before (``Birthplace``)
    3. the container's cgroup, made while the init sets up its namespaces
       and mounts (overlapping them saves ~4 ms per start); the init
       learns its files with the answer to its CGROUP stop, and the spec's
       limits are written while it joins and finishes its mounts
    4. the init's stops: run the prestart + createRuntime hooks; ``created``
"""
from __future__ import annotations

import errno
import os

from kubirun import _native
from kubirun.base import log
from kubirun.channel import CGROUP, HOOKS, READY, USERNS, WAITING, InitChannel
from kubirun.base.errors import KubirunError
from kubirun.init import InitConfig, container_init, not_born_in
from kubirun.ns import namespaces
from kubirun.ns.mountspec import PROPAGATION_OPTIONS, dev_read_only_last, plan_devices, plan_mounts
from kubirun.spec import Spec

DEFAULT_CGROUP_PARENT = "/kubirun"
CGROUP_TYPES = ("cgroup", "cgroup2")


class InitRun:
    """A forked init and what the runtime holds to talk to it; ``born_in``:
    the cgroup directory it was born in (see ``Birthplace``), or None."""

    def __init__(self, pid: int, channel: InitChannel, console, master: int | None,
                 born_in: str | None = None) -> None:
        self.pid, self.channel, self.console, self.master = pid, channel, console, master
        self.born_in = born_in


class Birthplace:
    """The container's directory in a hybrid host's unified hierarchy, made
    before the init is forked so that the init is born in it (clone3's
    CLONE_INTO_CGROUP, see ``namespaces.fork``) instead of moving itself
    there through cgroup.procs, which costs an RCU grace period (7-15 ms).

    ``state`` is a cgroup state (``Cgroup.to_state``'s keys) recording the
    directories made, for ``set_up_cgroup`` to go on from and for a failed
    create to remove; ``fd`` is the directory, open until ``close``."""

    def __init__(self, layout, state: dict, directory: str, fd: int) -> None:
        self.layout, self.state, self.directory, self.fd = layout, state, directory, fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def birthplace(path: str, spec: Spec, layout) -> Birthplace | None:
    """Make the container's unified directory now when the init is to join
    it (a hybrid host, as root: see ``joins_unified``); None otherwise, and
    when it exists already (someone else's, possibly frozen or busy: it is
    checked and joined as any other, after the fork).  ``layout``: the
    host's (``host_layout``)."""
    if os.geteuid() != 0 or not joins_unified(spec) or layout is None:
        return None
    from kubirun.cgroups import fs, normalise_path

    if layout.kind != "hybrid":
        return None
    norm = normalise_path(path)
    made: list[str] = []
    try:
        fs.make_path(norm, layout.unified, made, lambda root, directory, new: None)
    except BaseException:
        fs.remove_dirs(made)
        raise
    directory = layout.unified + norm
    state = {"version": 1, "driver": layout.kind, "path": norm, "dirs": [], "created": made, "enabled": []}
    if directory not in made:
        fs.remove_dirs(made)  # (none: its parents exist when it does)
        return None
    try:
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        fs.remove_dirs(made)
        raise
    return Birthplace(layout, state, directory, fd)


def init_before_record(spec: Spec, options, layout) -> bool:
    """Whether the init may be forked before the container's first record
    and its cgroup: when a spare init of the fork server can be it
    (``options.init_forker``, kubirun.zygote), which is born with its
    PDEATHSIG, and nothing is to be made before its birth (no cgroup to be
    born in, see ``birthplace``; no host mount to record, when it shares
    ours).  Its set-up then overlaps with our writing of the record."""
    if options.init_forker is None or spec.namespace("mount") is None or spec.namespace("time"):
        return False
    born_somewhere = (os.geteuid() == 0 and joins_unified(spec) and layout is not None
                      and layout.kind == "hybrid")
    return not born_somewhere


def cgroup_path(spec: Spec, container_id: str) -> str:
    """``linux.cgroupsPath``, or /kubirun/ID (a parent shared by kubirun's
    containers and left in place, as docker and runc leave theirs);
    $KUBIRUN_CGROUP_PARENT moves that parent, which also takes relative
    paths."""
    path = spec.cgroups_path
    if path and ":" in path and not path.startswith("/"):
        raise KubirunError(f"cgroupsPath {path!r} is a systemd slice:name path;"
                           " kubirun does not support --systemd-cgroup")
    parent = os.environ.get("KUBIRUN_CGROUP_PARENT") or DEFAULT_CGROUP_PARENT
    path = path or f"{parent}/{container_id}"
    return path if path.startswith("/") else f"{parent}/{path}"


def limits_requested(spec: Spec) -> bool:
    """Any resource limit in the spec (device rules alone are not one)."""
    return any(key != "devices" and value for key, value in (spec.resources or {}).items())


def host_layout():
    """The host's cgroup layout (a ``mountinfo.Layout``), read once for a
    whole create: each read parses /proc/self/mountinfo.  None when there
    is none to read (``set_up_cgroup`` then says why)."""
    from kubirun.cgroups import detect_layout

    try:
        return detect_layout()
    except Exception:  # noqa: BLE001 - no cgroups to speak of
        return None


def cgroup_exists(path: str, layout) -> bool:
    """Is there a directory for cgroup ``path`` already, in any hierarchy
    of ``layout`` (``host_layout``'s)?"""
    from kubirun.cgroups import normalise_path
    from kubirun.cgroups.cgroup import exists_anywhere

    if layout is None:
        return False  # no cgroups to speak of: nothing exists
    try:
        return exists_anywhere(normalise_path(path), layout)
    except Exception:  # noqa: BLE001 - an invalid path: create says so, later
        return False


def set_up_cgroup(path: str, spec: Spec, container_id: str, born: Birthplace | None = None,
                  init_pid: int = 0, layout=None):
    """Make the cgroup and check it (``check_cgroup``) while the init sets
    itself up; it joins once we answer its CGROUP stop, and the spec's
    resources are written then (``apply_resources``), while it finishes
    its mounts.  ``born``: the directory made before the fork, which the
    cgroup then includes; ``layout``: the host's (detected if None)."""
    from kubirun.cgroups import open_cgroup

    if born is not None:
        cgroup = open_cgroup(path, born.state, layout=born.layout)
    else:
        cgroup = open_cgroup(path, layout=layout)
    try:
        cgroup.create()
    except Exception as err:
        if os.geteuid() == 0 or getattr(err, "errno", None) not in (errno.EACCES, errno.EPERM):
            raise
        # Rootless without a delegated cgroup: run, but say what is lost
        # (podman does the same on a cgroup v1 host) when limits were asked
        # for; without any, only --debug says so (every rootless run on a
        # v1 host would warn otherwise).
        say = log.warning if limits_requested(spec) else log.debug
        lost = "its linux.resources are NOT applied" if limits_requested(spec) else "no limits"
        say(f"container {container_id}: no cgroup this user may write ({path}: {err}):"
            f" it runs without one ({lost}; no pause, ps or stats);"
            " delegate a cgroup to this user to have them")
        return None
    try:
        check_cgroup(cgroup, container_id, init_pid)
    except BaseException:
        if born is None:
            cgroup.destroy()
        else:
            # The init lives in it (born there): the caller removes it once
            # the init is dead, from this record of everything made.
            born.state = cgroup.to_state()
        raise
    return cgroup


def apply_resources(cgroup, spec: Spec, container_id: str) -> None:
    """Write the spec's ``linux.resources`` into the container's cgroup.
    Done once the init was told to join, while it finishes its mounts (as
    runc's ``Set`` comes after its ``Apply``): nothing of the container's
    own runs before ``start``, and ``create`` returns only after this."""
    for warning in cgroup.apply(with_default_devices(spec)):
        log.warning(f"container {container_id}: {warning}")


def check_cgroup(cgroup, container_id: str, init_pid: int) -> None:
    """runc's checks of a cgroup that may have existed before: a frozen
    one is refused (the init would stop for good on joining it, and `run`
    wait for ever), one holding processes already is used, with a warning
    (both in runc's words).  Stricter than runc: frozen by an ancestor
    counts too."""
    frozen = cgroup.frozen_file()
    if frozen is not None:
        raise KubirunError(f"cannot create container {container_id}: container's cgroup unexpectedly frozen"
                           f" ({frozen}); thaw it, or choose another linux.cgroupsPath")
    others = [pid for pid in cgroup.pids() if pid != init_pid]
    if others:
        log.warning(f"container {container_id}: container's cgroup is not empty: {len(others)} process(es)"
                    f" found in {cgroup.path}; they are not the container's")


# What every container may use whatever its config says (runc's
# AllowedDevices): mknod of any node, and the standard ones, the ptys, tun.
DEFAULT_ALLOWED_DEVICES = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (5, 2),
                           (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]


def with_default_devices(spec: Spec) -> dict:
    """The spec's resources, with the device rules completed as runc does:
    the default devices are allowed after the config's own rules.  A node
    in ``linux.devices`` is only made: whether the container may use it is
    for ``resources.devices`` to say (listing /dev/kmsg must not open the
    host's kernel log to a config that denies every device)."""
    resources = dict(spec.resources or {})
    rules = list(resources.get("devices") or [])
    if not rules:
        return resources
    resources["devices"] = rules + DEFAULT_ALLOWED_DEVICES
    return resources


def cgroup_binds(cgroup) -> list[tuple[str, str]]:
    """(name under /sys/fs/cgroup, host directory) of the container's own
    cgroup in every hierarchy: what its /sys/fs/cgroup shows.  The name is
    "" for a pure v2 host, whose /sys/fs/cgroup is the one hierarchy."""
    binds = []
    for directory in cgroup.dirs():
        mount_point = directory[: len(directory) - len(cgroup.path)] if cgroup.path != "/" else directory
        rel = os.path.relpath(mount_point, "/sys/fs/cgroup")
        name = "" if rel == "." else (rel if not rel.startswith("..") else os.path.basename(mount_point))
        binds.append((name, directory))
    return binds


def join_files(spec: Spec, cgroup) -> list[tuple[str, bool]]:
    """What the init (and later ``exec``) writes to join the cgroup (see
    ``joins_unified`` for a hybrid host's unified hierarchy)."""
    return cgroup.join_files(include_unified=joins_unified(spec))


def joins_unified(spec: Spec) -> bool:
    """Whether the container's processes join a hybrid host's unified
    hierarchy: always as root, as runc's do (systemd, and any tool that
    reads the ``0::`` line of /proc/PID/cgroup, then sees the container);
    rootless only when a limit lives there, since joining it needs write
    access to the cgroup.procs of the common ancestor of the user's own
    cgroup and the container's, which a delegated cgroup does not give."""
    return os.geteuid() == 0 or needs_unified(spec)


def needs_unified(spec: Spec) -> bool:
    """Whether a hybrid host's unified hierarchy holds a limit of the spec."""
    resources = spec.resources or {}
    return bool(resources.get("hugepageLimits") or resources.get("unified"))


def init_config(container_id: str, spec: Spec, fifo: str | None, options,
                channel: InitChannel, host_mount: dict | None = None) -> InitConfig:
    mounts = plan_mounts([m for m in spec.mounts if m.get("type") not in CGROUP_TYPES], [])
    cgroup_mounts = [m for m in spec.mounts if m.get("type") in CGROUP_TYPES]
    dev_mounts = [m for m in spec.mounts if os.path.normpath(m["destination"]) == "/dev"]
    # A /dev bound from elsewhere (the host's, say) is not ours to fill:
    # replacing its nodes would replace the host's (runc skips it too).
    dev_is_bound = any(m.get("type") == "bind" or {"bind", "rbind"} & set(m.get("options") or [])
                       for m in dev_mounts)
    if not dev_is_bound:
        # In a user namespace mknod is not allowed: devices are bound from the host.
        in_user_ns = spec.namespace("user") is not None
        mounts.extend(plan_devices(spec.devices, bind=in_user_ns))
    mounts.extend(dev_read_only_last(mounts))
    if spec.process.capabilities:
        from kubirun.capabilities import beyond_our_bounding_set

        missing = beyond_our_bounding_set(spec.process.capabilities)
        if missing:
            kind, name = missing[0]
            raise KubirunError(f"config.json: process.capabilities.{kind}: {name} is not in kubirun's own"
                               f" bounding set (the host withheld it): the container cannot hold it"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    config = InitConfig(spec.root, spec.process, channel, mounts, spec.hostname)
    # /sys/fs/cgroup shows the container's own cgroup: mounted once the
    # runtime has made it (it says where in its answer to the CGROUP stop).
    config.cgroup_mounts = cgroup_mounts
    config.domainname = spec.domainname
    for ns in spec.namespaces:
        flag = namespaces.NAMESPACE_FLAGS[ns.type]
        if ns.type in ("pid", "time"):
            continue  # the fork takes care of them (their children enter them)
        if ns.type == "user":
            config.in_user_ns = True
            if ns.path:  # joined first: it gives the rights to join the others
                config.join.insert(0, (flag, ns.path))
            else:
                config.new_user = True  # the fork makes it, the runtime maps it
            continue
        if ns.path:
            config.join.append((flag, ns.path))
        elif ns.type == "cgroup":
            config.new_cgroupns = True
        else:
            config.unshare |= flag
    if spec.namespace("mount") is None:
        # Shares kubirun's mount namespace: mounts under a private bind of
        # the root, which the state records (ns.hostmount) and delete detaches.
        config.host_mount = host_mount
        config.rootfs = host_mount["path"]  # the root, once bound there
    net = spec.namespace("network")
    config.new_netns = net is not None and net.path is None
    if spec.rootfs_propagation:
        config.rootfs_propagation = PROPAGATION_OPTIONS[spec.rootfs_propagation]
    config.root_readonly = spec.root_readonly
    config.masked_paths = spec.masked_paths
    config.readonly_paths = spec.readonly_paths
    config.sysctl = spec.sysctl
    config.personality = spec.personality
    config.no_pivot = options.no_pivot
    config.exec_fifo = os.open(fifo, os.O_PATH | os.O_CLOEXEC) if fifo else None
    config.die_with_runtime = options.foreground
    config.preserve_fds = options.preserve_fds
    config.session_keyring = f"_ses.{container_id}" if options.new_keyring else None
    config.runtime_hooks = has_runtime_hooks(spec)
    config.hooks_create_container = spec.hooks.get("createContainer", [])
    config.hooks_start_container = spec.hooks.get("startContainer", [])
    config.seccomp = spec.seccomp.compile() if spec.seccomp else None
    config.exec_helper = _native.exec_helper_fd()
    return config


def start_init(container_id: str, spec: Spec, fifo: str, options,
               host_mount: dict | None = None, born: Birthplace | None = None) -> InitRun:
    """Fork the init (steps 2 and 3), into ``born``'s cgroup if given and
    the kernel can."""
    import sys

    channel = InitChannel()
    config = init_config(container_id, spec, fifo, options, channel, host_mount)
    ours = None
    if spec.process.terminal:
        from kubirun import console

        if options.console_socket:
            config.console_socket = console.connect_console_socket(options.console_socket)
        elif options.foreground:
            import socket

            ours, config.console_socket = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            config.console_ack = True
        else:
            raise KubirunError("process.terminal is true: a detached container needs"
                               " --console-socket to hand the terminal to")
    if config.seccomp is not None and config.seccomp.listener:
        # Where `start` will find the init, to take the filter's listener to
        # the seccomp agent (kubirun.seccomp_notify).
        from kubirun import seccomp_notify

        config.seccomp_socket = seccomp_notify.listen(os.path.dirname(fifo))
    pid_ns = spec.namespace("pid")
    config.hook_state = {"ociVersion": spec.version, "id": container_id, "status": "creating",
                         "bundle": spec.bundle, "annotations": spec.annotations}
    sys.stdout.flush()
    sys.stderr.flush()
    time_ns = spec.namespace("time")
    if time_ns is not None:
        with namespaces.TimeNamespaceForChildren(spec.time_offsets, time_ns.path):
            pid, born_in = _fork_init(pid_ns, config, born)
    else:
        # A spare init of the fork server's zygote, when it can be this one
        # (kubirun.zygote); else we fork it.
        forked = options.init_forker(pid_ns, config, born) if options.init_forker else None
        pid, born_in = forked if forked is not None else _fork_init(pid_ns, config, born)
    if pid == 0:
        container_init(config)  # never returns
    channel.parent_side()
    if config.seccomp_socket is not None:
        config.seccomp_socket.close()  # the init's now
    try:
        if config.exec_fifo is not None:
            os.close(config.exec_fifo)  # the init's now
        if config.new_user:
            # Its first stop: map its ids before it does anything as root.
            channel.expect(USERNS, "starting in its user namespace")
            namespaces.write_id_maps(pid, spec.uid_mappings, spec.gid_mappings)
            channel.go()
        master = None
        if config.console_socket is not None:
            config.console_socket.close()
        if ours is not None:
            from kubirun import console

            master = console.receive_master(ours, console.caller_terminal())
    except BaseException:
        # Not yet the caller's to undo (it learns the pid from our return).
        from kubirun.children import reap

        os.kill(pid, 9)  # our own child: its pid cannot be recycled before we reap it
        reap(pid)
        channel.close()
        raise
    return InitRun(pid, channel, ours, master, born_in)


def _fork_init(pid_ns, config: InitConfig, born: Birthplace | None) -> tuple[int, str | None]:
    """The init's pid (0 in the init) and the cgroup directory it was born
    in: ``born``'s, unless the kernel has no CLONE_INTO_CGROUP (the init
    then joins it through cgroup.procs, as the others)."""
    path, new = (pid_ns.path if pid_ns else None), pid_ns is not None and not pid_ns.path
    if born is not None:
        try:
            return namespaces.fork_init(path, new, new_user=config.new_user, cgroup_fd=born.fd), born.directory
        except OSError as err:
            if err.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                raise
            log.debug(f"clone3(CLONE_INTO_CGROUP): {err.strerror}: the init joins {born.directory} itself")
    return namespaces.fork_init(path, new, new_user=config.new_user), None


def has_runtime_hooks(spec: Spec) -> bool:
    return bool(spec.hooks.get("prestart") or spec.hooks.get("createRuntime"))


def runtime_joins_cgroup(spec: Spec) -> bool:
    """In a user namespace whose root is not the host's, the init cannot
    write the cgroup's files (they belong to the host's root): the runtime
    moves it (through cgroup.procs: slower, see Cgroup.join_files)."""
    if spec.namespace("user") is None:
        return False
    return namespaces.host_id(spec.uid_mappings, 0) != 0 or spec.namespace("user").path is not None


def cgroup_answer(spec: Spec, cgroup, joined: bool = False, born_in: str | None = None) -> bytes:
    """What the init needs to join the cgroup and show it: sent with the
    go-ahead to its CGROUP stop."""
    from kubirun.base import jsonio

    join = [] if joined else not_born_in(join_files(spec, cgroup), born_in)
    return jsonio.dumps({"join": join, "binds": cgroup_binds(cgroup)}).encode()


def complete(run: InitRun, spec: Spec, cgroup, hook_state, persist, record_created,
             meanwhile=None, limits=None) -> None:
    """Step 4: run the hooks when the init stops for them; once it is
    ready, record it as ``created`` and let it wait for ``start``.
    ``limits()`` (``apply_resources``) and ``meanwhile()`` run while the
    init joins its cgroup and finishes its set-up (we would only wait for
    it otherwise): the spec's resources, then what the caller needs next,
    imported then.

    The init keeps its PDEATHSIG until the state file says ``created``
    with its PID (so a runtime killed before that takes the half-made
    container with it), and drops it before we exit (``WAITING``)."""
    channel = run.channel
    # The answer to its CGROUP stop goes now, whether it has asked yet or
    # not (it finds it in the pipe): a round trip less between us.
    if cgroup is None:
        from kubirun.base import jsonio

        channel.go_ahead(jsonio.dumps({"join": [], "binds": []}).encode())
    elif runtime_joins_cgroup(spec):
        cgroup.add(run.pid, include_unified=joins_unified(spec) and run.born_in is None)
        channel.go_ahead(cgroup_answer(spec, cgroup, joined=True))
    else:
        channel.go_ahead(cgroup_answer(spec, cgroup, born_in=run.born_in))  # made (set_up_cgroup) while it mounted
    if limits is not None:
        limits()
    if meanwhile is not None:
        meanwhile()
    channel.expect(CGROUP, "setting up its namespaces and mounts")
    if has_runtime_hooks(spec):
        from kubirun.hooks import run_hooks

        channel.expect(HOOKS, "joining its cgroup")
        persist()  # hooks may call `kubirun state ID`
        state = hook_state()
        # prestart (the deprecated phase) sees "created", as crun shows it
        # and runtime-tools expects; createRuntime is part of create.
        run_hooks("prestart", spec.hooks.get("prestart", []), dict(state, status="created"))
        run_hooks("createRuntime", spec.hooks.get("createRuntime", []), state)
        channel.go()
    channel.expect(READY, "preparing its process")
    record_created()
    channel.go()
    channel.expect(WAITING, "waiting for start")
