"""Published ports (``-p HOST:CONTAINER[/tcp|udp]``), and ``--nat``.

A container's ports get an nftables table of their own, named after its
veth (``kubirun_kv0a590002``): DNAT of the host's own addresses' HOST port
to the container's address and port, for packets that come in
(prerouting) and for those the host sends itself (output).  One table per
container makes the teardown one atomic ``delete table``, and a table left
by a runtime killed before its teardown is replaced whole when its address
is leased again.  Tables are written with the ``nft`` tool (nftables),
in the helper; the teardown deletes them with one hand-built netlink
batch, without it.

Loopback cannot be DNAT'ed to another interface (the kernel drops such
packets as martians unless ``route_localnet`` is set, which would expose
127.0.0.0/8 to the network), so ``127.0.0.1:HOST`` is served by a
userspace proxy in the runtime, as docker-proxy does: threads copying
bytes to the container's address, for as long as the container runs.

Without ``--nat`` the host does not forward: published ports answer on
the host's own addresses from the host itself, and on 127.0.0.1.
``--nat`` turns IP forwarding on (in kubirun's network namespace) and adds
a masquerade table for the bridge's subnet (``kubirun-nat-BRIDGE``), which
stays with the bridge: then containers reach out, and published ports
answer other machines too.
"""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError

PROTOCOLS = ("tcp", "udp")


class Port:
    def __init__(self, host: int, container: int, protocol: str = "tcp") -> None:
        self.host, self.container, self.protocol = host, container, protocol

    def to_json(self) -> list:
        return [self.host, self.container, self.protocol]

    @classmethod
    def from_json(cls, value: list) -> Port:
        return cls(*value)

    def __str__(self) -> str:
        return f"{self.host}:{self.container}/{self.protocol}"


def parse_publish(items: list[str]) -> list[Port]:
    """``-p 8080:80``, ``-p 5353:53/udp``; a HOST port and protocol once only."""
    ports, seen = [], set()
    for item in items:
        spec, _, protocol = item.partition("/")
        protocol = (protocol or "tcp").lower()
        host, sep, container = spec.partition(":")
        if not sep or protocol not in PROTOCOLS or not _is_port(host) or not _is_port(container):
            raise KubirunError(f"-p {item!r}: expected HOST:CONTAINER[/tcp|udp], ports 1 to 65535")
        port = Port(int(host), int(container), protocol)
        if (port.host, protocol) in seen:
            raise KubirunError(f"-p {item!r}: host port {port.host}/{protocol} is published twice")
        seen.add((port.host, protocol))
        ports.append(port)
    return ports


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def table_name(host_if: str) -> str:
    return f"kubirun_{host_if}"


def nat_table_name(bridge: str) -> str:
    return "kubirun-nat-" + "".join(c if c.isalnum() else "_" for c in bridge)


def ruleset(table: str, address: str, ports: list[Port]) -> str:
    """The container's table; replaces a stale one of the same name."""
    pre = [f"fib daddr type local {p.protocol} dport {p.host} dnat to {address}:{p.container}"
           for p in ports]
    out = [f"ip daddr != 127.0.0.0/8 {rule}" for rule in pre]
    return "\n".join([
        f"add table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {rule}" for rule in pre),
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        *(f"    {rule}" for rule in out),
        "  }",
        "}",
        "",
    ])


def nat_ruleset(bridge: str, subnet: str) -> str:
    table = nat_table_name(bridge)
    return "\n".join([
        f"add table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {subnet} oifname != \"{bridge}\" masquerade",
        "  }",
        "}",
        "",
    ])


def nft_tool() -> str:
    import shutil

    tool = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft")
                                        if os.access(p, os.X_OK)), None)
    if tool is None:
        raise OSError(2, "publishing ports and --nat need the nft tool (the nftables package)")
    return tool


class Nft:
    """``nft -f -`` on a script, started at once and waited for later (the
    helper imports pyroute2 meanwhile); spawned without ``subprocess``,
    whose import alone costs ~5 ms."""

    def __init__(self, script: str, what: str) -> None:
        self.what = what
        tool = nft_tool()
        script_r, script_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = os.posix_spawn(tool, [tool, "-f", "-"], os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, script_r, 0), (os.POSIX_SPAWN_DUP2, err_w, 2)])
        finally:
            os.close(script_r)
            os.close(err_w)
        self.errors = err_r
        try:
            os.write(script_w, script.encode())  # far below a pipe's capacity
        finally:
            os.close(script_w)

    def wait(self) -> None:
        message = b""
        while chunk := os.read(self.errors, 4096):
            message += chunk
        os.close(self.errors)
        _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            lines = message.decode(errors="replace").strip().splitlines()
            raise OSError(0, f"{self.what}: nft: {lines[0] if lines else status}")


