"""Rootless and cgroups: limits are enforced in a cgroup delegated to the
user (the administrator made it and gave it away, as systemd does for a
user's session); without one, the container runs with a clear warning that
its limits are not applied."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_CGROUP_PARENT
from tests.integration.rootless_helpers import NOBODY, as_user, user_home

CGROUP = Path("/sys/fs/cgroup")


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 ones and the unified one)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if " - cgroup" in line]
    return [Path(p) for p in points]


@pytest.fixture
def delegated():
    """A cgroup in every hierarchy, made by root and given to the user:
    the directory and the files that join it (v1 cpuset gets its cpus and
    mems, which a new child copies)."""
    if (CGROUP / "cgroup.controllers").exists():
        pytest.skip("pure cgroup v2: delegation needs the user's processes under the delegated cgroup")
    rel = f"{TEST_CGROUP_PARENT}/delegated-{uuid.uuid4().hex[:8]}"
    made = []
    try:
        for hierarchy in _hierarchies():
            d = hierarchy
            for part in rel.strip("/").split("/"):
                parent, d = d, d / part
                if not d.exists():
                    d.mkdir()
                    made.append(d)
                for name in ("cpuset.cpus", "cpuset.mems"):  # empty in a new v1 cpuset
                    if (d / name).exists() and not (d / name).read_text().strip():
                        (d / name).write_text((parent / name).read_text())
            for path in (d, d / "cgroup.procs", d / "tasks"):
                if path.exists():
                    os.chown(path, NOBODY, NOBODY)
    except BaseException:
        for d in reversed(made):
            d.rmdir()
        raise
    delegated_dirs = [d for d in made if d.name.startswith("delegated-")]
    yield rel
    for d in delegated_dirs:  # (the session removes its parent)
        for child in sorted((p for p in d.iterdir() if p.is_dir()), reverse=True):
            child.rmdir()  # kubirun removes its own; a failure here is a leak
        d.rmdir()


@pytest.fixture
def user_bundle(busybox_dir):
    for home in user_home(busybox_dir, "kubirun-rootless-cg-"):
        yield Path(home)


def _as_user(top: Path, *args: str) -> subprocess.CompletedProcess:
    return as_user(str(top), *args, timeout=30)


def _config(top: Path, args: list[str], cgroups_path: str | None, resources: dict) -> Path:
    bundle = top / "bundle"
    assert _as_user(top, "spec", "--rootless", "--bundle", str(bundle)).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=args)
    config["root"]["readonly"] = False
    config["linux"]["resources"] = resources
    if cgroups_path:
        config["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_limits_are_enforced_in_a_delegated_cgroup(user_bundle, delegated):
    container = f"{delegated}/c1"
    bundle = _config(user_bundle, ["sleep", "60"], container,
                     {"pids": {"limit": 5}, "memory": {"limit": 64 << 20}})
    started = _as_user(user_bundle, "run", "-d", "--bundle", str(bundle), "limited")
    assert started.returncode == 0, started.stderr
    try:
        assert "no cgroup this user may write" not in started.stderr
        pid = json.loads(_as_user(user_bundle, "state", "limited").stdout)["pid"]
        assert any(line.endswith(f":pids:{container}") for line in Path(f"/proc/{pid}/cgroup").read_text().split())
        assert (CGROUP / "pids" / container.lstrip("/") / "pids.max").read_text().strip() == "5"
        memory = CGROUP / "memory" / container.lstrip("/") / "memory.limit_in_bytes"
        assert int(memory.read_text()) == 64 << 20
    finally:
        assert _as_user(user_bundle, "delete", "--force", "limited").returncode == 0
    assert not (CGROUP / "pids" / container.lstrip("/")).exists()  # removed by the user's delete


def test_the_pids_limit_stops_forks_in_a_delegated_cgroup(user_bundle, delegated):
    bundle = _config(user_bundle, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait"],
                     f"{delegated}/c2", {"pids": {"limit": 4}})
    result = _as_user(user_bundle, "run", "--bundle", str(bundle), "forks")
    assert "can't fork" in result.stderr
    assert os.listdir(user_bundle / "run" / "kubirun") == []


def test_without_a_delegated_cgroup_limits_are_not_applied_and_that_is_said(user_bundle):
    bundle = _config(user_bundle, ["true"], None, {"pids": {"limit": 10}})
    result = _as_user(user_bundle, "run", "--bundle", str(bundle), "undelegated")
    assert result.returncode == 0, result.stderr
    assert "no cgroup this user may write" in result.stderr
    assert "linux.resources are NOT applied" in result.stderr
    assert os.listdir(user_bundle / "run" / "kubirun") == []
