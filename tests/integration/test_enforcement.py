"""Limits a container's cgroup ENFORCES, on this host's real cgroups (v1
controllers on a hybrid host), seen from outside through the runtime's
command line only: the container's process is OOM-killed, cannot fork,
is throttled, freezes; `events` and `events --stats` report it.

One behaviour per test, against kubirun and runc (``oci``), on a busybox
bundle (``bundle``).  The ``oci`` fixture deletes every container and
checks that no state, process or cgroup is left.  The same behaviours on
a pure cgroup v2 host are in tests/cgroupv2/test_enforcement_v2.py.

The containers wait for a file, /tmp/go (their /tmp is a tmpfs of their
own, reached from here through /proc/PID/root), before they start what is
measured: so the measuring side is ready first.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from kubirun.cgroups import CgroupError, detect_layout
from tests.integration.oci_helpers import cgroup_dirs, wait_for


def _layout() -> str:
    try:
        return detect_layout().kind
    except CgroupError:
        return "none"


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers with cgroups need root"),
    pytest.mark.skipif(_layout() not in ("v1", "hybrid"), reason="for v1 controllers; on pure v2: "
                       "tests/cgroupv2/test_enforcement_v2.py"),
]

MiB = 1 << 20
WAIT_GO = "while [ ! -e /tmp/go ]; do sleep 0.01; done; "


def resources(**sections):
    """An ``edit`` for ``bundle``: set these linux.resources sections."""
    def edit(config):
        config["linux"].setdefault("resources", {}).update(sections)
    return edit


def go(oci, cid: str) -> None:
    """Let the container past its WAIT_GO."""
    pid = oci.state(cid)["pid"]
    with open(f"/proc/{pid}/root/tmp/go", "w"):
        pass


def container_file(oci, cid: str, path: str, pid: int | None = None) -> str:
    """A file of the container's, read through /proc/PID/root ("" if absent)."""
    pid = pid or oci.state(cid)["pid"]
    try:
        with open(f"/proc/{pid}/root{path}") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def cgroup_file(oci, b, controller: str, name: str):
    """The container's v1 ``controller`` file ``name`` (this host's layout)."""
    for d in cgroup_dirs(oci.bundle_cgroups[b]):
        if d.parts[4] == controller and (d / name).exists():
            return d / name
    pytest.skip(f"no v1 {controller} hierarchy with {name} here")


def stats(oci, cid: str) -> dict:
    result = oci.cmd("events", "--stats", cid)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "stats" and event["id"] == cid, event
    return event["data"]


class Events:
    """`RUNTIME events --interval 1s ID` in the background: its JSON lines."""

    def __init__(self, oci, cid: str) -> None:
        self.proc = subprocess.Popen(oci.argv("events", "--interval", "1s", cid), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.seen: list[dict] = []

    def next(self) -> dict | None:
        line = self.proc.stdout.readline()
        if not line:
            return None
        self.seen.append(json.loads(line))
        return self.seen[-1]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_memory_limit_oom_kills_the_init(oci, bundle):
    """16 MiB (swap included): `tail /dev/zero`, whose one endless line
    grows without bound, is the container's init; the OOM killer kills
    it and `run` exits 137."""
    cid = oci.new_id()
    b = bundle(["tail", "/dev/zero"], edit=resources(memory={"limit": 16 * MiB, "swap": 16 * MiB}))
    result = oci.cmd("run", "--bundle", b, cid)
    assert result.returncode == 137, (result.stdout, result.stderr)


def test_events_report_the_oom_kill_that_ends_the_container(oci, bundle, tmp_path, request):
    """An `events` stream on a container that `run` runs (and deletes once
    its OOM-killed init is gone) prints {"type": "oom"} before it ends."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "exec tail /dev/zero"],
               edit=resources(memory={"limit": 16 * MiB, "swap": 16 * MiB}))
    with open(tmp_path / "run.out", "w") as out:
        run = subprocess.Popen(oci.argv("run", "--bundle", b, cid), stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    events = None
    try:
        wait_for(lambda: oci.cmd("state", cid).returncode == 0 and oci.status(cid) == "running",
                 f"{cid} to run")
        events = Events(oci, cid)
        assert events.next() is not None, events.proc.stderr.read()  # listening: a first stats line
        go(oci, cid)
        assert run.wait(timeout=30) == 137, (tmp_path / "run.out").read_text()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and events.next() is not None:
            if events.seen[-1]["type"] == "oom":
                break
        types = [e["type"] for e in events.seen]
        assert "oom" in types, (types, events.proc.stderr.read() if events.proc.poll() is not None else "")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if events:
            events.close()


def test_pids_limit_stops_forks(oci, bundle):
    """pids.max 5: the shell (1) and four background sleeps fit; the fifth
    fork fails with EAGAIN (and ash gives up)."""
    cid = oci.new_id()
    script = "i=0; while [ $i -lt 10 ]; do sleep 100 & i=$((i+1)); echo started $i; done"
    b = bundle(["sh", "-c", script], edit=resources(pids={"limit": 5}))
    result = oci.cmd("run", "--bundle", b, cid)
    assert result.stdout.splitlines() == [f"started {i}" for i in range(1, 5)], (result.stdout, result.stderr)
    assert result.returncode != 0
    assert "can't fork" in result.stderr and "Resource temporarily unavailable" in result.stderr, result.stderr


def test_cpu_quota_throttles_a_busy_loop(oci, bundle):
    """cpu.cfs_quota_us 10000 per 100000: a busy loop gets about 10% of a
    CPU (at most 15% measured over wall time), and the throttling counters
    of `events --stats` grow."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "while :; do :; done"],
               edit=resources(cpu={"quota": 10000, "period": 100000}))
    oci.start_created(cid, b)
    assert cgroup_file(oci, b, "cpu", "cpu.cfs_quota_us").read_text().strip() == "10000"
    go(oci, cid)
    time.sleep(0.2)  # past the shell's last sleep
    before, t0 = stats(oci, cid)["cpu"], time.monotonic()
    time.sleep(1.0)
    after, t1 = stats(oci, cid)["cpu"], time.monotonic()
    share = (after["usage"]["total"] - before["usage"]["total"]) / ((t1 - t0) * 1e9)
    assert 0 < share <= 0.15, f"the busy loop got {share:.1%} of a CPU"
    assert after["throttling"]["throttledPeriods"] > before["throttling"]["throttledPeriods"] > 0, after
    assert after["throttling"]["throttledTime"] > 0, after


