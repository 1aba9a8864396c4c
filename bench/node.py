"""The node supervisor's cost: N pods of one busybox container each (an
``httpd`` on the pod's loopback), every container with a 1 s ``httpGet``
liveness probe and (unless --http-only) a 1 s ``exec`` readiness probe.

    apply -> all Ready   wall time from the first ``apply`` to every pod Ready
    supervisor CPU       this process's user+system time over --seconds (it
                         is the supervisor: ``kubirun.node.Node`` in its event
                         loop), as % of one core, and per probe
    fork server CPU      what exec probes cost there (it forks each exec; its
                         reaped children's CPU included)
    RSS                  the supervisor's VmRSS at the end, and VmHWM; the fork
                         server's; all kubirun processes' (supervisor, fork
                         server, socket helpers if any) together
    exec vs runc exec    wall and CPU per ``true`` exec'd: kubirun.api's
                         ``Container.exec`` (warm fork server) against
                         ``runc exec`` into a runc container of the same root

Network "none": the probes' sockets are made in each pod's namespace by the
fork server (``Container.socket``); "helpers" counts the per-pod socket
helpers older versions ran there (their RSS reported apart).
Network "bridge" (run it under ``unshare --net``: the bridge is made in the
current namespace): probes go to the pods' addresses, no helpers.

Usage: python3 bench/node.py [--pods N] [--seconds S] [--http-only]
[--network none|bridge] [--json] (as root).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
IMAGE = os.path.join(REPO, "rootfs", "busybox.tar.gz")
TICK = os.sysconf("SC_CLK_TCK")
CGROUP_PARENT = f"/kubirun-bench-node-{os.getpid()}"


def _cpu(pid: int | str = "self", children: bool = False) -> float:
    """utime + stime (+ the reaped children's: what a fork server's forks
    cost is there) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def _status_kib(key: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _helpers() -> list[int]:
    """The pods' socket helpers (our children running netns' helper)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and b"send_fds" in cmdline:
            found.append(int(pid))
    return found


def _pod(i: int, http_only: bool) -> dict:
    container = {
        "name": "web", "image": IMAGE,
        "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz"
                    " && exec httpd -f -p 8080 -h /www"],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    }
    if not http_only:
        container["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"bench-{i}"},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1}}


async def _scenario(args, root: str) -> dict:
    from kubirun.node.supervisor import Node

    node = Node(os.path.join(root, "node"), store=os.path.join(root, "store"),
                cgroup_parent=CGROUP_PARENT, network=args.network)
    result: dict = {"pods": args.pods, "seconds": args.seconds, "http_only": args.http_only,
                    "network": args.network}
    try:
        began = time.monotonic()
        for i in range(args.pods):
            await node.apply(_pod(i, args.http_only))
        result["apply_s"] = round(time.monotonic() - began, 2)
        while not all(p["status"]["containerStatuses"][0]["ready"] for p in node.list()):
            if time.monotonic() - began > 600:
                raise SystemExit("not all Ready after 600 s")
            await asyncio.sleep(0.1)
        result["all_ready_s"] = round(time.monotonic() - began, 2)
        await asyncio.sleep(3)  # let the start-up settle
        server = node.runtime._server.pid  # the fork server (bench only: not the API)
        cpu0, server0, t0 = _cpu(), _cpu(server, True), time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        cpu = _cpu() - cpu0
        server_cpu = _cpu(server, True) - server0
        probes = args.pods * elapsed * (1 if args.http_only else 2)
        result.update(
            supervisor_cpu_pct=round(100 * cpu / elapsed, 2),
            supervisor_cpu_ms_per_probe=round(1000 * cpu / probes, 3),
            fork_server_cpu_pct=round(100 * server_cpu / elapsed, 2),
            rss_mib=round(_status_kib("VmRSS") / 1024, 1),
            hwm_mib=round(_status_kib("VmHWM") / 1024, 1),
            helpers=len(_helpers()),
            helpers_rss_mib=round(sum(_status_kib("VmRSS", p) for p in _helpers()) / 1024, 1),
            fork_server_rss_mib=round(_status_kib("VmRSS", server) / 1024, 1),
            kubirun_rss_mib=round(sum(_status_kib("VmRSS", p) for p in
                                      ["self", server, *_helpers()]) / 1024, 1),
            restarts=sum(p["status"]["containerStatuses"][0]["restartCount"]
                         for p in node.list()),
            unhealthy=sum(1 for name in node.pods for e in node.events(name)
                          if e["reason"] == "Unhealthy"))
        result.update(await _exec_costs(node, args.execs))
    finally:
        await node.close()
    return result


async def _exec_costs(node, count: int) -> dict:
    """``true`` exec'd through kubirun.api (warm fork server) vs runc exec."""
    worker = next(iter(node.pods.values()))
    container = worker.instances["web"].container
    server = node.runtime._server.pid
    wall0, cpu0, server0 = time.monotonic(), _cpu(), _cpu(server, True)
    for _ in range(count):
        process = container.exec(["true"])
        await process.wait_async()
    ours = {"kubirun_exec_ms": round(1000 * (time.monotonic() - wall0) / count, 2),
            "kubirun_exec_cpu_ms": round(1000 * (_cpu() - cpu0 + _cpu(server, True) - server0)
                                         / count, 2)}
    runc = shutil.which("runc")
    if runc:
        ours.update(_runc_exec(runc, count))
    return ours


def _runc_exec(runc: str, count: int) -> dict:
    from kubirun.spec import default_config

    directory = tempfile.mkdtemp(prefix="kubirun-bench-runc-")
    state = os.path.join(directory, "state")
    try:
        rootfs = os.path.join(directory, "rootfs")
        os.mkdir(rootfs)
        subprocess.run(["tar", "-xzf", IMAGE, "-C", rootfs], check=True)
        config = default_config()
        config["root"] = {"path": rootfs, "readonly": True}
        config["process"].update(terminal=False, args=["sleep", "1000"])
        config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/runc"
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f)
        subprocess.run([runc, "--root", state, "run", "-d", "--bundle", directory, "b"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        before = os.times()
        wall0 = time.monotonic()
        for _ in range(count):
            subprocess.run([runc, "--root", state, "exec", "b", "true"], check=True)
        wall = time.monotonic() - wall0
        after = os.times()
        cpu = (after.children_user - before.children_user) + \
            (after.children_system - before.children_system)
        return {"runc_exec_ms": round(1000 * wall / count, 2),
                "runc_exec_cpu_ms": round(1000 * cpu / count, 2)}
    finally:
        subprocess.run([runc, "--root", state, "delete", "-f", "b"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(directory, ignore_errors=True)


def _remove_cgroups() -> None:
    """Our cgroup parent, in every hierarchy (the containers' are gone)."""
    tops = [""] if os.path.exists("/sys/fs/cgroup/cgroup.controllers") \
        else os.listdir("/sys/fs/cgroup")
    for top in tops:
        path = os.path.join("/sys/fs/cgroup", top, CGROUP_PARENT.strip("/"))
        for sub, _, _ in sorted(os.walk(path), reverse=True):
            try:
                os.rmdir(sub)
            except OSError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--execs", type=int, default=50)
    parser.add_argument("--http-only", action="store_true")
    parser.add_argument("--network", default="none", choices=("none", "bridge"),
                        help="bridge: only in a network namespace of its own, e.g. under"
                        " `unshare --net`, never the host's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="kubirun-bench-node-")
    try:
        result = asyncio.run(_scenario(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _remove_cgroups()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:30} {value}")


if __name__ == "__main__":
    main()
