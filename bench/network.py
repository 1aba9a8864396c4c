"""What bridge mode adds to a start: ``kubirun run --network bridge`` next
to ``--network none``, on the same unpacked busybox root.

    none     ``kubirun run --network none ROOTFS -- /bin/true``
    bridge   ``kubirun run --network bridge ROOTFS -- /bin/true``: lease,
             helper, veth with eth0 inside, address, route, /etc files
    bridge -p (with ``--publish``) the same and ``-p 18080:80``: an nft
             table, and the loopback proxy's listening socket

The goal: bridge's median <= none's + 30 ms.

Everything happens in a throwaway network namespace that the benchmark
makes (a ``unshare --net sleep`` holder; the benchmark joins it with
setns(2) so that no wrapper is timed): the bridge, its veths and nft
tables live and die there, never in the host's namespace.  State and
store are in a temporary directory.  Runs alternate as in
start_latency.py, whose helpers this script imports.  At the end the
holder is killed (by PID), which destroys the namespace with everything
in it, and the temporary directory is removed.

Usage: python3 bench/network.py [--runs N] [--warmup K] [--json] [--publish]
(as root; stdlib only).
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from start_latency import (
    BenchError,
    Candidate,
    alternate,
    argument_parser,
    ensure_image,
    format_table,
    kubirun_command,
    parse_args,
    remove_tmp,
    summarise,
    unpack_rootfs,
)

GOAL_MS = 30.0
CLONE_NEWNET = 0x40000000


class ThrowawayNetns:
    """A network namespace held by a sleeping process; ``enter`` moves this
    process into it (its children are born there), ``close`` goes back and
    kills the holder."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        path = f"/proc/{self.holder.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.readlink(path) == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                self.close()
                raise BenchError("unshare --net did not make a network namespace")
            time.sleep(0.005)
        self.path = path
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise BenchError(f"setns: {os.strerror(err)}")

    def enter(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._setns(fd)
        finally:
            os.close(fd)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    def close(self) -> None:
        if getattr(self, "_home", None) is not None:
            self._setns(self._home)
            os.close(self._home)
            self._home = None
        self.holder.kill()
        self.holder.wait()


def build_candidates(tmp: Path, rootfs: Path, publish: bool) -> list[Candidate]:
    kubirun = kubirun_command()
    env = {**os.environ, "KUBIRUN_STORE": str(tmp / "store"), "KUBIRUN_ROOT": str(tmp / "state")}

    def run(*options: str):
        return lambda n: [kubirun, "run", *options, str(rootfs), "--", "/bin/true"]

    candidates = [Candidate("none", run("--network", "none"), env=env),
                  Candidate("bridge", run("--network", "bridge"), env=env)]
    if publish:
        candidates.append(Candidate("bridge -p", run("--network", "bridge", "-p", "18080:80"),
                                    env=env))
    return candidates


def benchmark(args) -> dict:
    image = ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-net-"))
    netns = None
    try:
        rootfs = unpack_rootfs(image, tmp)
        netns = ThrowawayNetns()
        netns.enter()
        candidates = build_candidates(tmp, rootfs, args.publish)
        counter = [0]
        alternate(candidates, args.warmup, counter, record=False)
        alternate(candidates, args.runs, counter, record=True)
    finally:
        if netns is not None:
            netns.close()
        remove_tmp(tmp)
    summary = summarise(candidates, refs=("none",))
    added = {name: row["median_ms"] - summary["none"]["median_ms"]
             for name, row in summary.items() if name != "none"}
    return {"runs": args.runs, "warmup": args.warmup, "results": summary,
            "added_ms": added, "goal_ms": GOAL_MS}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, "mode")
    parser.add_argument("--publish", action="store_true",
                        help="also time bridge mode with -p 18080:80 (an nft table, a proxy)")
    args = parse_args(argv, parser)
    if os.geteuid() != 0:
        print("network: run as root (namespaces, bridges)", file=sys.stderr)
        return 1
    try:
        report = benchmark(args)
    except BenchError as e:
        print(f"network: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report["results"], args.runs, args.warmup, refs=("none",),
                           title="bridge mode vs none"))
        for name, ms in report["added_ms"].items():
            print(f"{name}: +{ms:.1f} ms over none (goal <= {GOAL_MS:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
