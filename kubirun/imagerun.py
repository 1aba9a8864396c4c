"""``kubirun run IMAGE``: a container straight from an image, in the
foreground, on the same lifecycle as an OCI bundle.

    1. the container gets a directory of its own (``$KUBIRUN_STORE/containers/ID``)
       and its network is started on (``kubirun.ns.net``: in bridge mode an
       address is leased and a helper forked, working meanwhile)
    2. the image becomes a root filesystem (``kubirun.image.source``): a
       directory in place, or the image's layers from the store (imported
       once) as an overlay mount at ``containers/ID/rootfs``
    3. a config like ``kubirun spec``'s, with the command line's process
       completed by the image's config (Entrypoint/Cmd, Env, WorkingDir,
       User; Labels as annotations), is made in memory: the container is
       an OCI container from here on
    4. create; the network is attached to the waiting init; start, wait
       (relaying the terminal, forwarding signals)
    5. delete (the network's teardown with it), the overlay unmounted and
       the container's directory removed; with ``--keep`` the container
       stays, stopped, until ``kubirun delete NAME`` (its network is
       given back at once)

The container's directory is owned by this run while it lasts
(``kubirun.containerdir``): if the run is killed, ``delete --force NAME``,
the next ``run --name NAME`` or ``gc`` finds it ownerless and removes it
(``kubirun.reclaim``), with what else the run had made.
"""
from __future__ import annotations

import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start

from kubirun.base.errors import KubirunError
from kubirun.base.ids import new_id, validate_id
from kubirun.base.killpoint import reached
from kubirun.ns.net import NetworkOptions  # noqa: F401 (RunOptions.network: the CLI's)
from kubirun.process import ProcessSpec

DEFAULT_STORE = "/var/lib/kubirun"


def store_dir() -> str:
    """The image store (containers live under it too): see image.store."""
    from kubirun.image.store import store_root

    return store_root()


class RunOptions:
    """What ``kubirun run IMAGE`` was asked for."""

    def __init__(self, image: str | None, name: str | None = None, hostname: str | None = None,
                 process: ProcessSpec | None = None, keep: bool = False,
                 resources: dict | None = None, network=None, platform: str | None = None,
                 command: list[str] | None = None, entrypoint: list[str] | None = None,
                 workdir_given: bool = False, seccomp: "str | dict" = "default",
                 store: str | None = None, configure=None) -> None:
        self.image = image
        self.name = name
        self.hostname = hostname
        self.process = process or ProcessSpec()
        self.keep = keep
        self.resources = resources or {}  # linux.resources, from --memory, --cpus...
        self.network = network  # a kubirun.ns.net.NetworkOptions (None: the default mode)
        # The image's config fills what the command line leaves unsaid:
        self.platform = platform  # --platform, for multi-platform image indexes
        self.command = command  # CMD as given ([] or None: the image's Cmd)
        self.entrypoint = entrypoint  # --entrypoint (None: the image's)
        self.workdir_given = workdir_given  # -w was given (else the image's WorkingDir)
        # "default" (seccomp_default), "unconfined", or a profile (a dict in
        # docker's or the runtime spec's format) from --security-opt.
        self.seccomp = seccomp
        self.store = store  # the image store (None: image.store.store_root())
        self.console_socket: str | None = None  # where a detached terminal's master goes
        # A last word on the config before it is parsed (the library's
        # mounts, sandbox namespaces, read-only root...): config -> None.
        self.configure = configure


def security_options(options: list[str], process: ProcessSpec) -> "str | dict":
    """``--security-opt`` as docker and podman take it: the seccomp profile
    ("default", "unconfined" or the profile read from FILE, checked now so
    a bad one is refused before anything is made), and no-new-privileges
    (set on ``process``).  AppArmor and SELinux are not applied by kubirun,
    so only their "off" values are accepted."""
    seccomp: str | dict = "default"
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            key, sep, value = option.partition(":")  # docker's older spelling
        if key == "seccomp" and sep and value:
            seccomp = value if value == "unconfined" else _read_profile(value)
        elif key == "no-new-privileges" and value in ("", "true", "false"):
            process.no_new_privileges = value != "false"
        elif (key, value) in (("apparmor", "unconfined"), ("label", "disable")):
            continue  # kubirun applies neither: already so
        else:
            raise KubirunError(f"--security-opt {option!r}: expected seccomp=unconfined,"
                               " seccomp=FILE or no-new-privileges (kubirun applies no AppArmor"
                               " or SELinux labels)")
    return seccomp


