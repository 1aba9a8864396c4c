"""The debootstrap recipes of rootfs/ (built on demand: `make -C rootfs
debian.tar.gz redis.tar.gz`, which needs debootstrap and the Debian
mirror); skipped when they are not built."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, REPO, kubirun
from tests.image.conftest import ok

DEBIAN = REPO / "rootfs" / "debian.tar.gz"
REDIS = REPO / "rootfs" / "redis.tar.gz"


def _need(path):
    if not path.exists():
        pytest.skip(f"{path.name} is not built (make -C rootfs {path.name})")


def test_debootstrap_root_runs_with_setuid_kept():
    _need(DEBIAN)
    out = ok(DEBIAN, "sh", "-c", "cat /etc/debian_version >/dev/null && stat -c '%a %U' /usr/bin/passwd"
             " /usr/bin/su /tmp && apt-get --version | head -1")
    lines = out.splitlines()
    assert lines[:3] == ["4755 root", "4755 root", "1777 root"]
    assert lines[3].startswith("apt ")


def test_redis_image_starts_redis_server():
    _need(REDIS)
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", "redis", str(REDIS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline:
            done = kubirun("exec", "redis", "redis-cli", "ping")
            if done.returncode == 0 and done.stdout.strip() == "PONG":
                answer = done.stdout.strip()
                break
            time.sleep(0.2)
        assert answer == "PONG"
        status = kubirun("exec", "redis", "cat", "/proc/1/status")
        uid = next(line.split()[1] for line in status.stdout.splitlines() if line.startswith("Uid:"))
        assert uid != "0"  # the image's User: redis
    finally:
        kubirun("kill", "redis", "KILL")
        proc.communicate(timeout=30)
