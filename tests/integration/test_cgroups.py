"""The cgroup manager on this machine's real cgroups (v1, hybrid or v2:
the same tests run in the pure v2 VM from tests/cgroupv2).

Every test works under its own parent, /kubirun-test-<random>, starts its
own processes, and leaves nothing behind: its processes are killed by pid
and every directory is removed even when the test fails (the ``box``
fixture checks this, and conftest checks that no kubirun* cgroup is left).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from kubirun.cgroups import CgroupError, detect_layout, open_cgroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="managing cgroups needs root")

SLOW = 20 if os.environ.get("KUBIRUN_SLOW_VM") else 1  # generous waits where the CPU is emulated


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def proc_cgroups(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers: path}; "" is the unified line."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class Box:
    """A cgroup of our own and the processes we start in it."""

    def __init__(self) -> None:
        self.parent = f"/kubirun-test-{uuid.uuid4().hex[:10]}"
        self.cg = open_cgroup(self.parent + "/c")
        self.procs: list[subprocess.Popen] = []

    def _start(self, argv: list[str]) -> subprocess.Popen:
        # The process waits for a line on stdin, so that it runs (and forks)
        # only once it is in the cgroup.
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        self.cg.add(p.pid)
        p.stdin.write("go\n")
        p.stdin.close()
        p.stdin = None  # so that communicate() does not flush it
        return p

    def sh(self, script: str) -> subprocess.Popen:
        return self._start(["sh", "-c", "read go; " + script])

    def python(self, code: str) -> subprocess.Popen:
        return self._start([sys.executable, "-S", "-c", "import sys; sys.stdin.readline()\n" + code])

    def leftovers(self) -> list[str]:
        return [root for root in (d[: -len(self.cg.path)] for d in self.cg.dirs())
                if os.path.exists(root + self.parent)]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdout, p.stderr):
                stream.close()
        # grandchildren (all ours: nothing else is in this cgroup)
        try:
            if self.cg.pids():
                self.cg.kill_all(signal.SIGKILL)
                wait_for(lambda: not self.cg.pids(), "the cgroup to empty")
        finally:
            self.cg.destroy()
        assert self.leftovers() == [], f"cgroup directories left behind: {self.leftovers()}"


def boxed():
    b = Box()
    try:
        yield b
    finally:
        b.close()


box = pytest.fixture(boxed, name="box")


def swap_accounting(cg) -> bool:
    if cg.kind == "v2":
        return True  # memory.swap.max=0 is fine without swap
    return os.path.exists(os.path.join(cg.dir_of("memory"), "memory.memsw.limit_in_bytes"))


# --- create, add, pids, destroy ----------------------------------------------

def test_create_add_pids_destroy(box):
    cg = box.cg
    cg.create()
    assert all(os.path.isdir(d) for d in cg.dirs())
    state = json.loads(json.dumps(cg.to_state()))
    assert state["driver"] == detect_layout().kind
    assert state["created"], "it made its parents and the leaf"

    p = box.sh("sleep 60 & sleep 60 & wait")
    pids = wait_for(lambda: len(cg.pids()) == 3 and cg.pids(), "sh and its two sleeps")
    assert p.pid in pids
    # in every hierarchy the process is in our cgroup (including the unified
    # one and name=systemd on hybrid hosts)
    memberships = proc_cgroups(p.pid)
    assert sum(path == cg.path for path in memberships.values()) == len(cg.dirs()), memberships
    if cg.kind != "v1":
        assert memberships[""] == cg.path

    cg.kill_all(signal.SIGKILL)
    p.wait(timeout=10 * SLOW)
    wait_for(lambda: not cg.pids(), "the cgroup to empty")
    cg.destroy()
    assert not any(os.path.exists(d) for d in cg.dirs())
    assert box.leftovers() == []


def test_state_from_another_process(box):
    # create in one process, destroy from its state in another: only what
    # that process made goes
    code = ("import json, sys; from kubirun.cgroups import open_cgroup; "
            "cg = open_cgroup(sys.argv[1]); cg.create(); print(json.dumps(cg.to_state()))")
    out = subprocess.run([sys.executable, "-c", code, box.cg.path], capture_output=True, text=True, check=True)
    state = json.loads(out.stdout)
    again = open_cgroup(box.cg.path, state)
    assert all(os.path.isdir(d) for d in again.dirs())
    again.destroy()
    assert box.leftovers() == []


# --- freezer ------------------------------------------------------------------

def test_freeze_and_thaw(box):
    cg = box.cg
    cg.create()
    p = box.sh("while :; do :; done")
    wait_for(lambda: cpu_ticks(p.pid) > 0, "the loop to run")
    assert not cg.is_frozen()

    cg.freeze()
    assert cg.is_frozen()
    if cg.kind != "v2" and cg.can_freeze() and cg.dir_of("freezer"):
        with open(os.path.join(cg.dir_of("freezer"), "freezer.state")) as f:
            assert f.read().strip() == "FROZEN"
        assert proc_state(p.pid) == "D"  # the v1 freezer parks tasks uninterruptibly
    else:
        with open(os.path.join(cg.dir, "cgroup.events")) as f:
            assert "frozen 1" in f.read()
    before = cpu_ticks(p.pid)
    time.sleep(0.3)
    assert cpu_ticks(p.pid) == before, "a frozen process ran"

    cg.thaw()
    assert not cg.is_frozen()
    wait_for(lambda: cpu_ticks(p.pid) > before, "the thawed loop to run again")


def test_kill_all_keeps_a_paused_cgroup_paused(box):
    cg = box.cg
    cg.create()
    p = box.sh("sleep 60 & sleep 60 & wait")
    wait_for(lambda: len(cg.pids()) == 3, "sh and its sleeps")
    cg.freeze()
    cg.kill_all(signal.SIGTERM)
    assert cg.is_frozen()  # still paused
    if cg.kind != "v2":
        # v1 frozen tasks take no signal until thawed (v2 lets fatal ones through)
        assert len(cg.pids()) == 3
    cg.thaw()
    assert p.wait(timeout=10 * SLOW) == -signal.SIGTERM
    wait_for(lambda: not cg.pids(), "the sleeps to die")


def test_kill_all_sigkill_then_destroy_at_once(box):
    cg = box.cg
    cg.create()
    p = box.sh("sleep 60 & while :; do :; done")
    wait_for(lambda: len(cg.pids()) == 2, "sh and its sleep")
    cg.kill_all(signal.SIGKILL)
    # no wait, no reaping: destroy retries while the cgroup drains
    cg.destroy()
    assert box.leftovers() == []
    assert p.wait(timeout=10 * SLOW) == -signal.SIGKILL


# --- limits ---------------------------------------------------------------------

def test_memory_limit_oom_kills(box):
    cg = box.cg
    cg.create()
    limit = 32 << 20
    memory = {"limit": limit}
    if swap_accounting(cg):
        memory["swap"] = limit  # memory+swap == memory: no swapping out of it
    assert cg.apply({"memory": memory}) == []
    assert cg.oom_kills() == 0
    assert cg.stats()["memory"]["usage"]["limit"] == limit

    p = box.python("b = b'x' * (100 << 20)\nprint('survived', len(b))")
    out, err = p.communicate(timeout=60 * SLOW)
    assert p.returncode == -signal.SIGKILL, (p.returncode, out, err)
    assert "survived" not in out
    assert wait_for(lambda: cg.oom_kills() >= 1, "the OOM kill to be counted")


def test_pids_limit_fails_fork(box):
    cg = box.cg
    cg.create()
    cg.apply({"pids": {"limit": 4}})
    code = """
