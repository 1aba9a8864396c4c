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
