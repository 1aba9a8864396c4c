"""The teaching demos (``kubirun demo NAME``): each test checks the claim
the demo's closing line states, from what the demo printed along the way."""
from __future__ import annotations

import glob
import os
import re
import tempfile

import pytest

from tests.conftest import kubirun


def _demo_temp_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "kubirun-demo-*")))


def test_demo_image_shows_a_write_landing_in_the_upper_dir_and_no_layer(busybox_tarball):
    before = _demo_temp_dirs()
    result = kubirun("demo", "image", "--image", str(busybox_tarball), timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "inside: motd: hello from layer 2" in out  # layer 2 on top
    assert "inside: vi: gone" in out  # its whiteout hides layer 1's file
    assert out.count("lowerdir  ") == 2 and "upperdir  " in out
    assert "upperdir: /written-inside.txt = 'written inside'" in out
    assert "layer 1: /written-inside.txt absent (untouched)" in out
    assert "layer 2: /written-inside.txt absent (untouched)" in out
    assert out.rstrip().splitlines()[-1].startswith("Shown: an image is a stack of tar.gz layers")
    assert _demo_temp_dirs() == before, "the demo left its temporary directory"


def test_demo_escape_refuses_every_working_directory_through_proc_self_fd(busybox_tarball):
    result = kubirun("demo", "escape", "--image", str(busybox_tarball), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    tries = [line for line in result.stdout.splitlines() if line.startswith("  fd ")]
    assert len(tries) == 10 and all(": refused (exit " in line for line in tries), tries
    assert "ESCAPED" not in result.stdout.replace("echo ESCAPED", "")
    # Where an fd was a host directory (the cgroup's, on a v1 host), the
    # check after chdir caught it and said where it led.
    outside = [line for line in tries if "is outside the container's root" in line]
    assert all(re.search(r"root \(/\S+\)$", line) for line in outside), outside
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("Shown: all 10 tries refused")
    assert (f"; {len(outside)} of them led to a host directory" in last) == bool(outside)


def test_demo_redis_answers_pong_cold_and_warm():
    from tests.conftest import REPO

    if not (REPO / "rootfs" / "redis.tar.gz").exists():
        pytest.skip("rootfs/redis.tar.gz is not built (make test-images)")
    before = _demo_temp_dirs()
    result = kubirun("demo", "redis", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("redis-cli ping -> PONG") == 2
    assert result.stdout.count("network devices inside: lo\n") == 2  # a namespace of its own
    times = re.findall(r"^  (cold|warm): (\d+\.\d+) s from `kubirun run` to PONG$", result.stdout,
                       re.MULTILINE)
    assert [label for label, _ in times] == ["cold", "warm"], result.stdout
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("Shown: a Redis server") and "in a network namespace of its own" in last
    assert _demo_temp_dirs() == before, "the demo left its throwaway store"


def test_demo_cgroups_shows_the_oom_kill_counted_and_cpu_throttling_rising(busybox_tarball):
    from pathlib import Path

    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    controllers = v2.read_text().split() if v2.exists() else \
        [p.name for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
    if not {"memory", "cpu"} <= set(controllers):
        pytest.skip("no memory or cpu controller here")
    result = kubirun("demo", "cgroups", "--image", str(busybox_tarball), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exit status: 137" in result.stdout
    assert re.search(r"^oom_kill [1-9]\d*  \(memory\.(events|oom_control)\)$", result.stdout,
                     re.MULTILINE), result.stdout
    counts = [int(n) for n in re.findall(r"^throttled nr_throttled (\d+)", result.stdout,
                                         re.MULTILINE)]
    assert len(counts) == 6 and counts[-1] > counts[0], counts
    assert f"nr_throttled rising from {counts[0]} to {counts[-1]}" in result.stdout
