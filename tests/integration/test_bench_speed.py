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
            if goal["met"] is False:  # a short goal says why
                assert goal["why"] and f"why: {goal['why']}" in goal["text"], goal
    assert isinstance(report["goals_met"], bool)
    floor = report["floor"]  # the interpreter's start, the why's measure
    assert floor["wall_ms"]["median"] > 0 and floor["cpu_ms"]["median"] > 0
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


def test_a_short_goal_says_whether_the_interpreter_alone_is_over_it():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import speed
    finally:
        sys.path.remove(str(REPO / "bench"))
    floor = speed.Floor(8.0, "the interpreter")
    results = {"kubirun": {"wall_ms": {"median": 12.0}}, "runc": {"wall_ms": {"median": 5.0}}}
    out_of_reach = speed.ratio_goal("wall", results, "wall_ms", "runc", 1.0, {}, floor)
    assert out_of_reach["met"] is False
    assert out_of_reach["why"] == ("out of reach with an interpreter per command: the"
                                   " interpreter alone 8.0 ms, the goal allows 5.0")
    results["kubirun"]["wall_ms"]["median"] = 9.0
    reachable = speed.ratio_goal("wall", results, "wall_ms", "runc", 2.0, {}, floor)
    assert reachable["met"] is True and "why" not in reachable
    results["kubirun"]["wall_ms"]["median"] = 13.0
    short = speed.ratio_goal("wall", results, "wall_ms", "runc", 2.0, {}, floor)
    assert short["why"] == ("the interpreter 8.0 of the 10.0 ms allowed; kubirun's own part"
                            " 5.0 ms would have to be 2.0")
