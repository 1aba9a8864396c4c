"""Podman drives the runtime under test (through conmon): one behaviour per
test, each run with every runtime of the ``oci_runtime`` fixture."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.engines.harness import DEFAULT_STATE_ROOTS, alive, cgroups_named, wait_for

# A PID 1 that runs until stopped; with a TERM handler it exits at once.
LOOP = "while :; do sleep 0.1; done"
TERM_EXITS = f"trap 'exit 0' TERM; {LOOP}"
TERM_IGNORED = f"trap '' TERM; {LOOP}"


def _counter(podman, name: str) -> int:
    """The count the container's loop writes, read through /proc/PID/root
    (``podman exec`` into a paused container would hang)."""
    text = Path(f"/proc/{podman.pid(name)}/root/tmp/count").read_text().strip()
    return int(text or 0)


def test_echo(podman):
    done = podman.run("echo", "hello from podman")
    assert (done.returncode, done.stdout) == (0, "hello from podman\n"), done.stderr


def test_exit_code(podman):
    done = podman.run("sh", "-c", "exit 7")
    assert done.returncode == 7, done.stderr


def test_missing_executable_is_127(podman):
    done = podman.run("no-such-program")
    assert done.returncode == 127, done.stderr
    assert "no-such-program" in done.stderr
    assert "not found" in done.stderr or "no such file" in done.stderr.lower()


def test_non_executable_file_is_126(podman):
    done = podman.run("/etc/passwd")
    assert done.returncode == 126, done.stderr
    assert "/etc/passwd" in done.stderr
    assert "permission denied" in done.stderr.lower()


def test_env(podman):
    done = podman.run("sh", "-c", 'echo "$GREETING"', options=["-e", "GREETING=hi there"])
    assert done.stdout == "hi there\n", done.stderr


def test_workdir(podman):
    done = podman.run("pwd", options=["-w", "/var/tmp"])
    assert done.stdout == "/var/tmp\n", done.stderr


def test_user(podman):
    done = podman.run("sh", "-c", "id -u; id -g", options=["--user", "65534:65534"])
    assert done.stdout.split() == ["65534", "65534"], done.stderr


def test_hostname(podman):
    done = podman.run("hostname", options=["--hostname", "box"])
    assert done.stdout == "box\n", done.stderr


def test_read_only_root(podman):
    done = podman.run("sh", "-c", "touch /new-file", options=["--read-only"])
    assert done.returncode != 0
    assert "read-only file system" in done.stderr.lower(), done.stderr


def test_tty(podman):
    done = podman.run("sh", "-c", "test -t 0 && test -t 1 && tty", options=["-t"])
    assert done.returncode == 0, done.stdout + done.stderr
    # The terminal turns \n into \r\n.
    assert done.stdout.strip().startswith("/dev/pts/"), done.stdout


def test_detached_then_exec(podman):
    podman.start("box", "sh", "-c", LOOP)
    done = podman("exec", "box", "sh", "-c", "echo from exec; exit 3")
    assert (done.returncode, done.stdout) == (3, "from exec\n"), done.stderr


def test_exec_with_tty(podman):
    podman.start("box", "sh", "-c", LOOP)
    done = podman("exec", "-t", "box", "tty")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("/dev/pts/"), done.stdout


def test_stop_honoured_term(podman):
    podman.start("box", "sh", "-c", TERM_EXITS)
    started = time.monotonic()
    done = podman("stop", "--time", "10", "box")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5, "TERM was not acted on"
    assert podman.status("box") == "exited"
    assert podman.inspect("box", "{{.State.ExitCode}}") == "0"


def test_stop_ignored_term_kills_after_timeout(podman):
    podman.start("box", "sh", "-c", TERM_IGNORED)
    pid = podman.pid("box")
    started = time.monotonic()
    done = podman("stop", "--time", "2", "box")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert 2 <= took < 8, f"stop took {took:.1f} s"
    assert podman.status("box") == "exited"
    assert podman.inspect("box", "{{.State.ExitCode}}") == "137"
    assert not alive(pid), "the container's process outlived podman stop"


def test_kill_signal_reaches_trap(podman):
    podman.start("box", "sh", "-c", f"trap 'echo got USR1' USR1; {LOOP}")
    done = podman("kill", "--signal", "USR1", "box")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: "got USR1" in podman("logs", "box").stdout), podman("logs", "box")
    assert podman.status("box") == "running"


def test_logs(podman):
    podman.start("box", "sh", "-c", "echo to stdout; echo to stderr >&2")
    assert wait_for(lambda: podman.status("box") == "exited")
    done = podman("logs", "box")
    assert done.stdout == "to stdout\n", done
    assert done.stderr == "to stderr\n", done


def test_pause_and_unpause(podman):
    podman.start("box", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done")
    assert wait_for(lambda: _counter(podman, "box") > 0)
    assert podman("pause", "box").returncode == 0
    assert podman.status("box") == "paused"
    frozen = _counter(podman, "box")
    time.sleep(0.5)
    assert _counter(podman, "box") == frozen, "a paused container went on running"
    assert podman("unpause", "box").returncode == 0
    assert podman.status("box") == "running"
    assert wait_for(lambda: _counter(podman, "box") > frozen), "an unpaused container stayed still"


def test_top(podman):
    podman.start("box", "sleep", "1000")
    done = podman("top", "box", "pid", "args")
    assert done.returncode == 0, done.stderr
    assert "sleep 1000" in done.stdout, done.stdout


def test_rm_leaves_nothing(podman, tmp_path):
    cidfile = tmp_path / "cid"
    done = podman.run("true", options=["--cidfile", str(cidfile)])
    assert done.returncode == 0, done.stderr
    cid = cidfile.read_text().strip()
    assert podman.container_ids() == []
    state = DEFAULT_STATE_ROOTS[podman.name] / cid
    # podman run --rm deletes before it returns, but its cleanup process
    # (started by conmon) may still be at work: allow it a moment.
    assert wait_for(lambda: not state.exists() and not cgroups_named(f"libpod-{cid}"), 5), \
        f"left behind: {state if state.exists() else ''} {cgroups_named(f'libpod-{cid}')}"


def test_ten_containers_in_parallel(podman):
    names = [f"box{i}" for i in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda n: podman.start(n, "sh", "-c", TERM_EXITS), names))
    assert len(set(ids)) == 10
    assert all(podman.status(n) == "running" for n in names)
    done = podman("rm", "--force", "--time", "5", *names)
    assert done.returncode == 0, done.stderr
    assert podman.container_ids() == []
    assert wait_for(lambda: not any(cgroups_named(f"libpod-{cid}") for cid in ids), 5)


def test_runs_where_the_unified_mount_is_covered(podman):
    # In the covered view the runtime sees a tmpfs where the cgroup2 mount
    # is (mountinfo lists both); it must take the topmost, as runc does.
    view = podman.setup.view
    if view is None:
        import pytest

        pytest.skip("the host's own view")
    assert view.fs_type(Path("/sys/fs/cgroup/unified")) == "tmpfs"
    done = podman.run("sh", "-c", "echo ran")
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
