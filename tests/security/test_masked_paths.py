"""CVE-2025-31133 class: masking a path binds /dev/null over it.  A
container whose /dev/null is not the null device (a symlink to a procfs
file, say) must not get that file bound writable over a masked path: the
runtime verifies /dev/null (char 1:3, opened without following links) and
binds it from its fd, or refuses to create the container."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT


def _bundle(tmp_path, busybox_dir, dev_null) -> str:
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    (root / "dev").mkdir(exist_ok=True)
    dev_null(root / "dev")
    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["root"] = {"path": "rootfs"}
    config["process"].update(terminal=False, args=["cat", "/proc/keys"])
    # /dev from the image, not a fresh tmpfs: the image decides what /dev/null is
    config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/masked-{os.getpid()}"
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def _run(bundle: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBIRUN_SCRIPT), "--root", str(tmp_path / "state"), "run", "--bundle",
                           bundle, "masked"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_a_real_dev_null_masks_the_file(tmp_path, busybox_dir):
    bundle = _bundle(tmp_path, busybox_dir, lambda dev: os.mknod(dev / "null", 0o20666, os.makedev(1, 3)))
    result = _run(bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # /proc/keys reads as /dev/null


@pytest.mark.parametrize("fake", ["symlink", "regular file", "wrong device"])
def test_a_fake_dev_null_is_refused(tmp_path, busybox_dir, fake):
    def make(dev):
        if fake == "symlink":
            os.symlink("/proc/sys/kernel/core_pattern", dev / "null")
        elif fake == "regular file":
            (dev / "null").write_text("")
        else:
            os.mknod(dev / "null", 0o20666, os.makedev(1, 5))  # /dev/zero's numbers
    bundle = _bundle(tmp_path, busybox_dir, make)
    before = open("/proc/sys/kernel/core_pattern").read()
    result = _run(bundle, tmp_path)
    assert result.returncode != 0
    assert "not the null device" in result.stderr or "symlink" in result.stderr, result.stderr
    assert open("/proc/sys/kernel/core_pattern").read() == before
    assert not (tmp_path / "state" / "masked").exists()
