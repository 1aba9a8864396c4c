"""Mount options and process domain beyond the defaults, against kubirun
and runc (``oci``): recursive read-only binds, and linux.personality."""
from __future__ import annotations

import os
import subprocess

import pytest


@pytest.fixture
def tree_with_submount(tmp_path):
    """A host directory with a tmpfs mounted inside it (removed at the end)."""
    top = tmp_path / "tree"
    (top / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "sub")], check=True)
    yield top
    subprocess.run(["umount", str(top / "sub")], check=True)


def test_rro_makes_every_mount_below_read_only(oci, bundle, tree_with_submount):
    def edit(config):
        config["mounts"].append({"destination": "/mnt", "type": "bind",
                                 "source": str(tree_with_submount), "options": ["rbind", "rro"]})
    b = bundle(["sh", "-c", "touch /mnt/a 2>/dev/null; echo $?; touch /mnt/sub/b 2>/dev/null; echo $?"],
               edit=edit)
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    if oci.name == "runc" and "rro" in result.stderr:
        pytest.skip("this runc has no rro")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def test_plain_ro_leaves_submounts_writable(oci, bundle, tree_with_submount):
    def edit(config):
        config["mounts"].append({"destination": "/mnt", "type": "bind",
                                 "source": str(tree_with_submount), "options": ["rbind", "ro"]})
    b = bundle(["sh", "-c", "touch /mnt/a 2>/dev/null; echo $?; touch /mnt/sub/b; echo $?"], edit=edit)
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "0"]


def test_personality_linux32(oci, bundle):
    b = bundle(["uname", "-m"], edit=lambda c: c["linux"].update(personality={"domain": "LINUX32"}))
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    if oci.name == "runc" and result.stdout.strip() == "x86_64":
        pytest.skip("runc 1.1 ignores linux.personality (it came in runc 1.2)")
    assert result.stdout.strip() in ("i686", "i386", "armv8l", "armv7l")


def test_a_bound_dev_is_left_as_it_is(oci, bundle, tmp_path):
    """/dev bound from elsewhere (here a scratch directory standing in for
    the host's /dev) is not the runtime's to fill: a linux.devices entry
    with another owner must not replace the node there, nor may default
    devices appear in it (runc skips device setup then too)."""
    import stat

    dev = tmp_path / "dev"
    dev.mkdir()
    os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.stat(dev / "null")

    def edit(config):
        config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
        config["mounts"].append({"destination": "/dev", "type": "bind", "source": str(dev),
                                 "options": ["rbind", "nosuid"]})
        config["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3,
                                       "fileMode": 0o600, "uid": 1000, "gid": 1000}]
        config["linux"].pop("maskedPaths", None)  # (they would bind the node over /proc paths)
    result = oci.cmd("run", "--bundle", str(bundle(["true"], edit=edit)), oci.new_id())
    assert result.returncode == 0, result.stderr
    after = os.stat(dev / "null")
    assert (after.st_ino, after.st_uid, after.st_gid, after.st_mode) == \
        (before.st_ino, before.st_uid, before.st_gid, before.st_mode)
    assert sorted(os.listdir(dev)) == ["null"]
