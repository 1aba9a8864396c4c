"""How a runtime finds and joins the host's cgroups: mounts that cover a
cgroup mount, the unified hierarchy of a hybrid host, a container cgroup
that is frozen or busy before the container starts.

Every test runs against kubirun and runc (``oci``): if runc fails one, the
test is wrong.
"""
from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.integration.oci_helpers import TIMEOUT

UNIFIED = "/sys/fs/cgroup/unified"
CGROUP2_SUPER_MAGIC = 0x63677270


def _is_cgroup2(path: str) -> bool:
    """statfs's f_type, which os.statvfs does not give: ask stat(1)."""
    result = subprocess.run(["stat", "-f", "-c", "%t", path], capture_output=True, text=True)
    return result.returncode == 0 and int(result.stdout.strip() or "0", 16) == CGROUP2_SUPER_MAGIC


HYBRID = os.path.ismount(UNIFIED) and _is_cgroup2(UNIFIED)
hybrid_only = pytest.mark.skipif(not HYBRID, reason=f"not a hybrid host (no cgroup2 at {UNIFIED})")


def proc_cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup text as {controllers: path}; "" is the unified line."""
    out = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def in_private_mount_ns(shell: str) -> subprocess.CompletedProcess:
    """Run ``shell`` in a mount namespace of its own (private: what it
    mounts never reaches the host), as root."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@hybrid_only
def test_a_cgroup_mount_covered_by_another_mount_is_not_used(oci, bundle):
    # mountinfo still lists the cgroup2 mount under the tmpfs; only the
    # topmost mount at a path is what a path reaches.
    cid = oci.new_id()
    b = bundle(["cat", "/proc/self/cgroup"])
    run = shlex.join(oci.argv("run", "--bundle", str(b), cid))
    result = in_private_mount_ns(f"mount -t tmpfs none {UNIFIED} && {run}")
    assert result.returncode == 0, result.stderr
    cgroups = proc_cgroup_lines(result.stdout)
    path = oci.bundle_cgroups[b]
    assert cgroups["memory"] == path
    assert cgroups[""] != path


@hybrid_only
def test_on_a_hybrid_host_the_init_joins_the_unified_hierarchy_too(oci, bundle):
    cid = oci.new_id()
    b = bundle(["cat", "/proc/self/cgroup"])
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode == 0, result.stderr
    assert proc_cgroup_lines(result.stdout)[""] == oci.bundle_cgroups[b]


@hybrid_only
def test_on_a_hybrid_host_an_exec_joins_the_unified_hierarchy_too(oci, bundle):
    cid = oci.new_id()
    b = bundle(["sleep", "100"])
    oci.start_created(cid, b)
    result = oci.cmd("exec", cid, "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr
    assert proc_cgroup_lines(result.stdout)[""] == oci.bundle_cgroups[b]


@hybrid_only
def test_without_clone_into_cgroup_the_init_and_exec_join_the_unified_hierarchy_all_the_same(
        busybox_dir, tmp_path, monkeypatch):
    # kubirun only: its processes are born in the unified cgroup (clone3's
    # CLONE_INTO_CGROUP); a kernel without it (before 5.7) says ENOSYS,
    # and they join by writing to cgroup.procs instead.
    import errno
    import json
    import uuid

    from kubirun import exec_into
    from kubirun.container import Container
    from kubirun.ns import namespaces
    from kubirun.spec import default_config, load_bundle
    from tests.conftest import TEST_CGROUP_PARENT

    def no_clone3(flags=0, cgroup_fd=None, _fork=namespaces.fork):
        if cgroup_fd is not None:
            raise OSError(errno.ENOSYS, "clone3(CLONE_INTO_CGROUP): Function not implemented")
        return _fork(flags)

    monkeypatch.setattr(namespaces, "fork", no_clone3)
    monkeypatch.setattr(exec_into, "fork", no_clone3)
    path = f"{TEST_CGROUP_PARENT}/no-clone3-{uuid.uuid4().hex[:8]}"
    config = default_config()
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["sleep", "60"])
    config["linux"]["cgroupsPath"] = path
    # no cgroup namespace: /proc/self/cgroup inside shows the host's paths
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "cgroup"]
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(config))
    container = Container.create("no-clone3", load_bundle(str(tmp_path / "bundle")), root=str(tmp_path / "state"))
    try:
        container.start()
        with open(f"/proc/{container.state()['pid']}/cgroup") as f:
            assert proc_cgroup_lines(f.read())[""] == path
        check = exec_into.process_from_args(["grep", "-qx", f"0::{path}", "/proc/self/cgroup"], container.load())
        assert container.exec(check) == 0
    finally:
        container.delete(force=True)