def _read_profile(path: str) -> dict:
    from kubirun import seccomp, seccomp_default
    from kubirun.base import jsonio

    where = f"--security-opt seccomp={path}"
    try:
        raw = jsonio.load_file(path)
    except OSError as err:
        raise KubirunError(f"{where}: cannot read it: {err.strerror}") from None
    except (jsonio.JSONError, UnicodeDecodeError) as err:
        raise KubirunError(f"{where}: malformed JSON: {err}") from None
    if not isinstance(raw, dict):
        raise KubirunError(f"{where}: expected a JSON object (a seccomp profile)")
    # Its mistakes, named by their place in the file (checked again, for
    # the container's capabilities, once they are known).
    from kubirun.spec import SpecError

    try:
        seccomp.parse(seccomp_default.to_oci(raw, None) if seccomp_default.is_docker_format(raw)
                      else raw, "seccomp")
    except SpecError as err:
        raise KubirunError(f"{where}: {str(err).removeprefix('config.json: ')}") from None
    return raw


def seccomp_profile(choice: "str | dict", process: ProcessSpec) -> dict | None:
    """The run's ``linux.seccomp`` for ``process`` (whose capabilities
    decide what a docker-format profile allows); None: unconfined."""
    if choice == "unconfined":
        return None
    from kubirun import seccomp_default

    raw = seccomp_default.default_profile() if choice == "default" else choice
    if not seccomp_default.is_docker_format(raw):
        return raw
    bounding = (process.capabilities or {}).get("bounding")
    return seccomp_default.to_oci(raw, list(bounding) if bounding is not None else None)


