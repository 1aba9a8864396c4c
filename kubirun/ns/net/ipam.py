"""Addresses for a bridge's containers: one lease file per address, under
the state directory, taken under a file lock.

    ROOT/network:BRIDGE/lock       flock'd while a lease is taken or given back
    ROOT/network:BRIDGE/last       the last address handed out
    ROOT/network:BRIDGE/10.89.0.2  a lease: the container's network record (JSON)

The directory name is not a valid container id (``:``), so it can never
be mistaken for a container's.  Addresses are handed out in turn after the
last one (as CNI's host-local does), not lowest-free: an address given back
is not reused at once, while neighbours may still cache its old MAC.

A lease is the container's network record itself, so that whatever took it
can be undone without anything else: by ``delete`` (the record is also in
the container's state), or by the next allocation that meets a lease whose
container never got a state and whose runtime is dead (killed between the
lease and the container's first state write).

The gateway is the subnet's first address; it belongs to the bridge.
"""
from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False  # typing costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Callable

from kubirun.base import jsonio
from kubirun.base.errors import KubirunError

LOCK = "lock"
LAST = "last"


class Subnet:
    """An IPv4 subnet: ``10.89.0.0/16``; the gateway is its first host."""

    def __init__(self, cidr: str) -> None:
        address, sep, prefix = cidr.partition("/")
        try:
            self.prefix = int(prefix) if sep else -1
            value = ip_to_int(address)
        except ValueError:
            raise KubirunError(f"--subnet {cidr!r}: not an IPv4 subnet (e.g. 10.89.0.0/16)") from None
        if not 8 <= self.prefix <= 30:
            raise KubirunError(f"--subnet {cidr!r}: the prefix must be 8 to 30")
        mask = (0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF
        self.network = value & mask
        self.broadcast = self.network | (~mask & 0xFFFFFFFF)
        self.gateway = self.network + 1

    def __str__(self) -> str:
        return f"{int_to_ip(self.network)}/{self.prefix}"

    def hosts(self) -> range:
        """Addresses containers may get: all but network, gateway, broadcast."""
        return range(self.gateway + 1, self.broadcast)


def ip_to_int(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(text)
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d


def int_to_ip(value: int) -> str:
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def pool_dir(state_root: str, bridge: str) -> str:
    return os.path.join(state_root, f"network:{bridge}")


class Pool:
    """The leases of one bridge."""

    def __init__(self, directory: str, subnet: Subnet | None,
                 has_state: Callable[[str, str], bool] | None = None) -> None:
        self.dir = directory
        self.subnet = subnet
        # has_state(root, owner): whether container ``owner`` of the state
        # root ``root`` has a state, that is, can still give its lease back
        # (the caller knows the state directory's layout; this package not).
        self.has_state = has_state

    def _lock(self) -> int:
        os.makedirs(self.dir, 0o700, exist_ok=True)
        fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def allocate(self, make_record, reclaim) -> dict:
        """Take the next free address; ``make_record(address)`` is the
        lease's content (returned); ``reclaim(record)`` undoes what a stale
        lease's holder made before its address is taken again."""
        lock = self._lock()
        try:
            hosts = self.subnet.hosts()
            try:
                with open(os.path.join(self.dir, LAST)) as f:
                    last = ip_to_int(f.read().strip())
            except (OSError, ValueError):
                last = self.subnet.gateway
            start = (last + 1 - hosts.start) % len(hosts) if last in hosts else 0
            for i in range(len(hosts)):
                address = int_to_ip(hosts[(start + i) % len(hosts)])
                path = os.path.join(self.dir, address)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    stale = _stale_record(path, self.has_state)
                    if stale is None:
                        continue
                    reclaim(stale)
                    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
                record = make_record(address)
                try:
                    os.write(fd, jsonio.dumps(record).encode())
                finally:
                    os.close(fd)
                _write(os.path.join(self.dir, LAST), address)
                return record
            raise KubirunError(f"no free address left in {self.subnet} (leases in {self.dir})")
        finally:
            os.close(lock)

    def release(self, address: str, owner: str) -> None:
        """Give the address back, if ``owner`` still holds it."""
        path = os.path.join(self.dir, address)
        if not os.path.exists(path):
            return
        lock = self._lock()
        try:
            try:
                record = jsonio.load_file(path)
            except (OSError, ValueError):
                return
            if isinstance(record, dict) and record.get("owner") == owner:
                os.unlink(path)
        finally:
            os.close(lock)

    def reclaim_stale(self, undo, owner: str | None = None) -> list[dict]:
        """Give back every lease (of ``owner`` only, if given) whose holder
        can no longer do it (``_stale_record``), after ``undo(record)``
        has taken away what it made; the records given back."""
        if not os.path.isdir(self.dir):
            return []
        reclaimed = []
        lock = self._lock()
        try:
            for address in self.leases():
                path = os.path.join(self.dir, address)
                record = _stale_record(path, self.has_state)
                if record is None or (owner is not None and record.get("owner") != owner):
                    continue
                if record:
                    undo(record)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                reclaimed.append(dict(record, address=address))
        finally:
            os.close(lock)
        return reclaimed

    def leases(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.dir) if n[:1].isdigit())
        except FileNotFoundError:
            return []


def _write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _stale_record(path: str, has_state: Callable[[str, str], bool] | None) -> dict | None:
    """The lease's record if nobody can reclaim it any more: its container
    has no state (it never got one, or it was deleted without giving the
    lease back) and the runtime that took it is gone."""
    from kubirun.base.proc import process_start_time

    try:
        record = jsonio.load_file(path)
    except (OSError, ValueError):
        return {}  # unreadable (a runtime killed mid-write): nothing to undo but the lease
    if not isinstance(record, dict):
        return {}
    owner, root = record.get("owner"), record.get("root")
    if owner and root and (has_state is None or has_state(root, owner)):
        return None
    creator = record.get("creator") or [0, 0]
    if creator[0] and process_start_time(creator[0]) == creator[1]:
        return None
    return record
