"""CVE-2024-21626 class: a working directory reached through a file
descriptor the runtime leaked (``cwd: /proc/self/fd/N``) would put the
container's process in the host's filesystem.  kubirun's init and exec'd
processes must refuse every such cwd, and no runtime fd may survive into
the container's program."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT


def _bundle(tmp_path, busybox_dir, args, cwd="/") -> str:
    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=args, cwd=cwd)
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/fds-{os.getpid()}"
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def _kubirun(tmp_path, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBIRUN_SCRIPT), "--root", str(tmp_path / "state"), *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          **kwargs)


@pytest.mark.parametrize("fd", range(3, 12))
def test_cwd_through_a_leaked_fd_is_refused(tmp_path, busybox_dir, fd):
    bundle = _bundle(tmp_path, busybox_dir, ["sh", "-c", "pwd; ls .."], cwd=f"/proc/self/fd/{fd}")
    result = _kubirun(tmp_path, "run", "--bundle", bundle, "leak")
    # Either the fd is not open (no such directory) or kubirun sees the cwd
    # is outside the root: never a listing of the host.
    assert result.returncode != 0, result.stdout
    assert not (tmp_path / "state" / "leak").exists()


def test_the_program_has_only_stdio(tmp_path, busybox_dir):
    bundle = _bundle(tmp_path, busybox_dir, ["ls", "/proc/self/fd"])
    result = _kubirun(tmp_path, "run", "--bundle", bundle, "fds")
    assert result.returncode == 0, result.stderr
    # 0, 1, 2 and the fd ls itself opened on /proc/self/fd
    assert sorted(int(x) for x in result.stdout.split()) == [0, 1, 2, 3]


def test_exec_with_a_leaked_fd_cwd_is_refused(tmp_path, busybox_dir):
    bundle = _bundle(tmp_path, busybox_dir, ["sleep", "30"])
    with open(tmp_path / "out", "w") as out:  # the container keeps create's stdio
        created = subprocess.run([str(KUBIRUN_SCRIPT), "--root", str(tmp_path / "state"), "create",
                                  "--bundle", bundle, "victim"], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=30)
    assert created.returncode == 0, (tmp_path / "out").read_text()
    try:
        assert _kubirun(tmp_path, "start", "victim").returncode == 0
        for fd in range(3, 10):
            result = _kubirun(tmp_path, "exec", "--cwd", f"/proc/self/fd/{fd}", "victim", "ls", "..")
            assert result.returncode != 0, (fd, result.stdout)
        listing = _kubirun(tmp_path, "exec", "victim", "ls", "/proc/self/fd")
        assert sorted(int(x) for x in listing.stdout.split()) == [0, 1, 2, 3]
    finally:
        _kubirun(tmp_path, "delete", "--force", "victim")