class _Terminated(BaseException):
    """SIGTERM/SIGHUP while preparing: unwind so nothing is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise _Terminated(signum)


def image_config(process: ProcessSpec, hostname: str, rootfs: str, resources: dict) -> dict:
    """The config of an image run: ``kubirun spec``'s defaults (namespaces,
    mounts, masked paths); the process itself is the command line's, with
    docker's default capabilities (root inside, but no CAP_SYS_ADMIN,
    CAP_SYS_PTRACE, CAP_NET_ADMIN...)."""
    from kubirun.spec import default_config

    config = default_config()
    config["linux"]["namespaces"].append({"type": "cgroup"})  # as docker on cgroup v2
    config["process"]["args"] = process.args
    config["root"] = {"path": rootfs}
    config["hostname"] = hostname
    # Deny every device but the defaults (creation.with_default_devices
    # appends those), as docker and podman do, then the run's limits.
    config["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}], **resources}
    if os.geteuid() != 0:
        make_rootless(config)
    return config


def make_rootless(config: dict) -> None:
    """A user without privileges: a user namespace mapping the user's own
    uid and gid to root, which then owns the container's other namespaces
    (its own network namespace, with lo only, included); devices are bound
    from the host (creation does that in a user namespace); resources only
    if a cgroup is delegated (creation warns otherwise).

    With newuidmap/newgidmap installed and entries for the user in
    /etc/subuid and /etc/subgid, ids 1.. map to those ranges too, as
    podman's do: the image's other users exist (``su``, ``-u nobody``,
    supplementary groups), and the ptys get gid 5.  Else root alone."""
    from kubirun.ns import idmap

    linux = config["linux"]
    linux["namespaces"].append({"type": "user"})
    uids, gids = idmap.container_mappings("uid"), idmap.container_mappings("gid")
    if uids is None or gids is None:
        uids, gids = [(0, os.geteuid(), 1)], [(0, os.getegid(), 1)]
    linux["uidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in uids]
    linux["gidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in gids]
    if not any(linux["resources"].get(k) for k in linux["resources"] if k != "devices"):
        linux["resources"] = {}  # a user cannot write device rules without a cgroup anyway
    if not any(c <= 5 < c + n for c, _, n in gids):
        for mount in config["mounts"]:
            if mount["type"] == "devpts":  # gid 5 (tty) is not mapped
                mount["options"] = [o for o in mount["options"] if o != "gid=5"]


class Created:
    """An image container created, its init waiting: what its run holds
    until the container is done with (``finish``) or handed over."""

    def __init__(self, container, network, owner: int, container_dir: str,
                 image_config: dict | None) -> None:
        self.container = container  # a kubirun.container.Container
        self.network = network  # a kubirun.ns.net.Network, or None
        self.owner = owner  # the fd holding the store directory's owner lock
        self.container_dir = container_dir
        self.image_config = image_config  # the image's config (Cmd, Env, StopSignal...), or None

    def release(self) -> None:
        """A detached container: its state owns its store directory from
        now on (``remove_on_delete``: its ``delete`` removes it, and a
        killed orchestrator leaves it to ``delete --force``/``gc``)."""
        if self.owner >= 0:
            os.close(self.owner)
            self.owner = -1

    def finish(self, keep: bool = False) -> None:
        """The foreground run is over: delete the container (or, with
        ``keep``, keep it stopped), give back its network, release its
        directory."""
        try:
            if keep:
                self.container.keep_stopped()  # its network given back below
            else:
                # The network's teardown too (state["network"]); nothing of
                # the name is a leftover: this run owns it.
                self.container.delete(force=True, leftovers=False)
        finally:
            try:
                if self.network is not None:
                    self.network.close(torn_down=not keep)
            finally:
                self.release()


def create(options: RunOptions, root: str, store: str, foreground: bool) -> Created:
    """Steps 1 to 4 of a run, up to the created container (its network
    attached): used by the foreground ``run`` and by the library's
    detached ``Runtime.run_image``.  On failure nothing is left."""
    from kubirun import containerdir
    from kubirun.state import has_state

    name = validate_id(options.name or new_id())
    container_dir = os.path.join(store, "containers", name)
    if options.name:
        _reclaim_name(name, root, store)
    if os.path.lexists(os.path.join(root, name)):
        raise KubirunError(f"container name {name!r} is already in use (a container of {root};"
                           " `kubirun delete` it first)")
    owner = containerdir.claim(container_dir, root)
    reached("run.claimed")
    container = None
    network = None
    try:
        from kubirun.image.source import prepare
        from kubirun.ns import net
        from kubirun.spec import parse

        # First: in bridge mode its helper works while the image unpacks.
        network = net.setup(options.network or net.NetworkOptions(), name, container_dir,
                            options.hostname or name, root, has_state)
        reached("run.network")
        from kubirun.container import Container, CreateOptions

        if options.image is None:  # a pod sandbox: an empty root of its own
            from kubirun.image.source import Prepared

            image = Prepared(os.path.join(container_dir, "rootfs"))
            os.mkdir(image.rootfs, 0o755)
        else:
            image = prepare(options.image, container_dir, options.platform, copy=options.keep,
                            store=store)
        reached("run.mounted")
        if image.config is not None:
            from kubirun.image import config as image_defaults

            image_defaults.apply(options.process, image.config, options.command or [],
                                 options.entrypoint, options.workdir_given)
        config = image_config(options.process, options.hostname or name, image.rootfs,
                              options.resources)
        if image.config:
            config.setdefault("annotations", {}).update(image_defaults.annotations(image.config))
        if network is not None:
            network.configure(config)
        if options.configure is not None:
            options.configure(config)
        if options.process.capabilities is None:
            from kubirun.capabilities import container_default_sets

            options.process.capabilities = container_default_sets()
        profile = seccomp_profile(options.seccomp, options.process)
        if profile is not None:
            config["linux"]["seccomp"] = profile
        spec = parse(config, container_dir)
        if spec.seccomp is not None and options.seccomp == "default":
            # Names of calls newer than this libseccomp are expected there.
            spec.seccomp.warn_unknown = False
        spec.process = options.process
        container = Container.create(name, spec, root=root, options=CreateOptions(
            foreground=foreground, remove_on_delete=container_dir,
            console_socket=options.console_socket,
            ephemeral=foreground and not options.keep,
            network=network.record if network is not None else None))
        reached("run.created")
        if network is not None:
            network.attach(container.load()["pid"])  # the init waits in its namespace
        reached("run.attached")
        return Created(container, network, owner, container_dir, image.config)
    except BaseException:
        try:
            if container is not None:
                container.delete(force=True, leftovers=False)
            else:
                containerdir.remove(container_dir)
        finally:
            try:
                if network is not None:
                    network.close(torn_down=container is not None)
            finally:
                os.close(owner)
        raise


def run(options: RunOptions) -> int:
    """Run a container to completion and return its exit status."""
    from kubirun.state import default_root

    previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    created = None
    try:
        created = create(options, default_root(), options.store or store_dir(), foreground=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        code = created.container.start_and_wait(interactive=options.process.interactive)
        reached("run.exited")
        return code
    except _Terminated as err:
        return err.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if created is not None:
            created.finish(keep=options.keep)


def _reclaim_name(name: str, root: str, store: str) -> None:
    """``run --name NAME`` after a run of that name was killed: what it
    left is removed (a live or kept container of that name is not)."""
    from kubirun import garbage, reclaim

    garbage.dead_container(name, root)
    reclaim.leftovers_of(name, root, store)
