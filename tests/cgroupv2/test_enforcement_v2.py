"""Limits a container's cgroup ENFORCES on a pure cgroup v2 host: the
behaviours of tests/integration/test_enforcement.py again, through the
runtime's command line on a busybox bundle, against kubirun and crun
(runc's peer on v2; it has no `events`, so what kubirun reports through
`events` is read from crun's cgroup files instead).

Meant for the v2 VM (see /work/shared/v2vm/README.md), where the CPU is
emulated and some 20 times slower:

    ../shared/v2vm/run.sh -- /work/main/.venv/bin/python -m pytest -m cgroupv2 tests/cgroupv2

Skipped on any host that is not pure v2.

The bundles carry no linux.resources.devices rules (the default of `runc
spec` denies every device): these tests are about the limits alone, and
device rules on v2 (an eBPF program) are a matter of their own.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from kubirun.cgroups import CgroupError, detect_layout
from tests import runtimes
from tests.conftest import TEST_CGROUP_PARENT
from tests.integration.oci_helpers import (  # noqa: F401
    DEFAULT_ENV,
    TMPFS_TMP,
    Runtime,
    _all_reaped,
    base_config,
    wait_for,
)


def _pure_v2() -> bool:
    try:
        return detect_layout().kind == "v2"
    except CgroupError:
        return False


PURE_V2 = _pure_v2()
MOUNT = Path("/sys/fs/cgroup")
MiB = 1 << 20
SLOW = 10  # timeouts: the VM's CPU is emulated (only failures wait this long)
WAIT_GO = "while [ ! -e /tmp/go ]; do sleep 0.01; done; "

pytestmark = [
    pytest.mark.cgroupv2,
    pytest.mark.skipif(not PURE_V2, reason="needs a pure cgroup v2 host (run it in ../shared/v2vm)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="containers with cgroups need root"),
]


# --- fixtures: the runtimes, bundles, and cgroups checked gone ---------------

def _cgroup_dir(path: str) -> Path:
    return MOUNT / path.strip("/")


def _remove_cgroup(path: str) -> None:
    """Teardown only: kill what is left in a container's cgroup (ours) and
    remove it."""
    d = _cgroup_dir(path)
    if not d.is_dir():
        return
    try:
        (d / "cgroup.kill").write_text("1")
    except OSError:
        pass
    deadline = time.monotonic() + 5 * SLOW
    while d.exists():
        try:
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                sub.rmdir()
            d.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def _test_parent_removed():
    """The session's cgroup parent, which tests/conftest.py removes only
    in v1 hierarchies (on pure v2 /sys/fs/cgroup is the hierarchy)."""
    yield
    try:
        _cgroup_dir(TEST_CGROUP_PARENT).rmdir()
    except FileNotFoundError:
        pass


@pytest.fixture(params=runtimes.params("crun"))
def oci(request, tmp_path):
    request.getfixturevalue("_all_reaped")  # dead inits reaped before the session's check
    runtime = Runtime.for_test(request.param, tmp_path)
    yield runtime
    problems = runtime.cleanup()
    for path in runtime.cgroups:
        if _cgroup_dir(path).exists():
            problems.append(f"cgroup {path} left behind")
            _remove_cgroup(path)
    assert not problems, f"{runtime.name} left things behind: {problems}"


@pytest.fixture
def bundle(tmp_path, busybox_dir, oci):
    """``bundle(args, resources)``: a bundle running ``args`` in the shared
    busybox root (read-only, a tmpfs on /tmp), with these
    linux.resources, in a cgroup under the session's test parent."""
    def make(args, resources: dict | None = None) -> Path:
        directory = tmp_path / f"bundle-{uuid.uuid4().hex[:6]}"
        directory.mkdir()
        config = base_config()
        config["root"] = {"path": str(busybox_dir), "readonly": True}
        config["process"].update(terminal=False, args=list(args), env=list(DEFAULT_ENV))
        config["hostname"] = "oci-test"
        config["mounts"].append(dict(TMPFS_TMP))
        config["linux"]["resources"] = dict(resources or {})  # no device rules: see above
        cgroup = f"{TEST_CGROUP_PARENT}/oci-{uuid.uuid4().hex[:12]}"
        config["linux"]["cgroupsPath"] = cgroup
        oci.cgroups.append(cgroup)
        oci.bundle_cgroups[directory] = cgroup
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        return directory

    return make


