"""Rootless on a pure cgroup v2 host: a user given a cgroup (as systemd
delegates user@UID.service) runs kubirun from inside it, and the
container's limits are enforced in a child of it.

v2's rule for moving a process: the mover needs write access to
cgroup.procs of the common ancestor of where the process is and where it
goes.  So the user's own processes must already be under the delegated
cgroup (here: a leaf "shell" the launcher moves itself into before
dropping root).

Meant for the v2 VM (../shared/v2vm/run.sh); skipped elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from kubirun.cgroups import CgroupError, detect_layout
from tests.conftest import TEST_CGROUP_PARENT
from tests.integration.rootless_helpers import NOBODY, as_user, user_home


def _pure_v2() -> bool:
    try:
        return detect_layout().kind == "v2"
    except CgroupError:
        return False


MOUNT = Path("/sys/fs/cgroup")
CONTROLLERS = "+pids +memory"

pytestmark = [
    pytest.mark.cgroupv2,
    pytest.mark.skipif(not _pure_v2(), reason="needs a pure cgroup v2 host (run it in ../shared/v2vm)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="root sets up the delegation"),
]


@pytest.fixture
def delegated():
    """TEST_PARENT/delegated-X, owned by the user with its controllers
    enabled for children, and a leaf "shell" for the user's processes."""
    parent = MOUNT / TEST_CGROUP_PARENT.strip("/")
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text(CONTROLLERS)
    deleg = parent / f"delegated-{uuid.uuid4().hex[:8]}"
    deleg.mkdir()
    (deleg / "cgroup.subtree_control").write_text(CONTROLLERS)
    shell = deleg / "shell"
    shell.mkdir()
    for path in (deleg, deleg / "cgroup.procs", deleg / "cgroup.subtree_control",
                 deleg / "cgroup.threads", shell, shell / "cgroup.procs"):
        os.chown(path, NOBODY, NOBODY)
    yield deleg
    for d in sorted((p for p in deleg.iterdir() if p.is_dir()), reverse=True):
        d.rmdir()  # kubirun removed the container's: only the shell is left
    deleg.rmdir()


@pytest.fixture
def user_bundle(busybox_dir):
    for home in user_home(busybox_dir, "kubirun-rootless-v2-"):
        yield Path(home)


def _as_user_in(shell: Path, top: Path, *args: str) -> subprocess.CompletedProcess:
    """kubirun as the user, started from inside the delegated cgroup."""
    launcher = ["sh", "-c", f'echo $$ > {shell}/cgroup.procs && exec "$@"', "launcher"]
    return as_user(str(top), *args, timeout=120, prefix=launcher)


def _bundle(user_bundle: Path, shell: Path, cgroup: str, args: list[str]) -> Path:
    bundle = user_bundle / "bundle"
    if not (bundle / "config.json").exists():
        assert _as_user_in(shell, user_bundle, "spec", "--rootless", "--bundle", str(bundle)).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=args)
    config["root"]["readonly"] = False
    config["linux"]["cgroupsPath"] = cgroup
    config["linux"]["resources"] = {"pids": {"limit": 3}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_limits_are_enforced_in_a_delegated_v2_cgroup(user_bundle, delegated):
    shell = delegated / "shell"
    cgroup = f"{TEST_CGROUP_PARENT}/{delegated.name}/c1"
    bundle = _bundle(user_bundle, shell, cgroup, ["sleep", "60"])
    started = _as_user_in(shell, user_bundle, "run", "-d", "--bundle", str(bundle), "v2limited")
    assert started.returncode == 0, started.stderr
    try:
        assert "no cgroup this user may write" not in started.stderr
        assert (delegated / "c1" / "pids.max").read_text().strip() == "3"
        state = json.loads(_as_user_in(shell, user_bundle, "state", "v2limited").stdout)
        assert state["status"] == "running"
        assert Path(f"/proc/{state['pid']}/cgroup").read_text() == f"0::{cgroup}\n"
    finally:
        deleted = _as_user_in(shell, user_bundle, "delete", "--force", "v2limited")
        assert deleted.returncode == 0, deleted.stderr
    assert not (delegated / "c1").exists()

    bundle = _bundle(user_bundle, shell, cgroup, ["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 1 & done; wait"])
    result = _as_user_in(shell, user_bundle, "run", "--bundle", str(bundle), "v2forks")
    assert "can't fork" in result.stderr  # enforced
    assert not (delegated / "c1").exists()
    assert os.listdir(user_bundle / "run" / "kubirun") == []