import os, time
kids, failed = [], 0
for _ in range(8):
    try:
        pid = os.fork()
    except BlockingIOError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(len(kids), failed)
"""
    p = box.python(code)
    out, err = p.communicate(timeout=60 * SLOW)
    assert p.returncode == 0, err
    forked, failed = map(int, out.split())
    assert forked == 3 and failed == 5, out  # 4 tasks: the parent and three children
    assert cg.stats()["pids"]["limit"] == 4


def test_cpu_quota_throttles(box):
    cg = box.cg
    cg.create()
    cg.apply({"cpu": {"quota": 10000, "period": 100000}})  # 10% of one CPU
    box.sh("while :; do :; done")

    def throttled():
        t = cg.stats()["cpu"]["throttling"]
        return t.get("throttledPeriods", 0) >= 3 and t

    first = wait_for(throttled, "throttled periods")
    wait_for(lambda: cg.stats()["cpu"]["throttling"]["throttledPeriods"] > first["throttledPeriods"],
             "the throttled periods to grow")
    t = cg.stats()["cpu"]["throttling"]
    assert t["periods"] >= t["throttledPeriods"] > 0
    assert t["throttledTime"] > 0
    usage = cg.stats()["cpu"]["usage"]
    assert usage["total"] > 0 and usage["user"] + usage["kernel"] > 0


def test_stats_have_runcs_shape(box):
    cg = box.cg
    cg.create()
    cg.apply({"memory": {"limit": 256 << 20}, "pids": {"limit": 100}})
    p = box.sh("exec sleep 60")
    wait_for(lambda: os.readlink(f"/proc/{p.pid}/exe").endswith("sleep"), "the sleep")
    s = cg.stats()
    assert list(s) == ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"]
    assert set(s["cpu"]["usage"]) >= {"kernel", "user"}
    assert s["memory"]["usage"]["limit"] == 256 << 20
    assert set(s["memory"]["usage"]) >= {"limit", "failcnt"}  # "usage" is left out while 0, as runc does
    assert s["pids"] == {"current": 1, "limit": 100}
    assert "raw" in s["memory"]
    json.dumps(s)


def test_devices_v1(box):
    cg = box.cg
    if cg.kind == "v2":
        pytest.skip("device rules on v2 are an eBPF program: tests/cgroupv2/test_devices_v2.py")
    cg.create()
    cg.apply({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    with open(os.path.join(cg.dir_of("devices"), "devices.list")) as f:
        assert f.read() == "c 1:3 rwm\n"
    code = """
