"""Networking for ``kubirun run IMAGE``: ``--network none|host|bridge|ns:PATH``.

    none     a network namespace of its own with only ``lo``, up
    host     the runtime's network namespace (no isolation)
    bridge   its own namespace, plus ``eth0``: one end of a veth pair whose
             other end is plugged into a bridge (``kubi0``, 10.89.0.0/16),
             an address leased from the bridge's pool, a default route via
             the bridge, /etc/hosts, /etc/hostname and /etc/resolv.conf;
             ``-p HOST:CONTAINER`` publishes ports; ``--nat`` lets it out
    ns:PATH  joins the network namespace at PATH (``/run/netns/NAME``,
             ``/proc/PID/ns/net``), as it is

The default is ``bridge`` when a bridge can be made or used, that is as
root (who may make it, as docker makes docker0); ``none`` for a user
without privileges (no rootless networking yet).
``$KUBIRUN_NETWORK`` (a mode) replaces that default: the test suite sets
``none``, so that no test makes a device in the host's namespace.

OCI bundles (``create``, ``run -b``) get what their config says, nothing
more: engines bring their own networking.

How the pieces fit (each module says more):

    ipam      leases under the state directory, under a file lock
    helper    a forked child doing the netlink work while the runtime
              unpacks and creates (pyroute2 is imported there only)
    rtnl      pyroute2's message classes over a plain netlink socket
    bridge    the bridge, made on first use
    veth      the pair, eth0 inside, address, route
    ports     nftables rules per container, the loopback proxy, --nat
    etcfiles  the /etc files, bind-mounted

A container's network is described by one record (a dict), stored both as
its lease and in its state (``state["network"]``): ``teardown(record)``
undoes everything from it alone, on exit, on ``delete``, and after the
runtime was killed (``delete --force``).
"""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError

DEFAULT_BRIDGE = "kubi0"
DEFAULT_SUBNET = "10.89.0.0/16"
MODES = ("none", "host", "bridge")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class NetworkOptions:
    """What the command line asked for (``mode`` None: the default)."""

    def __init__(self, mode: str | None = None, publish: list[str] | tuple = (),
                 nat: bool = False, bridge: str | None = None, subnet: str | None = None,
                 loopback: bool = True) -> None:
        self.mode = mode
        # Published ports also served on 127.0.0.1 by threads of the
        # runtime (a foreground run); not for the library's detached
        # containers, whose fork server must stay single-threaded.
        self.loopback = loopback
        self.publish = list(publish)
        self.nat = nat
        self.bridge = bridge
        self.subnet = subnet

    def resolve(self) -> tuple[str, str | None]:
        """(mode, namespace path): the default decided, options checked."""
        bridge = self.bridge or DEFAULT_BRIDGE
        if self.bridge is not None:
            check_bridge_name(self.bridge)
        given = self.mode or os.environ.get("KUBIRUN_NETWORK") or None
        if given is None:
            mode, path = default_mode(bridge), None
        else:
            mode, path = parse_mode(given)
        if mode != "bridge":
            for given, option in ((self.publish, "-p/--publish"), (self.nat, "--nat"),
                                  (self.bridge, "--bridge"), (self.subnet, "--subnet")):
                if given:
                    why = "" if given else " (the default here is none: no bridge can be made)"
                    raise KubirunError(f"{option} needs --network bridge{why}")
        return mode, path


def parse_mode(text: str) -> tuple[str, str | None]:
    if text.startswith("ns:"):
        path = text[3:]
        if not path.startswith("/"):
            raise KubirunError(f"--network {text!r}: ns: takes an absolute path"
                               " (/run/netns/NAME, /proc/PID/ns/net)")
        if not os.path.exists(path):
            raise KubirunError(f"--network {text!r}: {path} does not exist")
        if not _is_network_namespace(path):
            raise KubirunError(f"--network {text!r}: {path} is not a network namespace"
                               " (/run/netns/NAME, /proc/PID/ns/net)")
        return "ns", path
    if text not in MODES:
        raise KubirunError(f"--network {text!r}: expected none, host, bridge or ns:PATH")
    return text, None


