"""`kubirun run`'s resource flags: written to the container's own cgroup,
enforced, and refused with one line when malformed."""
from __future__ import annotations

import os

import pytest

from tests.conftest import kubirun


def _v1() -> bool:
    return os.path.isdir("/sys/fs/cgroup/memory")


def test_two_megabytes_are_enough_to_run_true(busybox_dir):
    """The interpreter that sets the container up is not charged to it: its
    memory cgroup is joined just before execve."""
    result = kubirun("run", "--memory", "2m", str(busybox_dir), "--", "true")
    assert result.returncode == 0, result.stderr


def test_over_the_memory_limit_the_oom_killer_strikes_and_says_so(busybox_dir):
    result = kubirun("run", "--memory", "8m", str(busybox_dir), "--", "sh", "-c", "tail /dev/zero")
    assert result.returncode == 137
    assert "OOM killer" in result.stderr


def _v1_io_weight_file() -> str | None:
    """The v1 blkio weight file this host has: BFQ's, or the legacy
    CFQ's.  Only with BFQ as a disk's IO scheduler (/sys/block/*/queue/scheduler)
    does the blkio hierarchy offer weights at all; mq-deadline, kyber and
    none leave it the throttle files only."""
    for name in ("blkio.bfq.weight", "blkio.weight"):
        if os.path.exists(f"/sys/fs/cgroup/blkio/{name}"):
            return name
    return None


@pytest.mark.skipif(not _v1(), reason="reads the v1 file names")
def test_each_flag_lands_in_the_containers_cgroup(busybox_dir):
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
              " /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
              " /sys/fs/cgroup/cpuset/cpuset.cpus")
    result = kubirun("run", "--memory", "64m", "--pids-limit", "10", "--cpus", "0.5",
                     "--cpuset-cpus", "0", str(busybox_dir), "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(64 << 20), "10", "50000", "100000", "0"]


@pytest.mark.skipif(not _v1(), reason="reads the v1 file names")
@pytest.mark.skipif(_v1_io_weight_file() is None,
                    reason="no blkio weight files: no disk uses the BFQ IO scheduler here")
def test_the_io_weight_lands_in_the_containers_blkio_cgroup(busybox_dir):
    name = _v1_io_weight_file()
    result = kubirun("run", "--io-weight", "500", str(busybox_dir), "--",
                     "cat", f"/sys/fs/cgroup/blkio/{name}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "500"


@pytest.mark.skipif(not _v1(), reason="reads the v1 file names")
@pytest.mark.skipif(_v1_io_weight_file() is not None,
                    reason="this host has blkio weights (a BFQ disk): nothing to refuse")
def test_an_io_weight_the_host_cannot_apply_is_one_clear_error(busybox_dir, private_store):
    """Without BFQ the kernel has nowhere to write a weight: refused (runc
    refuses too), in one line that names the file, leaving nothing."""
    result = kubirun("run", "--io-weight", "500", str(busybox_dir), "--", "true")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "weight" in lines[0] and "ENOENT" in lines[0], lines


def test_the_pids_limit_stops_forks(busybox_dir):
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>/dev/null; sleep 0.2; ls /proc | grep -c '^[0-9]'"
    result = kubirun("run", "--pids-limit", "4", str(busybox_dir), "--", "sh", "-c", script)
    # sh + at most 3 sleeps (and the ls/grep pipeline needs room: it may fail)
    count = int(result.stdout.split()[-1]) if result.stdout.split() else 0
    assert count <= 4, result.stdout


@pytest.mark.parametrize("flag, value", [("--memory", "lots"), ("--memory", "100k"), ("--cpus", "0"),
                                         ("--cpus", "x"), ("--pids-limit", "0"),
                                         ("--io-weight", "5")])
def test_bad_values_are_one_line_and_leave_nothing(busybox_dir, flag, value, private_store):
    result = kubirun("run", flag, value, str(busybox_dir), "--", "true")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kubirun: {flag}"), lines


def test_limits_are_refused_with_a_bundle(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = kubirun("run", "--memory", "64m", "-b", str(tmp_path), "some-id")
    assert result.returncode != 0
    assert "config.json" in result.stderr
