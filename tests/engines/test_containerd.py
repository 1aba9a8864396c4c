"""containerd drives the runtime under test through its runc v2 shim
(``ctr run --runc-binary``): one behaviour per test, each run with every
runtime of the ``oci_runtime`` fixture."""
from __future__ import annotations

import time
from pathlib import Path

from tests.engines.harness import alive, cgroups_named, wait_for

LOOP = "while :; do sleep 0.1; done"


def test_echo(ctr):
    done = ctr.run("echo", "echo", "hello from containerd")
    assert (done.returncode, done.stdout) == (0, "hello from containerd\n"), done.stderr


def test_exit_code(ctr):
    done = ctr.run("exit7", "sh", "-c", "exit 7")
    assert done.returncode == 7, done.stderr


def test_task_exec(ctr):
    ctr.start("box", "sh", "-c", LOOP)
    done = ctr.exec("box", "exec1", "sh", "-c", "echo from exec; exit 3")
    assert (done.returncode, done.stdout) == (3, "from exec\n"), done.stderr
    # The exec'd process is gone; the task runs on.
    assert ctr.status("box") == "RUNNING"


def test_task_kill(ctr, tmp_path):
    log = tmp_path / "box.log"
    pid = ctr.start("box", "sh", "-c", f"trap 'echo got USR1' USR1; {LOOP}", log=log)
    assert ctr("tasks", "kill", "--signal", "SIGUSR1", "box").returncode == 0
    assert wait_for(lambda: "got USR1" in log.read_text()), log.read_text()
    assert ctr.status("box") == "RUNNING"
    assert ctr("tasks", "kill", "--signal", "SIGKILL", "box").returncode == 0
    assert wait_for(lambda: ctr.status("box") == "STOPPED"), ctr.status("box")
    assert not alive(pid)


def test_pause_and_resume(ctr):
    pid = ctr.start("box", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done")
    count = Path(f"/proc/{pid}/root/tmp/count")
    assert wait_for(lambda: count.exists() and count.read_text().strip())
    assert ctr("tasks", "pause", "box").returncode == 0
    assert ctr.status("box") == "PAUSED"
    frozen = count.read_text()
    time.sleep(0.5)
    assert count.read_text() == frozen, "a paused task went on running"
    assert ctr("tasks", "resume", "box").returncode == 0
    assert ctr.status("box") == "RUNNING"
    assert wait_for(lambda: count.read_text() != frozen), "a resumed task stayed still"


def test_task_ps(ctr):
    pid = ctr.start("box", "sh", "-c", LOOP)
    done = ctr("tasks", "ps", "box")
    assert done.returncode == 0, done.stderr
    pids = [int(line.split()[0]) for line in done.stdout.splitlines()[1:] if line.strip()]
    assert pid in pids, done.stdout


def test_delete_twice(ctr):
    ctr.start("box", "sh", "-c", LOOP)
    assert ctr("tasks", "kill", "--signal", "SIGKILL", "box").returncode == 0
    assert wait_for(lambda: ctr.status("box") == "STOPPED")
    assert ctr("tasks", "delete", "box").returncode == 0
    assert ctr("containers", "delete", "box").returncode == 0
    again = ctr("containers", "delete", "box")
    assert again.returncode != 0
    assert "not found" in again.stderr, again.stderr
    assert ctr.task("box") is None and "box" not in ctr.containers()
    # The runtime forgot it: no state under its root, no cgroup.
    assert not (ctr.state_root / "default" / "box").exists()
    assert not cgroups_named("box")


def test_runs_where_the_unified_mount_is_covered(ctr):
    # In the covered view the runtime sees a tmpfs where the cgroup2 mount
    # is (mountinfo lists both); it must take the topmost, as runc does.
    view = ctr.daemon.view
    if view is None:
        import pytest

        pytest.skip("the host's own view")
    assert view.fs_type(Path("/sys/fs/cgroup/unified")) == "tmpfs"
    done = ctr.run("covered", "sh", "-c", "echo ran")
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
