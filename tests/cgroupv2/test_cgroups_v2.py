"""The cgroup manager on a pure cgroup v2 host: the real-kernel tests of
tests/integration/test_cgroups.py again, plus what only v2 has (controller
delegation, io.max, cgroup.kill, "unified"; device rules: test_devices_v2.py).

Meant for the v2 VM (see /work/shared/v2vm/README.md):

    ../shared/v2vm/run.sh -- /work/main/.venv/bin/python -m pytest -m cgroupv2 tests/cgroupv2

Skipped on any host that is not pure v2.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

import tests.integration.test_cgroups as real
from kubirun.cgroups import CgroupError, detect_layout, open_cgroup
from tests.integration.test_cgroups import boxed, wait_for

# The host's real tests, collected here again (with this module's marks).
test_create_add_pids_destroy = real.test_create_add_pids_destroy
test_state_from_another_process = real.test_state_from_another_process
test_freeze_and_thaw = real.test_freeze_and_thaw
test_kill_all_keeps_a_paused_cgroup_paused = real.test_kill_all_keeps_a_paused_cgroup_paused
test_kill_all_sigkill_then_destroy_at_once = real.test_kill_all_sigkill_then_destroy_at_once
test_memory_limit_oom_kills = real.test_memory_limit_oom_kills
test_pids_limit_fails_fork = real.test_pids_limit_fails_fork
test_cpu_quota_throttles = real.test_cpu_quota_throttles
test_stats_have_runcs_shape = real.test_stats_have_runcs_shape
test_refusals_name_the_cgroup = real.test_refusals_name_the_cgroup

box = pytest.fixture(boxed, name="box")


def _pure_v2() -> bool:
    try:
        return detect_layout().kind == "v2"
    except CgroupError:
        return False


PURE_V2 = _pure_v2()
if PURE_V2:
    real.SLOW = 20  # the VM's CPU is emulated: only failures wait this long

pytestmark = [
    pytest.mark.cgroupv2,
    pytest.mark.skipif(not PURE_V2, reason="needs a pure cgroup v2 host (run it in ../shared/v2vm)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="managing cgroups needs root"),
]


def read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read()


def test_v2_parents_we_make_delegate_controllers(box):
    cg = box.cg
    cg.create()
    root = cg.mount
    parent = os.path.dirname(cg.dir)
    assert parent in cg.to_state()["created"]
    root_enabled = set(read(root, "cgroup.subtree_control").split())
    assert set(read(parent, "cgroup.subtree_control").split()) == root_enabled
    assert set(read(cg.dir, "cgroup.controllers").split()) == root_enabled
    assert read(cg.dir, "cgroup.subtree_control").strip() == ""  # a leaf delegates nothing


def test_v2_enables_a_needed_controller_in_a_parent_it_did_not_make(box):
    # someone else's parent that delegates nothing yet
    parent = box.cg.mount + box.parent
    os.mkdir(parent)
    try:
        cg = open_cgroup(box.parent + "/c")
        box.cg = cg
        cg.create()
        assert parent not in cg.to_state()["created"]
        assert "memory" not in read(cg.dir, "cgroup.controllers").split()
        cg.apply({"memory": {"limit": 64 << 20}, "pids": {"limit": 10}})
        assert {"memory", "pids"} <= set(read(parent, "cgroup.subtree_control").split())
        assert [parent, "memory"] in cg.to_state()["enabled"]
        assert read(cg.dir, "memory.max").strip() == str(64 << 20)
        cg.destroy()
        assert os.path.isdir(parent)  # not ours to remove
    finally:
        box.cg.destroy()
        os.rmdir(parent)


def test_v2_limit_files(box):
    cg = box.cg
    cg.create()
    warnings = cg.apply({
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20, "swappiness": 10},
        "cpu": {"shares": 1024, "quota": 20000, "period": 50000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 0},
        "unified": {"memory.high": str(60 << 20)},
        "devices": [{"allow": True, "access": "rwm"}],  # the trivial allow-all is fine
    })
    assert warnings == ["memory.swappiness is ignored: cgroup v2 has no per-cgroup swappiness"]
    assert read(cg.dir, "memory.max").strip() == str(64 << 20)
    if os.path.exists(os.path.join(cg.dir, "memory.swap.max")):
        assert read(cg.dir, "memory.swap.max").strip() == str(32 << 20)  # swap alone, as runc
    assert read(cg.dir, "memory.low").strip() == str(16 << 20)
    assert read(cg.dir, "memory.high").strip() == str(60 << 20)
    assert read(cg.dir, "cpu.weight").strip() == "39"
    assert read(cg.dir, "cpu.max").strip() == "20000 50000"
    assert read(cg.dir, "cpuset.cpus").strip() == "0"
    assert read(cg.dir, "pids.max").strip() == "0"
    cg.apply({"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}})
    assert read(cg.dir, "memory.max").strip() == "max"
    assert read(cg.dir, "cpu.max").strip() == "max 50000"
    assert read(cg.dir, "pids.max").strip() == "max"


def test_v2_hugetlb(box):
    cg = box.cg
    cg.create()
    if not os.path.exists(os.path.join(cg.dir, "hugetlb.2MB.max")):
        pytest.skip("no hugetlb controller or 2MB pages")
    cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert read(cg.dir, "hugetlb.2MB.max").strip() == str(4 << 20)
    assert "2MB" in cg.stats()["hugetlb"]


def test_v2_io_max_throttles_the_scratch_disk(box):
    if not os.path.exists("/sys/block/vda/dev"):
        pytest.skip("no scratch disk /dev/vda")
    major, minor = map(int, read("/sys/block/vda", "dev").split(":"))
    cg = box.cg
    cg.create()
    cg.apply({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}]}})
    assert read(cg.dir, "io.max").split() == [f"{major}:{minor}", f"rbps={1 << 20}", "wbps=max",
                                              "riops=max", "wiops=max"]
    p = box.sh("exec dd if=/dev/vda of=/dev/null bs=1M count=3 iflag=direct status=none")
    start = time.monotonic()
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert time.monotonic() - start >= 1.5  # 3 MiB at 1 MiB/s
    blkio = cg.stats()["blkio"]
    assert any(e.get("op") == "Read" and e.get("value", 0) >= 3 << 20
               for e in blkio["ioServiceBytesRecursive"])


def test_v2_kill_all_sigkill_uses_cgroup_kill(box):
    cg = box.cg
    cg.create()
    assert os.path.exists(os.path.join(cg.dir, "cgroup.kill"))
    p = box.sh("sleep 60 & sleep 60 & while :; do :; done")
    wait_for(lambda: len(cg.pids()) == 3, "sh and its sleeps")
    cg.kill_all(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    wait_for(lambda: not cg.pids(), "the sleeps to die")


def test_v2_refuses_v1_only_controllers(box):
    # device rules are an eBPF program on v2: see test_devices_v2.py
    cg = box.cg
    cg.create()
    with pytest.raises(CgroupError, match="net_cls/net_prio"):
        cg.apply({"network": {"classID": 1048577}})


def test_v2_frozen_process_does_not_run(box):
    cg = box.cg
    cg.create()
    p = box.sh("while :; do :; done")
    wait_for(lambda: real.cpu_ticks(p.pid) > 0, "the loop to run")
    cg.freeze()
    assert "frozen 1" in read(cg.dir, "cgroup.events")
    before = real.cpu_ticks(p.pid)
    time.sleep(0.5)
    assert real.cpu_ticks(p.pid) == before
    cg.kill_all(signal.SIGKILL)  # cgroup.kill works on a frozen cgroup too
    assert p.wait(timeout=60) == -signal.SIGKILL
