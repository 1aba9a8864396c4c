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
import uuid
from pathlib import Path

import pytest

from tests.integration.oci_helpers import CGROUP_MOUNT, TIMEOUT, pid_alive, wait_for

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


def _hierarchies() -> list[Path]:
    """The directory of every cgroup hierarchy a container's cgroup lives in."""
    if (CGROUP_MOUNT / "cgroup.controllers").exists():
        return [CGROUP_MOUNT]  # pure v2
    return [CGROUP_MOUNT / name for name in sorted(os.listdir(CGROUP_MOUNT))
            if os.path.ismount(CGROUP_MOUNT / name)]


@pytest.fixture
def made_cgroup():
    """A factory: ``made_cgroup()`` makes a cgroup under the session's test
    parent in every hierarchy, as someone other than the runtime would
    (v1 cpuset gets its cpus and mems), and returns its path; removed at
    teardown, after the processes a test put in it are killed."""
    from tests.conftest import TEST_CGROUP_PARENT

    made: list[Path] = []
    procs: list[subprocess.Popen] = []

    def make(*, with_process: bool = False) -> str:
        rel = f"{TEST_CGROUP_PARENT}/pre-{uuid.uuid4().hex[:10]}"
        leaves = []
        for hierarchy in _hierarchies():
            d = hierarchy
            for part in rel.strip("/").split("/"):
                parent, d = d, d / part
                if not d.exists():
                    d.mkdir()
                    made.append(d)
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if (d / name).exists() and not (d / name).read_text().strip():
                        (d / name).write_text((parent / name).read_text())
            leaves.append(d)
        if with_process:
            proc = subprocess.Popen(["sleep", "100"], stdin=subprocess.DEVNULL)
            procs.append(proc)
            for leaf in leaves:
                (leaf / "cgroup.procs").write_text(str(proc.pid))
        return rel

    yield make
    for proc in procs:
        proc.kill()
        proc.wait()
    leaves = [d for d in made if d.name.startswith("pre-")]
    for d in leaves:
        for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if (d / name).exists():
                (d / name).write_text(thawed)
    for d in leaves:  # an init a runtime left in it (a failure of the test): ours to end
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
    for d in leaves:
        wait_for(lambda: not (d / "cgroup.procs").read_text().split(), f"{d} to be empty")
        d.rmdir()  # what a runtime made below it is a leak: this fails


def _freeze(path: str) -> None:
    """Freeze the cgroup ``path`` itself, as `pause` would."""
    v1 = CGROUP_MOUNT / "freezer" / path.lstrip("/")
    if v1.is_dir():
        (v1 / "freezer.state").write_text("FROZEN")
    else:
        (CGROUP_MOUNT / path.lstrip("/") / "cgroup.freeze").write_text("1")


@pytest.mark.parametrize("command", ["create", "run"])
def test_a_frozen_cgroup_is_refused(oci, bundle, made_cgroup, command):
    path = made_cgroup()
    _freeze(path)
    cid = oci.new_id()
    b = bundle(["true"], edit=lambda config: config["linux"].update(cgroupsPath=path))
    oci.cgroups.remove(path)  # the fixture's, not the runtime's to remove
    if command == "create":
        result = oci.create(cid, b, timeout=10)
    else:
        result = oci.cmd("run", "--bundle", str(b), cid, timeout=10)  # it used to hang
    assert result.returncode != 0
    assert "cgroup unexpectedly frozen" in result.stderr
    assert not (oci.root / cid).exists()


def test_a_cgroup_with_processes_is_used_with_a_warning(oci, bundle, made_cgroup):
    path = made_cgroup(with_process=True)
    cid = oci.new_id()
    b = bundle(["true"], edit=lambda config: config["linux"].update(cgroupsPath=path))
    oci.cgroups.remove(path)
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode == 0, result.stderr
    assert "cgroup is not empty: 1 process(es) found" in result.stderr


def test_deleting_a_container_leaves_other_processes_of_its_cgroup_alone(oci, bundle, made_cgroup):
    path = made_cgroup(with_process=True)
    procs = CGROUP_MOUNT / ("" if (CGROUP_MOUNT / "cgroup.procs").exists() else "pids") / path.lstrip("/")
    other = int((procs / "cgroup.procs").read_text().split()[0])
    cid = oci.new_id()
    b = bundle(["sleep", "100"], edit=lambda config: config["linux"].update(cgroupsPath=path))
    oci.cgroups.remove(path)
    assert oci.run_detached(cid, b).returncode == 0
    result = oci.cmd("delete", "--force", cid)
    assert result.returncode == 0, result.stderr
    assert pid_alive(other)


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


@hybrid_only
def test_a_hugetlb_limit_under_new_parents_lands_in_the_unified_hierarchy(oci, bundle):
    """kubirun only (runc 1.1's hybrid manager does not use the unified
    hierarchy's controllers): hugetlb, which this kind of host offers only
    in cgroup2, is delegated down through the parents the container's
    cgroupsPath makes, when a limit asks for it (not for every container)."""
    if oci.name != "kubirun":
        pytest.skip("runc 1.1 writes no limit into a hybrid host's unified hierarchy")
    controllers = (Path(UNIFIED) / "cgroup.controllers").read_text().split()
    if "hugetlb" not in controllers or not Path("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir():
        pytest.skip("no hugetlb controller in the unified hierarchy, or no 2 MB pages")
    from tests.integration.oci_helpers import TEST_CGROUP_PARENT

    path = f"{TEST_CGROUP_PARENT}/hp-{uuid.uuid4().hex[:8]}/pod/c"

    def edit(config):
        config["linux"]["cgroupsPath"] = path
        config["linux"]["resources"] = {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]}

    cid = oci.new_id()
    oci.start_created(cid, bundle(["sleep", "100"], edit=edit))
    assert (Path(UNIFIED + path) / "hugetlb.2MB.max").read_text().strip() == str(4 << 20)
