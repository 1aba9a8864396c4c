"""Mount options and process domain beyond the defaults, against kubirun
and runc (``oci``): recursive read-only binds, and linux.personality."""
from __future__ import annotations

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
