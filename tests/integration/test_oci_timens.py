"""Time namespaces: the container's boottime and monotonic clocks are
offset (linux.timeOffsets), and exec'd processes share them."""
from __future__ import annotations

import os

import pytest

DAY = 86400


def _timens(config):
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": DAY, "nanosecs": 0},
                                      "monotonic": {"secs": 3600, "nanosecs": 0}}


def _skip_if_unsupported(oci, result):
    if oci.name == "runc" and result.returncode != 0 and "time" in result.stderr:
        pytest.skip(f"this runc has no time namespaces: {result.stderr.strip()[:100]}")


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_boottime_is_offset(oci, bundle):
    b = bundle(["sh", "-c", "cat /proc/uptime; readlink /proc/self/ns/time"], edit=_timens)
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    _skip_if_unsupported(oci, result)
    assert result.returncode == 0, result.stderr
    inside = float(result.stdout.split()[0])
    assert DAY - 60 < inside - _uptime() < DAY + 60
    assert result.stdout.split()[2] != os.readlink("/proc/self/ns/time")


def test_exec_joins_the_time_namespace(oci, bundle):
    cid = oci.new_id()
    created = oci.create(cid, bundle(["sleep", "100"], edit=_timens))
    _skip_if_unsupported(oci, created)
    assert created.returncode == 0, created.stderr
    pid = oci.state(cid)["pid"]
    assert oci.cmd("start", cid).returncode == 0
    result = oci.cmd("exec", cid, "readlink", "/proc/self/ns/time")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == os.readlink(f"/proc/{pid}/ns/time")


def test_offsets_without_a_time_namespace_are_refused(oci, bundle):
    if oci.name == "runc":
        pytest.skip("runc 1.1 has no time namespaces")
    b = bundle(["true"], edit=lambda c: c["linux"].update(timeOffsets={"boottime": {"secs": 1}}))
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode != 0
    assert "linux.timeOffsets" in result.stderr
