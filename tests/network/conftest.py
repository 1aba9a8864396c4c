"""Every network test runs inside a throwaway network namespace.

``netns`` makes one, held by a sleeping ``unshare --net`` process (no
``ip netns add``: that would leave a bind mount of /run/netns on the
host), and runs kubirun in it with ``nsenter --net``: the bridge, the
veths, the nft tables all live there, and die with it when the holder is
killed (by its PID) at the end of the test.  Traffic only flows between
that namespace and the containers' own.  Sockets the test itself needs
are made inside it (``netns.socket``): a socket stays in the namespace it
was made in.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kubirun import _native
from tests.conftest import KUBIRUN_SCRIPT

CLONE_NEWNET = 0x40000000


class Netns:
    def __init__(self, state_root: Path) -> None:
        self.state_root = state_root
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.path = f"/proc/{self.holder.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.readlink(self.path) == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare --net made no namespace"
            time.sleep(0.005)
        self.id = os.readlink(self.path)
        self.sh("ip link set lo up")

    # --- running things inside ---------------------------------------------

    def prefix(self) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--"]

    def kubirun(self, *args: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run([*self.prefix(), str(KUBIRUN_SCRIPT), *args], timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False, **kwargs)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """kubirun in the background; nsenter execs it, so the Popen's PID
        is kubirun's own."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        return subprocess.Popen([*self.prefix(), str(KUBIRUN_SCRIPT), *args],
                                stdin=subprocess.DEVNULL, **kwargs)

    def sh(self, command: str, check: bool = True) -> str:
        result = subprocess.run([*self.prefix(), "sh", "-c", command], capture_output=True,
                                text=True, timeout=30, check=False)
        if check:
            assert result.returncode == 0, (command, result.stderr)
        return result.stdout

    @contextlib.contextmanager
    def inside(self):
        """This (single-threaded) process in the namespace, for a moment."""
        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _native.setns(target, CLONE_NEWNET)
            try:
                yield
            finally:
                _native.setns(home, CLONE_NEWNET)
        finally:
            os.close(target)
            os.close(home)

    def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with self.inside():
            return socket.socket(socket.AF_INET, kind)

    def read_file(self, path: str) -> str:
        with self.inside(), open(path) as f:  # /proc/sys/net is the reader's namespace
            return f.read()

    # --- what is there -------------------------------------------------------

    def links(self) -> list[str]:
        out = self.sh("ip -o link show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def veths(self) -> list[str]:
        return [name for name in self.links() if name.startswith("kv")]

    def tables(self) -> list[str]:
        return [line.split()[-1] for line in self.sh("nft list tables").splitlines() if line]

    def leases(self, bridge: str = "kubi0") -> list[str]:
        pool = self.state_root / f"network:{bridge}"
        return sorted(n for n in os.listdir(pool) if n[0].isdigit()) if pool.exists() else []

    def wait_no_veths(self, timeout: float = 10) -> list[str]:
        """The kernel removes a dead container's veth pair with its
        namespace, asynchronously: give it a moment."""
        deadline = time.monotonic() + timeout
        while self.veths() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.veths()

    def state(self, container_id: str) -> dict:
        return json.loads((self.state_root / container_id / "state.json").read_text())

    def wait_running(self, container_id: str, timeout: float = 20) -> dict:
        """Once ``kubirun state`` says running (its network is attached
        before the start): the state file's content."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.kubirun("state", container_id)
            if result.returncode == 0 and json.loads(result.stdout)["status"] == "running":
                return self.state(container_id)
            time.sleep(0.02)
        raise AssertionError(f"container {container_id} never ran")

    @contextlib.contextmanager
    def background(self, name: str, *args: str):
        """``kubirun run --name NAME ARGS`` in the background; at the end it
        must have exited, or it is killed and deleted (the test failed)."""
        run = self.popen("run", "--name", name, *args)
        try:
            yield run
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
                self.kubirun("delete", "--force", name)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def connect(netns: Netns, address: str, port: int, send: bytes = b"", timeout: float = 10) -> bytes:
    """Connect from the test namespace, send (then half-close), read to
    EOF; again while nobody listens yet (refused, or an empty answer: the
    loopback proxy accepts, then finds nobody behind)."""
    deadline = time.monotonic() + timeout
    while True:
        data = b""
        with netns.socket() as sock:
            sock.settimeout(5)
            try:
                sock.connect((address, port))
                if send:
                    sock.sendall(send)
                    sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                if time.monotonic() > deadline:
                    raise
        if data or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


@pytest.fixture
def netns(private_store, monkeypatch):
    """A throwaway network namespace; at the end it must hold no veth, no
    lease and no kubirun table, and it is destroyed."""
    monkeypatch.delenv("KUBIRUN_NETWORK", raising=False)  # the tests choose, or test the default
    state_root = Path(os.environ["KUBIRUN_ROOT"])
    ns = Netns(state_root)
    try:
        yield ns
        assert ns.wait_no_veths() == [], "veths left behind"
        assert ns.leases() == [], "leases left behind"
        assert [t for t in ns.tables() if t.startswith("kubirun_")] == [], "port rules left behind"
    finally:
        ns.close()
        # The pools (lock, last) stay with the state root by design; the
        # state root itself must be empty for private_store's check.
        if state_root.exists():
            for name in os.listdir(state_root):
                if name.startswith("network:"):
                    shutil.rmtree(state_root / name)


@pytest.fixture(scope="module")
def rootfs(busybox_dir, tmp_path_factory) -> Path:
    """A copy of the busybox root of our own: bridge mode creates
    /etc/hosts and /etc/resolv.conf in it as mount points."""
    root = tmp_path_factory.mktemp("netroot") / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    return root
