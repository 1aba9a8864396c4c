"""An image whose /proc, /sys or /dev is a symlink (CVE-2019-16884,
CVE-2023-27561, CVE-2026-41579 class): procfs, sysfs or the device tmpfs
would land where the link points, on the host side of the root or over
the container's own files.  kubirun resolves those mount points inside the
root without following any symlink, and refuses the image."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import TEST_CGROUP_PARENT, kubirun


@pytest.mark.parametrize("point, target", [
    ("proc", "/"), ("proc", "/tmp"), ("sys", "/etc"), ("dev", "/tmp"), ("dev", "../../../../tmp"),
])
def test_a_symlinked_mount_point_is_refused(tmp_path, busybox_dir, outside, point, target):
    root = tmp_path / "root"
    shutil.copytree(busybox_dir, root, symlinks=True)
    shutil.rmtree(root / point, ignore_errors=True)
    if (root / point).exists() or (root / point).is_symlink():
        (root / point).unlink()
    os.symlink(target, root / point)
    result = kubirun("run", str(root), "--", "true")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"/{point} is a symlink" in lines[0], lines
    assert os.listdir(outside) == []


def test_without_a_dev_mount_a_symlinked_dev_is_refused_naming_it(tmp_path, busybox_dir, outside):
    # Devices would be made where /dev points: refused, and the error says
    # which component is the symlink, not only what was being made.
    root = tmp_path / "bundle" / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    shutil.rmtree(root / "dev")
    os.symlink(str(outside), root / "dev")
    assert kubirun("spec", "--bundle", str(root.parent)).returncode == 0
    config_path = root.parent / "config.json"
    config = json.loads(config_path.read_text())
    config["process"].update(terminal=False, args=["true"])
    config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/symlinked-dev"
    config_path.write_text(json.dumps(config))
    result = kubirun("run", "--bundle", str(root.parent), "symlinked-dev")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev is a symlink in the image" in lines[0], lines
    assert "(making /dev/" in lines[0], lines
    assert os.listdir(outside) == []