# --- helpers -----------------------------------------------------------------

def cgroup_file(oci, b: Path, name: str) -> Path:
    path = _cgroup_dir(oci.bundle_cgroups[b]) / name
    assert path.exists(), f"no {path}"
    return path


def flat_keys(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (cpu.stat, memory.events) as a dict."""
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def go(oci, cid: str) -> None:
    """Let the container past its WAIT_GO."""
    with open(f"/proc/{oci.state(cid)['pid']}/root/tmp/go", "w"):
        pass


def container_file(pid: int, path: str) -> str:
    try:
        with open(f"/proc/{pid}/root{path}") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def stats(oci, cid: str, b: Path) -> dict:
    """What the tests read of the stats: from `events --stats` (runc's
    shape), or from the cgroup files for a runtime without `events`."""
    if oci.name == "crun":
        cpu = flat_keys(cgroup_file(oci, b, "cpu.stat"))
        return {"cpu_ns": cpu["usage_usec"] * 1000, "throttled_periods": cpu["nr_throttled"],
                "throttled_ns": cpu["throttled_usec"] * 1000,
                "memory": int(cgroup_file(oci, b, "memory.current").read_text()),
                "pids": int(cgroup_file(oci, b, "pids.current").read_text())}
    result = oci.cmd("events", "--stats", cid)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "stats" and event["id"] == cid, event
    data = event["data"]
    return {"cpu_ns": data["cpu"]["usage"]["total"],
            "throttled_periods": data["cpu"]["throttling"].get("throttledPeriods", 0),
            "throttled_ns": data["cpu"]["throttling"].get("throttledTime", 0),
            "memory": data["memory"]["usage"]["usage"], "pids": data["pids"]["current"]}


# --- the behaviours ----------------------------------------------------------

def test_memory_limit_oom_kills_the_init(oci, bundle):
    """memory.max 16 MiB, no swap: `tail /dev/zero` (one endless line) as
    the init is OOM-killed, and `run` exits 137."""
    b = bundle(["tail", "/dev/zero"], {"memory": {"limit": 16 * MiB, "swap": 16 * MiB}})
    result = oci.cmd("run", "--bundle", b, oci.new_id(), timeout=60 * SLOW)
    assert result.returncode == 137, (result.stdout, result.stderr)


def test_events_report_an_oom_kill(oci, bundle):
    """`events` prints {"type": "oom"} when a process of the container is
    OOM-killed (memory.events oom_kill on v2)."""
    if oci.name == "crun":
        pytest.skip("crun has no events command")
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "tail /dev/zero; sleep 100"],
               {"memory": {"limit": 16 * MiB, "swap": 16 * MiB}})
    oci.start_created(cid, b)
    events = subprocess.Popen(oci.argv("events", "--interval", "1s", cid), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert events.stdout.readline(), events.stderr.read()  # listening: a first stats line
        go(oci, cid)
        seen = []
        while "oom" not in seen:
            line = events.stdout.readline()  # the container runs on: the stream goes on
            assert line, (seen, events.stderr.read())
            seen.append(json.loads(line)["type"])
        assert flat_keys(cgroup_file(oci, b, "memory.events"))["oom_kill"] == 1
    finally:
        events.kill()
        events.wait()
        events.stdout.close()
        events.stderr.close()


def test_pids_limit_stops_forks(oci, bundle):
    """pids.max 5: the shell and four background sleeps fit; the fifth
    fork fails with EAGAIN (and ash gives up)."""
    script = "i=0; while [ $i -lt 10 ]; do sleep 100 & i=$((i+1)); echo started $i; done"
    b = bundle(["sh", "-c", script], {"pids": {"limit": 5}})
    result = oci.cmd("run", "--bundle", b, oci.new_id(), timeout=60 * SLOW)
    assert result.stdout.splitlines() == [f"started {i}" for i in range(1, 5)], (result.stdout, result.stderr)
    assert result.returncode != 0
    assert "can't fork" in result.stderr and "Resource temporarily unavailable" in result.stderr, result.stderr


def test_cpu_quota_throttles_a_busy_loop(oci, bundle):
    """cpu.max "10000 100000": over ~3 s a busy loop gets about 10% of a
    CPU (at most 15%), and the throttling counters grow."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "while :; do :; done"], {"cpu": {"quota": 10000, "period": 100000}})
    oci.start_created(cid, b, until="running")
    assert cgroup_file(oci, b, "cpu.max").read_text().split() == ["10000", "100000"]
    go(oci, cid)
    time.sleep(0.5)

    def sample():
        start = time.monotonic()
        value = stats(oci, cid, b)
        return value, (start + time.monotonic()) / 2

    before, t0 = sample()
    time.sleep(3)
    after, t1 = sample()
    share = (after["cpu_ns"] - before["cpu_ns"]) / ((t1 - t0) * 1e9)
    assert 0 < share <= 0.15, f"the busy loop got {share:.1%} of a CPU"
    assert after["throttled_periods"] > before["throttled_periods"] > 0, after
    assert after["throttled_ns"] > 0, after


def test_pause_freezes_and_resume_thaws(oci, bundle):
    """`pause`: the state says paused and a counter the container appends
    to stops; `resume`: running, and the counter moves again."""
    cid = oci.new_id()
    script = "i=0; while :; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.01; done"
    b = bundle(["sh", "-c", script])
    pid = oci.start_created(cid, b)["pid"]

    def count() -> int:
        return len(container_file(pid, "/tmp/count"))

    wait_for(lambda: count() > 0, "the counter to start", timeout=SLOW)
    result = oci.cmd("pause", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "paused"
    assert "frozen 1" in cgroup_file(oci, b, "cgroup.events").read_text()
    frozen = count()
    time.sleep(1)
    assert count() == frozen, "the container ran while paused"
    result = oci.cmd("resume", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "running"
    wait_for(lambda: count() > frozen, "the counter to move again", timeout=SLOW)


def test_update_memory_lowers_an_enforced_limit(oci, bundle):
    """Started with 256 MiB, updated live to 16 MiB (swap included): the
    limit files read back, and a later `tail /dev/zero` is OOM-killed (its
    shell records 137) without the cgroup's usage ever passing 16 MiB."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", WAIT_GO + "tail /dev/zero; echo $? > /tmp/status; sleep 100"],
               {"memory": {"limit": 256 * MiB, "swap": 256 * MiB}})
    pid = oci.start_created(cid, b)["pid"]
    result = oci.cmd("update", "--memory", str(16 * MiB), "--memory-swap", str(16 * MiB), cid)
    assert result.returncode == 0, result.stderr
    assert cgroup_file(oci, b, "memory.max").read_text().strip() == str(16 * MiB)
    swap = _cgroup_dir(oci.bundle_cgroups[b]) / "memory.swap.max"
    if swap.exists():
        assert swap.read_text().strip() == "0"
    go(oci, cid)
    status = wait_for(lambda: container_file(pid, "/tmp/status").strip(), "tail to die", timeout=3 * SLOW)
    assert status == "137"
    assert flat_keys(cgroup_file(oci, b, "memory.events"))["oom_kill"] == 1
    peak = _cgroup_dir(oci.bundle_cgroups[b]) / "memory.peak"
    if peak.exists():
        assert int(peak.read_text()) <= 16 * MiB


def test_stats_report_usage(oci, bundle):
    """`events --stats` of a container that ran a little: memory usage,
    processes (3) and CPU time all above zero."""
    cid = oci.new_id()
    b = bundle(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 100 & sleep 100 & wait"])
    oci.start_created(cid, b)
    procs = cgroup_file(oci, b, "cgroup.procs")
    wait_for(lambda: len(procs.read_text().split()) == 3, "the shell and its two sleeps", timeout=SLOW)
    data = stats(oci, cid, b)
    assert data["memory"] > 0, data
    assert data["pids"] == 3, data
    assert data["cpu_ns"] > 0, data
