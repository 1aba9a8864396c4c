"""The network helper: a child the runtime forks first thing in bridge
mode, so that what networking costs overlaps the rest of the start.

    runtime                               helper
    lease an address, fork ------------>  import pyroute2's messages (~20 ms)
    unpack the image, make the config     the bridge (made if missing)
    create: the init waits, in its        --nat; the port rules (nft)
      new network namespace               ...waits for the init's PID
    send the init's PID --------------->  veth: host end on the bridge,
                                            eth0 born in /proc/PID/ns/net
                                          join that namespace: address,
    <------------------------------------   up, default route; "ok", exit
    start

It dies with the runtime (PDEATHSIG), never touches the runtime's state,
and only makes what the lease's record names, so the runtime's teardown
(or ``delete --force``) undoes it whatever point it reached.
"""
from __future__ import annotations

import os

from kubirun import _native
from kubirun.base.errors import KubirunError, describe

PR_SET_PDEATHSIG = 1
SIGKILL = 9


class Helper:
    def __init__(self, job: dict) -> None:
        pid_r, pid_w = os.pipe()  # runtime -> helper: the init's PID
        out_r, out_w = os.pipe()  # helper -> runtime: "ok" or the error
        parent = os.getpid()
        pid = _native.fork()
        if pid == 0:
            code = 1
            try:
                os.close(pid_w)
                os.close(out_r)
                _native.prctl(PR_SET_PDEATHSIG, SIGKILL)
                if os.getppid() == parent:
                    _reset_signals()
                    code = main(job, pid_r, out_w)
            finally:
                os._exit(code)
        os.close(pid_r)
        os.close(out_w)
        self.pid: int | None = pid
        self._to: int | None = pid_w
        self._from: int | None = out_r

    def attach(self, container_pid: int) -> None:
        """Hand over the init's PID; wait until the helper is done."""
        try:
            os.write(self._to, f"{container_pid}\n".encode())
        except BrokenPipeError:
            pass  # it failed earlier: its answer says why
        answer = b""
        while not answer.endswith(b"\n"):  # not EOF: the helper's exit takes ~1 ms more
            chunk = os.read(self._from, 4096)
            if not chunk:
                break
            answer += chunk
        if answer != b"ok\n":
            self.close()
            raise KubirunError(f"network: {answer.decode(errors='replace').strip() or 'the helper died'}")

    def close(self) -> None:
        """Stop the helper if it still runs; reap it."""
        for name in ("_to", "_from"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        if self.pid is not None:
            try:
                os.kill(self.pid, SIGKILL)  # our child, not reaped yet: never a recycled PID
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None


def _reset_signals() -> None:
    import _signal as signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _read_pid(fd: int) -> int:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            return 0  # the runtime gave up
        data += chunk
    return int(data)


def main(job: dict, pid_fd: int, out: int) -> int:
    """The helper's work (see the module's docstring); its exit status."""
    try:
        from kubirun.ns.net import bridge, ports, rtnl, veth
        from kubirun.ns.net.ipam import Subnet

        rules = ports.rules(job)
        nft = ports.Nft(*rules) if rules else None  # runs while pyroute2 is imported
        messages = rtnl.load_messages()
        subnet = Subnet(job["subnet"])
        with rtnl.Netlink() as nl:
            index, mtu = bridge.ensure(nl, messages, job["bridge"], subnet)
            if nft is not None:
                nft.wait()
            if job.get("nat"):
                ports.enable_forwarding()
            pid = _read_pid(pid_fd)
            if not pid:
                return 0
            netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            veth.create(nl, messages[0], job["host_if"], index, mtu, netns)
        veth.configure_inside(messages, netns, job["address"], subnet)
    except BaseException as err:  # noqa: BLE001 - said to the runtime, which raises it
        message = (describe(err) or type(err).__name__).replace("\n", " ")
        os.write(out, f"{message}\n".encode(errors="replace"))
        return 1
    os.write(out, b"ok\n")
    return 0
