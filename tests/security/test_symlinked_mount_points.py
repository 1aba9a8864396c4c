"""An image whose /proc, /sys or /dev is a symlink (CVE-2019-16884,
CVE-2023-27561, CVE-2026-41579 class): procfs, sysfs or the device tmpfs
would land where the link points, on the host side of the root or over
the container's own files.  kubirun resolves those mount points inside the
root without following any symlink, and refuses the image."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import kubirun


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
    assert len(lines) == 1 and "symlink" in lines[0] and f"/{point}" in lines[0], lines
    assert os.listdir(outside) == []