def rules(job: dict) -> tuple[str, str] | None:
    """(the nft script, what it does) of a helper's job: --nat's table,
    the published ports' table; None if neither."""
    script, what = "", []
    if job.get("nat"):
        script += nat_ruleset(job["bridge"], job["subnet"])
        what.append(f"masquerading {job['subnet']}")
    if job.get("ports"):
        published = [Port.from_json(p) for p in job["ports"]]
        script += ruleset(job["table"], job["address"], published)
        what.append(f"publishing {', '.join(map(str, published))}")
    return (script, " and ".join(what)) if script else None


def enable_forwarding() -> None:
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")


def unpublish(table: str) -> bool:
    """Delete the container's table; False if there was none.  One
    hand-built nftables batch (no nft tool, no pyroute2): a teardown
    costs ~0.2 ms instead of an nft process."""
    import struct

    from kubirun.ns.net import rtnl

    NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE, NFTA_TABLE_NAME = 10, 2, 1
    NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFPROTO_IPV4 = 0x10, 0x11, 2

    def message(msg_type: int, flags: int, seq: int, family: int, res_id: int,
                payload: bytes = b"") -> bytes:
        body = struct.pack("=BBH", family, 0, res_id) + payload
        return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body

    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), NFTA_TABLE_NAME) + name + b"\0" * (-len(name) % 4)
    batch = (message(NFNL_MSG_BATCH_BEGIN, rtnl.NLM_F_REQUEST, 1, 0,
                     struct.unpack("=H", struct.pack("!H", NFNL_SUBSYS_NFTABLES))[0])
             + message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE,
                       rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, 2, NFPROTO_IPV4, 0, attr)
             + message(NFNL_MSG_BATCH_END, rtnl.NLM_F_REQUEST, 3, 0,
                       struct.unpack("=H", struct.pack("!H", NFNL_SUBSYS_NFTABLES))[0]))
    with rtnl.Netlink(rtnl.NETLINK_NETFILTER) as nl:
        nl.seq = 2
        try:
            nl.raw(batch, f"deleting nft table {table}")
        except OSError as err:
            if err.errno == 2:  # ENOENT: no such table (never made, or gone already)
                return False
            raise
    return True


class LoopbackProxy:
    """127.0.0.1:HOST -> ADDRESS:CONTAINER, in threads of the runtime.

    The listening sockets are made at once (a port in use is an error
    before the container starts); ``start`` runs the threads, with the
    runtime's forwarded signals blocked in them so that those are always
    handled by the main thread."""

    def __init__(self, address: str, ports: list[Port]) -> None:
        import socket

        self.address = address
        self.listeners = []
        try:
            for port in ports:
                kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
                sock = socket.socket(socket.AF_INET, kind)
                self.listeners.append((sock, port))
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port.host))
                except OSError as err:
                    raise KubirunError(f"-p {port}: cannot listen on 127.0.0.1:{port.host}:"
                                       f" {err.strerror}") from None
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        import _signal as signal
        import gc
        import threading

        # The command line runs without the garbage collector (it lives
        # milliseconds); a proxy serves connections for as long as the
        # container runs, and their threads and errors make cycles.
        gc.enable()

        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            for sock, port in self.listeners:
                serve = self._serve_tcp if port.protocol == "tcp" else self._serve_udp
                threading.Thread(target=serve, args=(sock, port), daemon=True,
                                 name=f"kubirun-proxy-{port}").start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def close(self) -> None:
        import socket

        for sock, _ in self.listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            except OSError:
                pass
            sock.close()
        self.listeners = []

    def _serve_tcp(self, sock, port: Port) -> None:
        import threading

        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connect, args=(client, port), daemon=True).start()

    def _connect(self, client, port: Port) -> None:
        import socket
        import threading

        try:
            upstream = socket.create_connection((self.address, port.container), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        replies = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
        replies.start()
        _copy(client, upstream)
        replies.join()
        client.close()
        upstream.close()

    def _serve_udp(self, sock, port: Port) -> None:
        import socket
        import threading

        sessions: dict = {}
        while True:
            try:
                data, client = sock.recvfrom(1 << 16)
            except OSError:
                return
            upstream = sessions.get(client)
            if upstream is None or upstream.fileno() < 0:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                upstream.connect((self.address, port.container))
                upstream.settimeout(120)  # an idle session ends
                sessions[client] = upstream
                threading.Thread(target=_udp_replies, args=(upstream, sock, client),
                                 daemon=True).start()
            try:
                upstream.send(data)
            except OSError:
                pass


def _copy(source, sink) -> None:
    """Bytes from source to sink until EOF, then half-close the sink."""
    import socket

    try:
        while True:
            data = source.recv(1 << 16)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _udp_replies(upstream, listener, client) -> None:
    try:
        while True:
            listener.sendto(upstream.recv(1 << 16), client)
    except OSError:
        pass
    finally:
        upstream.close()