def _is_network_namespace(path: str) -> bool:
    from kubirun._native import CLONE_NEWNET, namespace_type

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return namespace_type(fd) == CLONE_NEWNET
    except OSError:
        return False  # not a namespace file at all (ENOTTY)
    finally:
        os.close(fd)


def check_bridge_name(name: str) -> None:
    if not 0 < len(name) < 16 or not _NAME_CHARS.issuperset(name) or name in (".", ".."):
        raise KubirunError(f"--bridge {name!r}: a link name (1 to 15 letters, digits, '_', '-', '.')")


def default_mode(bridge: str = DEFAULT_BRIDGE) -> str:
    """``bridge`` as root (who may make and use the bridge), else ``none``."""
    if os.geteuid() != 0:
        return "none"  # a user cannot plug veths into a bridge (no rootless networking yet)
    return "bridge"


def links() -> list[str]:
    """The links of this network namespace (/proc/net is the reader's)."""
    try:
        with open("/proc/net/dev", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def setup(options: NetworkOptions, container_id: str, container_dir: str,
          hostname: str, state_root: str, has_state) -> Network | None:
    """Start on a container's network, before its image is unpacked: in
    bridge mode lease an address and fork the helper.  None for ``none``.
    The lease pool lives under ``state_root``; ``has_state(root, id)`` tells
    whether a lease's container still has a state (ipam.Pool)."""
    mode, path = options.resolve()
    if mode == "none":
        return None
    network = Network(mode, path)
    network.loopback = options.loopback
    if mode == "bridge":
        try:
            network.start_bridge(options, container_id, container_dir, hostname, state_root, has_state)
        except BaseException:
            network.close()
            raise
    elif mode == "host":
        from kubirun.ns.net import etcfiles

        files = os.path.join(container_dir, "network")
        network.record = {"mode": "host", "files": files}
        network.mounts = etcfiles.write(files, hostname, None)
    return network


class Network:
    """The network of one ``kubirun run IMAGE`` container, on the runtime's side."""

    def __init__(self, mode: str, path: str | None = None) -> None:
        self.mode = mode
        self.path = path
        self.record: dict | None = None  # what teardown needs: CreateOptions.network
        self.mounts: list[dict] = []
        self.helper = None
        self.proxy = None
        self.ports: list = []
        self.loopback = True  # serve the published ports on 127.0.0.1 too

    def start_bridge(self, options: NetworkOptions, container_id: str, container_dir: str,
                     hostname: str, root: str, has_state) -> None:
        from kubirun.ns.net import etcfiles, ipam, ports, veth
        from kubirun.ns.net.helper import Helper
        from kubirun.base.proc import process_start_time

        bridge = options.bridge or DEFAULT_BRIDGE
        subnet = ipam.Subnet(options.subnet or DEFAULT_SUBNET)
        self.ports = ports.parse_publish(options.publish)
        pool = ipam.Pool(ipam.pool_dir(root, bridge), subnet, has_state)
        me = os.getpid()

        def make_record(address: str) -> dict:
            host_if = veth.host_name(address)
            return {
                "mode": "bridge", "owner": container_id, "root": root,
                "creator": [me, process_start_time(me)],
                "netns": os.readlink("/proc/self/ns/net"),
                "bridge": bridge, "subnet": str(subnet), "address": address,
                "gateway": ipam.int_to_ip(subnet.gateway), "host_if": host_if,
                "table": ports.table_name(host_if) if self.ports else None,
                "ports": [p.to_json() for p in self.ports],
                "ipam": pool.dir, "files": os.path.join(container_dir, "network"),
            }

        self.record = pool.allocate(make_record, _undo_links_and_rules)
        record = self.record
        self.helper = Helper({"bridge": bridge, "subnet": str(subnet), "nat": options.nat,
                              "address": record["address"], "host_if": record["host_if"],
                              "table": record["table"], "ports": record["ports"]})
        self.mounts = etcfiles.write(record["files"], hostname, record["address"])

    def configure(self, config: dict) -> None:
        """The container's config: its network namespace, its /etc files."""
        namespaces = config["linux"]["namespaces"]
        if self.mode == "host":
            namespaces[:] = [ns for ns in namespaces if ns["type"] != "network"]
        elif self.mode == "ns":
            for ns in namespaces:
                if ns["type"] == "network":
                    ns["path"] = self.path
        config["mounts"] = list(config.get("mounts") or []) + self.mounts

    def attach(self, init_pid: int) -> None:
        """The container is created (its init waits in its new network
        namespace): plug it in, then serve its ports on loopback."""
        if self.helper is None:
            return
        self.helper.attach(init_pid)  # reaped by close(): it is exiting already
        if self.ports and self.loopback:
            from kubirun.ns.net.ports import LoopbackProxy

            self.proxy = LoopbackProxy(self.record["address"], self.ports)
            self.proxy.start()

    def close(self, torn_down: bool = False) -> None:
        """Stop the helper and the proxy; undo the rest unless the
        container's ``delete`` did (``torn_down``)."""
        if self.helper is not None:
            self.helper.close()
            self.helper = None
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.record is not None and not torn_down:
            teardown(self.record)


def _undo_links_and_rules(record: dict) -> None:
    """A stale lease's veth and rules, before its address is reused (the
    lease itself is overwritten by the caller, who holds the pool's lock)."""
    _undo(record, release=False)


def undo_stale(record: dict) -> None:
    """A stale lease's veth, port rules and /etc files (the lease itself
    is removed by the caller, who holds the pool's lock)."""
    _undo(record, release=False)
    if record.get("files"):
        from kubirun.ns.net import etcfiles

        etcfiles.remove(record["files"])


def teardown(record: dict) -> None:
    """Undo a container's network from its record: its veth, its port
    rules, its /etc files, its lease.  Safe to repeat."""
    _undo(record, release=True)


def _undo(record: dict, release: bool) -> None:
    from kubirun.base import log

    errors = []
    here = record.get("netns") in (None, _current_netns())
    if record.get("host_if") or record.get("table"):
        if not here:
            log.warning(f"container {record.get('owner')}: its network lives in another network"
                        f" namespace ({record.get('netns')}): run delete there to remove its"
                        f" veth {record.get('host_if')} and port rules")
        else:
            if record.get("host_if") and not _kernel_removes_veth(record):
                try:
                    from kubirun.ns.net import rtnl

                    rtnl.delete_link(record["host_if"])
                except OSError as err:
                    errors.append(err)
            if record.get("table"):
                try:
                    from kubirun.ns.net import ports

                    ports.unpublish(record["table"])
                except OSError as err:
                    errors.append(err)
    if release and record.get("files"):
        from kubirun.ns.net import etcfiles

        etcfiles.remove(record["files"])
    if release and record.get("ipam") and record.get("address"):
        from kubirun.ns.net.ipam import Pool

        Pool(record["ipam"], None).release(record["address"], record.get("owner"))
    for err in errors:
        log.warning(f"container {record.get('owner')}: network teardown: {err.strerror or err}")


def _kernel_removes_veth(record: dict) -> bool:
    """True in the runtime that made the container, once it is deleted:
    the init was its child (reaped), the helper has exited, and nothing of
    kubirun holds the container's network namespace any more, so the
    kernel destroys it and the veth pair with it, a few ms later.  Deleting
    the veth ourselves would cost ~20 ms of RCU grace periods on every
    run.  Anyone else (``delete --force`` after the runtime was killed, a
    stale lease reclaimed) deletes it explicitly: something may still hold
    that namespace."""
    creator = record.get("creator") or [0, 0]
    return creator[0] == os.getpid()


def _current_netns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None
