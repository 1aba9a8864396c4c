"""`exec --cgroup`: the process joins an existing sub-cgroup of the
container's (runc 1.1's ``[CONTROLLER[,CONTROLLER...]:]PATH``), against
kubirun and runc (``oci``).  The sub-cgroups are the test's own: made
after the container, removed (empty) before it is deleted."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.oci_helpers import CGROUP_MOUNT

PURE_V2 = (CGROUP_MOUNT / "cgroup.controllers").exists()
v1_only = pytest.mark.skipif(PURE_V2, reason="controller:path is for v1 hierarchies")


def proc_cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup text as {controllers: path}; "" is the unified line."""
    out = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def hierarchies() -> list[Path]:
    if PURE_V2:
        return [CGROUP_MOUNT]
    return [CGROUP_MOUNT / name for name in sorted(os.listdir(CGROUP_MOUNT))
            if os.path.ismount(CGROUP_MOUNT / name)]


@pytest.fixture
def sub_cgroup(oci):
    """``sub_cgroup(cgroup, name, hierarchy_dirs)`` makes ``name`` below the
    container's ``cgroup`` in those hierarchies (v1 cpuset with its
    parent's cpus and mems, as a cpuset needs to take tasks)."""
    made: list[Path] = []

    def make(cgroup: str, name: str, dirs: list[Path]) -> None:
        for hierarchy in dirs:
            parent = hierarchy / cgroup.strip("/")
            d = parent / name
            d.mkdir()
            made.append(d)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (d / knob).exists():
                    (d / knob).write_text((parent / knob).read_text())

    yield make
    for d in reversed(made):
        try:
            d.rmdir()
        except FileNotFoundError:
            pass


def running(oci, bundle) -> tuple[str, str]:
    cid = oci.new_id()
    b = bundle(["sleep", "100"])
    oci.start_created(cid, b)
    return cid, oci.bundle_cgroups[b]


@v1_only
def test_exec_cgroup_controller_path_joins_that_controllers_sub_cgroup_only(oci, bundle, sub_cgroup):
    cid, cgroup = running(oci, bundle)
    sub_cgroup(cgroup, "sub", [CGROUP_MOUNT / "cpu"])
    result = oci.cmd("exec", "--cgroup", "cpu:sub", cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = proc_cgroup_lines(result.stdout)
    cpu = next(k for k in lines if "cpu" in k.split(","))
    assert lines[cpu] == f"{cgroup}/sub"
    assert lines["memory"] == cgroup


@v1_only
def test_exec_cgroup_takes_several_controllers_separated_by_commas(oci, bundle, sub_cgroup):
    cid, cgroup = running(oci, bundle)
    dirs = list(dict.fromkeys((CGROUP_MOUNT / c).resolve() for c in ("cpu", "pids")))
    sub_cgroup(cgroup, "sub", dirs)
    result = oci.cmd("exec", "--cgroup", "cpu,pids:sub", cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = proc_cgroup_lines(result.stdout)
    joined = {k for k, v in lines.items() if v == f"{cgroup}/sub"}
    assert "pids" in joined and any("cpu" in k.split(",") for k in joined)
    assert lines["memory"] == cgroup


def test_exec_cgroup_plain_path_joins_the_sub_cgroup_in_every_hierarchy(oci, bundle, sub_cgroup):
    cid, cgroup = running(oci, bundle)
    sub_cgroup(cgroup, "sub", hierarchies())
    result = oci.cmd("exec", "--cgroup", "sub", cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    lines = proc_cgroup_lines(result.stdout)
    # every line, the unified one ("0::") of a hybrid host included
    assert {k: f"{cgroup}/sub" for k in lines} == lines


def test_exec_cgroup_of_a_missing_sub_cgroup_fails_with_255(oci, bundle):
    cid, _ = running(oci, bundle)
    result = oci.cmd("exec", "--cgroup", "nonexistent", cid, "true")
    assert result.returncode == 255
    assert "nonexistent" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


@v1_only
def test_exec_cgroup_of_an_unknown_controller_fails_with_255(oci, bundle):
    cid, _ = running(oci, bundle)
    result = oci.cmd("exec", "--cgroup", "nosuchcontroller:sub", cid, "true")
    assert result.returncode == 255
    assert "unknown controller" in result.stderr and "nosuchcontroller" in result.stderr


def test_exec_cgroup_plain_path_given_twice_is_refused(oci, bundle):
    cid, _ = running(oci, bundle)
    result = oci.cmd("exec", "--cgroup", "a", "--cgroup", "b", cid, "true")
    assert result.returncode == 255
    assert "invalid --cgroup argument" in result.stderr


@v1_only
def test_exec_cgroup_under_a_cgroups_path_not_in_normal_form(oci, bundle, sub_cgroup):
    cid = oci.new_id()
    b = bundle(["sleep", "100"], edit=lambda config: config["linux"].update(
        cgroupsPath=config["linux"]["cgroupsPath"].replace("/oci-", "//./oci-") + "/"))
    oci.start_created(cid, b)
    cgroup = "/" + "/".join(p for p in oci.bundle_cgroups[b].split("/") if p not in ("", "."))
    sub_cgroup(cgroup, "sub", [CGROUP_MOUNT / "pids"])
    result = oci.cmd("exec", "--cgroup", "pids:sub", cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    assert proc_cgroup_lines(result.stdout)["pids"] == f"{cgroup}/sub"
