"""A config without namespaces: the container inherits the runtime's (the
spec allows it; runtime-tools' linux_ns_itype checks it).  Against kubirun
and runc; then what only kubirun promises: the mounts it made in the
shared mount namespace are gone after delete (runc leaves them), and its
exec enters the container's root (runc's does not)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.oci_helpers import wait_for


NAMESPACES = ("mnt", "pid", "net", "ipc", "uts", "cgroup")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@pytest.fixture
def own_root(tmp_path, busybox_dir):
    """A copy of the busybox root for this test: a runtime sharing our mount
    namespace mounts into it (runc leaves those mounts: detached here)."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    yield root
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _without_namespaces(root: Path):
    def edit(config):
        config["root"] = {"path": str(root), "readonly": True}
        config["linux"]["namespaces"] = []
        config.pop("hostname", None)  # needs a uts namespace of its own
        # runc refuses these without a mount namespace of the container's
        config["linux"].pop("maskedPaths", None)
        config["linux"].pop("readonlyPaths", None)
    return edit


def _ns_script() -> str:
    return "; ".join(f"readlink /proc/self/ns/{n}" for n in NAMESPACES)


def test_without_namespaces_the_container_shares_the_runtimes(oci, bundle, own_root):
    b = bundle(["sh", "-c", _ns_script()], edit=_without_namespaces(own_root))
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [os.readlink(f"/proc/self/ns/{n}") for n in NAMESPACES]


def test_without_a_mount_namespace_the_container_still_sees_its_own_root(oci, bundle, own_root):
    (own_root / "etc" / "marker").write_text("inside\n")
    b = bundle(["sh", "-c", "cat /etc/marker; test -e /work && echo host-visible; true"],
               edit=_without_namespaces(own_root))
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["inside"]


# --- kubirun's own promise: nothing left in the shared mount namespace ------

@pytest.fixture
def kubirun_only(oci):
    if oci.name != "kubirun":
        pytest.skip("runc leaves the container's mounts in its mount namespace")
    return oci


def test_exec_enters_the_root_of_a_container_without_a_mount_namespace(kubirun_only, bundle, own_root):
    """runc 1.1.5 fails this one: its exec runs in the host's root (cat finds
    no /etc/marker), or with no namespace at all, not at all ("nsexec: ns
    paths are empty")."""
    oci = kubirun_only
    (own_root / "etc" / "marker").write_text("inside\n")
    container_id = oci.new_id()

    def edit(config):
        _without_namespaces(own_root)(config)
        config["linux"]["namespaces"] = [{"type": "pid"}]  # and without: see below
    oci.start_created(container_id, bundle(["sleep", "100"], edit=edit))
    result = oci.cmd("exec", container_id, "cat", "/etc/marker")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "inside\n"
    config_without_any = _without_namespaces(own_root)
    other = oci.new_id()
    oci.start_created(other, bundle(["sleep", "100"], edit=config_without_any))
    result = oci.cmd("exec", other, "cat", "/etc/marker")
    assert (result.returncode, result.stdout) == (0, "inside\n"), result.stderr


def test_delete_removes_every_mount_the_container_made(kubirun_only, bundle, own_root):
    """Its mounts hang under a private bind of its root in its state
    directory; delete detaches them all (and the bundle's root has none)."""
    oci = kubirun_only
    container_id = oci.new_id()
    b = bundle(["sleep", "100"], edit=_without_namespaces(own_root))
    oci.start_created(container_id, b)
    made = _mounts_under(oci.root / container_id)
    assert {f"{oci.root}/{container_id}/rootfs{p}" for p in ("", "/proc", "/dev", "/sys")} <= set(made)
    assert _mounts_under(own_root) == []
    assert oci.cmd("delete", "--force", container_id).returncode == 0
    assert _mounts_under(oci.root) == []


def test_two_containers_may_share_a_root_without_a_mount_namespace(kubirun_only, bundle, own_root):
    oci = kubirun_only
    first, second = oci.new_id(), oci.new_id()
    oci.start_created(first, bundle(["sleep", "100"], edit=_without_namespaces(own_root)))
    oci.start_created(second, bundle(["sleep", "100"], edit=_without_namespaces(own_root)))
    assert oci.cmd("delete", "--force", first).returncode == 0
    assert _mounts_under(oci.root / first) == []
    assert f"{oci.root}/{second}/rootfs/proc" in _mounts_under(oci.root / second)
    assert oci.cmd("exec", second, "true").returncode == 0


def test_a_failed_create_leaves_no_mount_behind(kubirun_only, bundle, own_root):
    oci = kubirun_only

    def edit(config):
        _without_namespaces(own_root)(config)
        config["mounts"].append({"destination": "/mnt", "type": "bind",
                                 "source": "/nonexistent-source", "options": ["bind"]})
    b = bundle(["true"], edit=edit)
    container_id = oci.new_id()
    result = oci.create(container_id, b)
    assert result.returncode != 0
    assert "/nonexistent-source" in result.stderr
    assert _mounts_under(own_root) == [] and _mounts_under(oci.root) == []
    assert not (oci.root / container_id).exists()


def test_a_runtime_killed_mid_create_leaves_mounts_that_delete_removes(kubirun_only, bundle, own_root,
                                                                       tmp_path):
    oci = kubirun_only
    gate = tmp_path / "gate"

    def edit(config):
        _without_namespaces(own_root)(config)
        # the runtime waits in this hook: the init has mounted by then
        config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"echo $$ > {gate}.tmp; mv {gate}.tmp {gate}; exec sleep 30"]}]}
    b = bundle(["true"], edit=edit)
    container_id = oci.new_id()
    creating = subprocess.Popen(oci.argv("create", "--bundle", str(b), container_id),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:


        wait_for(gate.exists, "the createRuntime hook")
        assert _mounts_under(oci.root / container_id)
    finally:
        creating.kill()
        creating.wait()
        if gate.exists():
            os.kill(int(gate.read_text()), 9)  # the hook the runtime left running
    assert oci.cmd("delete", container_id).returncode == 0
    assert _mounts_under(oci.root) == []
    assert not (oci.root / container_id).exists()


def test_a_user_namespace_without_a_mount_namespace_is_refused(kubirun_only, bundle, own_root):
    oci = kubirun_only

    def edit(config):
        _without_namespaces(own_root)(config)
        config["linux"]["namespaces"] = [{"type": "user"}]
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b = bundle(["true"], edit=edit)
    container_id = oci.new_id()
    result = oci.create(container_id, b)
    assert result.returncode != 0
    assert "a user namespace needs a mount namespace too" in result.stderr
    assert not (oci.root / container_id).exists()