for dev in ("/dev/null", "/dev/zero"):
    try:
        open(dev, "rb").close()
        print(dev, "ok")
    except PermissionError:
        print(dev, "denied")
"""
    p = box.python(code)
    out, err = p.communicate(timeout=30 * SLOW)
    assert out.split("\n")[:2] == ["/dev/null ok", "/dev/zero denied"], err


def test_v1_only_controllers_when_mounted(box):
    cg = box.cg
    layout = detect_layout()
    wanted = {"net_cls", "net_prio", "hugetlb"} & set(layout.v1)
    if not wanted:
        pytest.skip("no v1 net_cls, net_prio or hugetlb hierarchy here")
    cg.create()
    resources = {}
    if {"net_cls", "net_prio"} <= wanted:
        resources["network"] = {"classID": 1048577, "priorities": [{"name": "lo", "priority": 5}]}
    if "hugetlb" in wanted:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    cg.apply(resources)
    if "network" in resources:
        with open(os.path.join(cg.dir_of("net_cls"), "net_cls.classid")) as f:
            assert f.read().strip() == "1048577"
        with open(os.path.join(cg.dir_of("net_prio"), "net_prio.ifpriomap")) as f:
            assert "lo 5" in f.read()
    if "hugepageLimits" in resources:
        with open(os.path.join(cg.dir_of("hugetlb"), "hugetlb.2MB.limit_in_bytes")) as f:
            assert f.read().strip() == str(4 << 20)
        assert "2MB" in cg.stats()["hugetlb"]


def test_refusals_name_the_cgroup(box):
    cg = box.cg
    cg.create()
    layout = detect_layout()
    if "net_cls" not in layout.v1:
        with pytest.raises(CgroupError, match=f"cgroup {cg.path}: .*net_cls"):
            cg.apply({"network": {"classID": 1048577}})
    with pytest.raises(CgroupError, match=f"cgroup {cg.path}: unknown resource 'memroy'"):
        cg.apply({"memroy": {"limit": 1}})
    with pytest.raises(CgroupError) as info:
        cg.add(2 ** 22 + 12345)  # no such process
    assert info.value.path == cg.path and "cgroup.procs" in info.value.file
    assert "ESRCH" in str(info.value)
    assert cg.apply({"memory": {"kernel": 1 << 20}}) == [
        "memory.kernel is ignored: kernel memory limits are deprecated (runc ignores them too)"]
