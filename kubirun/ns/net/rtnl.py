"""rtnetlink: pyroute2's messages over a plain netlink socket.

pyroute2 costs ~190 ms to import whole (its package ``__init__`` imports
every API it has, NDB and asyncio included) and ~75 ms for
``pyroute2.iproute``.  What bridge mode needs is only its message classes,
``ifinfmsg``, ``ifaddrmsg`` and ``rtmsg`` (~20 ms): they encode requests and
decode answers, and the transport is ten lines here.  ``load_messages``
imports them without running the package ``__init__``, by putting a bare
package module for ``pyroute2`` in ``sys.modules`` first.  That stub would
be wrong for any other user of pyroute2 in the same process, so it is
only done in the network helper, a short-lived child of the runtime
(``helper``); a process that already imported pyroute2 gets it as is.

Deleting a link by name at teardown needs none of that: ``delete_link``
builds its one request by hand, so ``delete`` never imports pyroute2.
"""
from __future__ import annotations

import _socket
import os
import struct
import sys

AF_NETLINK = 16
SOCK_RAW = 3
SOCK_CLOEXEC = 0o2000000
NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24

IFF_UP = 0x1
IFLA_IFNAME = 3


def load_messages():
    """pyroute2's (ifinfmsg, ifaddrmsg, rtmsg) classes, without its package
    ``__init__`` (see the module's docstring).

    In a process with no pyroute2 yet, the import also runs with stand-ins
    for four standard modules that these classes import but that encoding
    and decoding messages never use: ``logging`` and ``traceback`` (log
    calls on errors), ``multiprocessing`` and ``platform`` (read once by
    ``pyroute2.config`` at import).  They save ~6 ms of CPU of the ~22: a
    third of what bridge mode adds to a start.  The stand-ins leave ``sys.modules``
    once the import is done, and if this version of pyroute2 needs more of
    them, the import is simply done again for real."""
    if "pyroute2" in sys.modules:
        return _import_messages()
    import types

    for entry in sys.path:
        path = os.path.join(entry or ".", "pyroute2")
        if os.path.isfile(os.path.join(path, "__init__.py")):
            break
    else:
        raise OSError(0, "pyroute2 is not installed (pip install pyroute2,"
                         " or the python3-pyroute2 package)")
    stub = types.ModuleType("pyroute2")
    stub.__path__ = [path]
    stub.__file__ = os.path.join(path, "__init__.py")
    before = set(sys.modules)
    stand_ins = {name: module for name, module in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    sys.modules["pyroute2"] = stub
    try:
        return _import_messages()
    except Exception:  # noqa: BLE001 - a pyroute2 that needs the real modules: import it so
        for name in set(sys.modules) - before:
            if name.startswith("pyroute2."):
                del sys.modules[name]
        for name in stand_ins:
            sys.modules.pop(name, None)
        return _import_messages()
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _import_messages():
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return ifinfmsg, ifaddrmsg, rtmsg


class _Quiet:
    """A logger that says nothing (the helper reports errors itself)."""

    def __getattr__(self, name: str):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    return None


def _stand_ins() -> dict:
    import types

    logging = types.ModuleType("logging")
    logging.getLogger = lambda *args, **kwargs: _Quiet()
    logging.debug = logging.info = logging.warning = logging.error = _nothing
    traceback = types.ModuleType("traceback")
    traceback.format_exc = lambda *args, **kwargs: ""
    traceback.format_stack = lambda *args, **kwargs: []
    multiprocessing = types.ModuleType("multiprocessing")
    multiprocessing.Pipe = multiprocessing.Queue = multiprocessing.Process = None
    platform = types.ModuleType("platform")
    uname = os.uname()
    platform.uname = lambda: types.SimpleNamespace(
        system=uname.sysname, node=uname.nodename, release=uname.release,
        version=uname.version, machine=uname.machine)
    platform.machine = lambda: uname.machine
    platform.architecture = lambda *args, **kwargs: (f"{struct.calcsize('P') * 8}bit", "ELF")
    return {"logging": logging, "traceback": traceback, "multiprocessing": multiprocessing,
            "platform": platform}


class Netlink:
    """A NETLINK_ROUTE socket in the network namespace of the thread that
    made it (it stays there whatever the thread joins later)."""

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        self.sock = _socket.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg, msg_type: int, flags: int = 0, what: str = "netlink") -> list:
        """Send a pyroute2 message, wait for the kernel's answer: the
        messages it returned (a dump's, or a get's), decoded as ``msg``'s
        class; an error as OSError naming ``what``."""
        self.seq += 1
        header = msg["header"]
        header["type"] = msg_type
        header["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        header["sequence_number"] = self.seq
        header["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        return self._answer(type(msg), what)

    def raw(self, data: bytes, what: str) -> None:
        self.sock.send(data)
        self._answer(None, what)

    def _answer(self, cls, what: str) -> list:
        found = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    break
                if seq == self.seq or not seq or cls is None:  # raw: a batch's every error
                    if msg_type == NLMSG_ERROR:
                        (error,) = struct.unpack_from("=i", data, offset + 16)
                        if error:
                            raise OSError(-error, f"{what}: {os.strerror(-error)}")
                        return found
                    if msg_type == NLMSG_DONE:
                        return found
                    if cls is not None:
                        found.append(_decode(cls, data[offset:offset + length]))
                offset += (length + 3) & ~3


def _decode(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    return msg


def link_index(name: str) -> int:
    """The index of the link ``name`` in this network namespace, or 0."""
    try:
        return _socket.if_nametoindex(name)
    except OSError:
        return 0


def delete_link(name: str) -> bool:
    """Delete link ``name`` (a veth takes its peer along); False if there
    was none.  One hand-built RTM_DELLINK: no pyroute2 needed."""
    encoded = name.encode() + b"\0"
    attr_len = 4 + len(encoded)
    attr = struct.pack("=HH", attr_len, IFLA_IFNAME) + encoded + b"\0" * (-attr_len % 4)
    body = struct.pack("=BxHiII", 0, 0, 0, 0, 0) + attr  # struct ifinfomsg, then IFLA_IFNAME
    with Netlink() as nl:
        nl.seq = 1
        header = struct.pack("=IHHII", 16 + len(body), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
        try:
            nl.raw(header + body, f"deleting link {name}")
        except OSError as err:
            if err.errno == 19:  # ENODEV: gone already (with its namespace)
                return False
            raise
    return True
