"""``--no-pivot`` (MS_MOVE + chroot instead of pivot_root): the host's mounts
stay in the container's mount namespace, below the chroot.  Its full procfs
and sysfs must not: while one is there, the kernel lets the container mount
a new procfs (from a user namespace of its own) without the masked and
read-only paths, /proc/sysrq-trigger and a writable /proc/sys included.
Against kubirun and runc (``oci``), which both take them away.  (A
chrooted process may not create a user namespace (EPERM), so from a
``--no-pivot`` container without one the route is closed anyway: these
hold for the old code too; they guard the behaviour, the code follows
runc's msMoveRoot.  With a user namespace, the host's mounts are locked
in the container's copy: they can only be covered, and the kernel's check
still counts a covered procfs, for runc as for kubirun.)"""
from __future__ import annotations

import pytest

NEW_PROCFS = ("unshare -Umpf sh -c 'mount -t proc none /proc && echo mounted"
              " && ls /proc/sysrq-trigger' 2>&1; echo done")


def _no_pivot_run(oci, bundle, script):
    def edit(config):
        config["linux"].pop("seccomp", None)
        # a user namespace must be allowed to exist inside
        config["process"]["capabilities"] = {
            k: sorted(set(v) | {"CAP_SETUID", "CAP_SETGID"})
            for k, v in config["process"]["capabilities"].items()}
    return oci.cmd("run", "--no-pivot", "--bundle", str(bundle(["sh", "-c", script], edit=edit)),
                   oci.new_id())


def test_no_new_procfs_can_be_mounted_in_a_no_pivot_container(oci, bundle):
    result = _no_pivot_run(oci, bundle, NEW_PROCFS)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout, result.stdout
    assert "mounted" not in result.stdout, result.stdout


def test_a_no_pivot_container_still_has_its_own_masked_proc(oci, bundle):
    script = ("cat /proc/kcore 2>&1 | head -c 0; echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq;"
              " echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo sysctl; echo done")
    result = _no_pivot_run(oci, bundle, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done"], result.stdout


@pytest.fixture(autouse=True)
def _unshare_present(busybox_dir):
    if not (busybox_dir / "usr" / "bin" / "unshare").exists():
        pytest.skip("busybox has no unshare applet")


def test_a_user_namespace_container_runs_with_no_pivot(oci, bundle, reachable_root):
    # The host's procfs and sysfs are locked in its mount namespace (a copy
    # made for a user namespace): they cannot be unmounted, only covered.
    def edit(config):
        config["root"]["path"] = reachable_root
        config["linux"]["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            config["linux"][key] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b = bundle(["sh", "-c", "cat /proc/self/uid_map; grep -c . /proc/self/mountinfo > /dev/null"
                " && echo ok"], edit=edit)
    result = oci.cmd("run", "--no-pivot", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "100000", "65536", "ok"]
