"""bench/speed.py, issue 20's benchmark, run for real on a cheap subset of
its rows: its JSON report has the promised shape, and it leaves nothing
behind.  No timing is asserted (other suites share the machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SPEED = REPO / "bench" / "speed.py"


def _speed(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # TMPDIR: the benchmark's temporary directory lands where the test can see it.
    return subprocess.run([sys.executable, str(SPEED), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})


def test_speed_benchmark_reports_each_chosen_row_with_goals_and_leaves_nothing_behind(tmp_path):
    proc = _speed(tmp_path, "--runs", "1", "--warmup", "0", "--only", "state,kill", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    # kill and delete are measured in one cycle: asking for kill gives both
    assert set(report["rows"]) == {"state", "kill", "delete"}
    for name, row in report["rows"].items():
        assert row["title"], name
        assert "kubirun" in row["results"], name
        for runtime, figures in row["results"].items():
            wall = figures["wall_ms"]
            assert len(wall["samples"]) == 1, (name, runtime)
            assert wall["p10"] <= wall["median"] <= wall["p90"], (name, runtime)
            assert figures["cpu_ms"]["median"] >= 0, (name, runtime)
        assert [g["goal"] for g in row["goals"]] == ["wall <= 2x runc"], name
        for goal in row["goals"]:
            assert goal["met"] in (True, False, None), name
            assert goal["text"].split()[0] in ("MET", "SHORT", "n/a"), goal["text"]
    assert isinstance(report["goals_met"], bool)
    assert set(report["unavailable"]) <= {"runc", "crun"}

    assert report["left_behind"] == []
    assert list(tmp_path.iterdir()) == []  # its temporary directory is gone
    parent = report["cgroup_parent"].strip("/")
    assert [h for h in os.listdir("/sys/fs/cgroup")
            if os.path.exists(os.path.join("/sys/fs/cgroup", h, parent))] == []


def test_speed_benchmark_refuses_an_unknown_row_in_one_line(tmp_path):
    proc = _speed(tmp_path, "--only", "state,warp")
    assert proc.returncode == 2
    assert "unknown row warp" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
