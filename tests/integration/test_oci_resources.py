"""A running container's resources through the command line: `update`,
`events --stats`, `ps`; one behaviour per test, against kubirun and runc
(``oci``).  The limits are read back from the container's own cgroup."""
from __future__ import annotations

import json

import pytest

from tests.integration.oci_helpers import cgroup_dirs


def _cgroup_file(oci, b, controller: str, v1_name: str, v2_name: str):
    """The container's ``v1_name`` (v1 ``controller`` hierarchy) or
    ``v2_name`` (unified) file, whichever this host uses."""
    for d in cgroup_dirs(oci.bundle_cgroups[b]):
        if d.parts[4] == controller and (d / v1_name).exists():
            return d / v1_name
    for d in cgroup_dirs(oci.bundle_cgroups[b]):
        if (d / v2_name).exists():
            return d / v2_name
    pytest.skip(f"no {controller} controller for the container's cgroup here")


def test_update_pids_limit(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    result = oci.cmd("update", "--pids-limit", "42", cid)
    assert result.returncode == 0, result.stderr
    assert _cgroup_file(oci, b, "pids", "pids.max", "pids.max").read_text().strip() == "42"


def test_update_memory(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    result = oci.cmd("update", "--memory", "67108864", cid)
    assert result.returncode == 0, result.stderr
    path = _cgroup_file(oci, b, "memory", "memory.limit_in_bytes", "memory.max")
    assert path.read_text().strip() == "67108864"


def test_update_resources_file(oci, bundle, tmp_path):
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"pids": {"limit": 17}}))
    result = oci.cmd("update", "--resources", str(resources), cid)
    assert result.returncode == 0, result.stderr
    assert _cgroup_file(oci, b, "pids", "pids.max", "pids.max").read_text().strip() == "17"


def test_update_resources_file_names_match_regardless_of_case(oci, bundle, tmp_path):
    # runc reads the file with Go's decoder: "PIDS"/"Limit" are "pids"/"limit"
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"PIDS": {"Limit": 23}, "Cpu": {"Shares": 512}}))
    result = oci.cmd("update", "-r", str(resources), cid)
    assert result.returncode == 0, result.stderr
    assert _cgroup_file(oci, b, "pids", "pids.max", "pids.max").read_text().strip() == "23"
    assert _cgroup_file(oci, b, "cpu", "cpu.shares", "cpu.weight").read_text().strip() in (
        "512", "20")  # v2: 512 shares as a weight


def test_update_cpu_share_as_runc_spells_it(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    result = oci.cmd("update", "--cpu-share", "256", cid)
    assert result.returncode == 0, result.stderr
    assert _cgroup_file(oci, b, "cpu", "cpu.shares", "cpu.weight").read_text().strip() in (
        "256", "10")


def test_update_of_an_unknown_container_fails(oci):
    result = oci.cmd("update", "--pids-limit", "42", "no-such-container")
    assert result.returncode != 0
    assert result.stderr.strip()


def test_events_stats_prints_one_json_object(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("events", "--stats", cid)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "stats"
    assert event["id"] == cid
    assert event["data"]["memory"]["usage"]["usage"] > 0
    assert event["data"]["pids"]["current"] >= 1


def test_ps_table_lists_the_init(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle(["sleep", "91"]))["pid"]
    result = oci.cmd("ps", cid)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    column = header.split().index("PID")
    assert [int(r.split()[column]) for r in rows] == [pid]
    assert "sleep 91" in rows[0]


def test_kill_with_an_unknown_signal_fails(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("kill", cid, "NOSUCHSIGNAL")
    assert result.returncode != 0
    assert result.stderr.strip()
    assert oci.status(cid) == "running"


def test_events_reports_an_oom_kill(oci, bundle):
    """A container over its memory limit: the kernel's OOM killer strikes
    and `events` prints {"type": "oom"} (runc on v1 too, via eventfd)."""
    import subprocess
    import time

    cid = oci.new_id()

    def limit(config):
        config["linux"].setdefault("resources", {})["memory"] = {"limit": 16 << 20, "swap": 16 << 20}

    # The init waits, then starts eating memory in a child: `events` is
    # already listening by then.
    b = bundle(["sh", "-c", "sleep 1; tail /dev/zero; sleep 100"], edit=limit)
    oci.start_created(cid, b)
    events = subprocess.Popen(oci.argv("events", "--interval", "1s", cid), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            line = events.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line)["type"])
            if "oom" in seen:
                break
        assert "oom" in seen, seen
    finally:
        events.kill()
        events.wait()


def test_update_refuses_what_it_cannot_apply(oci, bundle):
    """kernel memory limits are gone from current kernels: refused, never
    silently ignored (runc 1.1 also exits non-zero for them on v1 kernels
    without kmem)."""
    if oci.name == "runc":
        pytest.skip("runc 1.1 ignores --kernel-memory with a warning on this kernel")
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("update", "--kernel-memory", "64m", cid)
    assert result.returncode != 0
    assert "kernel" in result.stderr


def test_unified_resources_a_v1_or_hybrid_host_cannot_take_are_an_invalid_configuration(oci, bundle):
    from pathlib import Path

    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.skip("a pure cgroup v2 host takes linux.resources.unified")
    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if unified.exists() and "memory" in unified.read_text().split():
        pytest.skip("this hybrid host's unified hierarchy has the memory controller")

    def edit(config):
        config["linux"]["resources"] = {"unified": {"memory.high": "10485760"}}
    cid = oci.new_id()
    result = oci.create(cid, bundle(edit=edit))
    assert result.returncode != 0
    assert "invalid configuration: " in result.stderr, result.stderr


@pytest.fixture
def foreign_cpuset_parent():
    """A pod-level parent cgroup as another program (a kubelet) makes it:
    a plain mkdir, its v1 cpuset.cpus and cpuset.mems left empty.  Made
    under the session's test parent, removed after the container (ask for
    this fixture before ``oci``), in every hierarchy: runc leaves the
    parents it made in the others."""
    import os
    import uuid
    from pathlib import Path

    from tests.conftest import TEST_CGROUP_PARENT

    cpuset = Path("/sys/fs/cgroup/cpuset")
    if not os.path.ismount(cpuset):
        pytest.skip("no v1 cpuset hierarchy here")
    path = f"{TEST_CGROUP_PARENT}/pod-{uuid.uuid4().hex[:10]}"
    d = cpuset / path.lstrip("/")
    d.parent.mkdir(exist_ok=True)
    d.mkdir()
    assert not (d / "cpuset.cpus").read_text().strip()
    yield path
    for parent in cgroup_dirs(path):
        parent.rmdir()


def test_update_cpuset_under_a_parent_whose_empty_cpuset_another_program_made(
        foreign_cpuset_parent, oci, bundle):
    cid = oci.new_id()

    def edit(config):
        config["linux"]["cgroupsPath"] = f"{foreign_cpuset_parent}/c-{cid}"

    b = bundle(edit=edit)
    oci.start_created(cid, b)
    result = oci.cmd("update", "--cpuset-cpus", "0", cid)
    assert result.returncode == 0, result.stderr
    assert _cgroup_file(oci, b, "cpuset", "cpuset.cpus", "cpuset.cpus").read_text().strip() == "0"