def test_pause_freezes_and_resume_thaws(oci, bundle):
    """`pause`: the state says paused and a counter the container appends
    to stops; `resume`: running, and the counter moves again."""
    cid = oci.new_id()
    script = "i=0; while :; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.01; done"
    pid = oci.start_created(cid, bundle(["sh", "-c", script]))["pid"]

    def count() -> int:
        return len(container_file(oci, cid, "/tmp/count", pid))

    wait_for(lambda: count() > 0, "the counter to start")
    result = oci.cmd("pause", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "paused"
    frozen = count()
    time.sleep(0.5)
    assert count() == frozen, "the container ran while paused"
    assert oci.status(cid) == "paused"
    result = oci.cmd("resume", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "running"
    wait_for(lambda: count() > frozen, "the counter to move again", timeout=5)


def test_update_memory_lowers_an_enforced_limit(oci, bundle):
    """Started with 256 MiB, updated live to 16 MiB (swap included): the
    limit files read back 16 MiB, and a later `tail /dev/zero` is
    OOM-killed (its shell, which survives, records 137) without the
    cgroup's usage ever passing 16 MiB."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "tail /dev/zero; echo $? > /tmp/status; sleep 100"],
               edit=resources(memory={"limit": 256 * MiB, "swap": 256 * MiB}))
    pid = oci.start_created(cid, b)["pid"]
    result = oci.cmd("update", "--memory", str(16 * MiB), "--memory-swap", str(16 * MiB), cid)
    assert result.returncode == 0, result.stderr
    assert cgroup_file(oci, b, "memory", "memory.limit_in_bytes").read_text().strip() == str(16 * MiB)
    memsw = cgroup_file(oci, b, "memory", "memory.memsw.limit_in_bytes")
    assert memsw.read_text().strip() == str(16 * MiB)
    go(oci, cid)
    status = wait_for(lambda: container_file(oci, cid, "/tmp/status", pid).strip(), "tail to die", timeout=20)
    assert status == "137"
    assert "oom_kill 1" in cgroup_file(oci, b, "memory", "memory.oom_control").read_text()
    assert int(cgroup_file(oci, b, "memory", "memory.max_usage_in_bytes").read_text()) <= 16 * MiB


def test_events_stats_report_usage(oci, bundle):
    """`events --stats` of a container that ran a little: memory usage,
    processes and CPU time all above zero."""
    cid = oci.new_id()
    script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 100 & sleep 100 & wait"
    b = bundle(["sh", "-c", script])
    oci.start_created(cid, b)
    procs = cgroup_file(oci, b, "pids", "cgroup.procs")
    wait_for(lambda: len(procs.read_text().split()) == 3, "the shell and its two sleeps")
    data = stats(oci, cid)
    assert data["memory"]["usage"]["usage"] > 0, data["memory"]
    assert data["pids"]["current"] == 3, data["pids"]
    assert data["cpu"]["usage"]["total"] > 0, data["cpu"]
