"""`kubirun run`: what a container sees, one behaviour per test.

Tests taking the `runtime` fixture also run against runc on an equivalent
bundle: if runc fails one, the test is wrong, not kubirun.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, _mount_table, kubirun
from tests.procs import children


def test_program_is_pid_1_and_sees_no_host_pids(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["sh", "-c", "echo $$; ls /proc | grep -E '^[0-9]+$'"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "1"
    # Only the shell (1) and its `ls` and `grep` children exist.
    assert len(lines[1:]) <= 3 and "1" in lines[1:]


def test_hostname_is_isolated(runtime, busybox_dir):
    host_before = os.uname().nodename
    result = runtime.run(busybox_dir, ["hostname"], hostname="inside-box")
    assert result.stdout.strip() == "inside-box"
    assert os.uname().nodename == host_before


def test_hostname_defaults_to_the_container_name(busybox_dir):
    result = kubirun("run", "--name", "named-box", str(busybox_dir), "--", "hostname")
    assert result.stdout.strip() == "named-box"


def test_host_mount_table_is_untouched(runtime, busybox_dir):
    before = _mount_table()
    result = runtime.run(busybox_dir, ["cat", "/proc/self/mountinfo"])
    assert result.returncode == 0, result.stderr
    inside = {line.split()[4] for line in result.stdout.splitlines()}
    assert {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"} <= inside
    assert str(busybox_dir) not in inside, "the host's view leaked into the container"
    assert _mount_table() == before


def test_only_loopback_and_it_is_up(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"])
    assert result.returncode == 0, result.stderr
    names, state, flags = result.stdout.split()
    assert names == "lo"  # a single interface
    assert int(flags, 16) & 0x1, "lo is not IFF_UP"
    assert state in ("unknown", "up")  # lo's operstate is "unknown" when up


@pytest.mark.parametrize("code", [0, 7])
def test_exit_status_is_propagated(runtime, busybox_dir, code):
    result = runtime.run(busybox_dir, ["sh", "-c", f"exit {code}"])
    assert result.returncode == code


def test_environment(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["env"], env=["FOO=bar baz"])
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["FOO"] == "bar baz"
    assert env["PATH"].startswith("/usr/local/sbin")


def test_kubirun_sets_hostname_and_home_like_docker(busybox_dir):
    result = kubirun("run", "--hostname", "h1", str(busybox_dir), "--", "env")
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["HOSTNAME"] == "h1"
    assert env["HOME"] == "/root"
    assert "TERM" not in env


def test_env_from_caller_by_name(busybox_dir):
    result = kubirun("run", "-e", "FROM_CALLER", "-e", "UNSET_HERE", str(busybox_dir), "--", "env",
                     env={**os.environ, "FROM_CALLER": "yes"})
    assert "FROM_CALLER=yes" in result.stdout.splitlines()
    assert "UNSET_HERE" not in result.stdout


def test_workdir(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["pwd"], cwd="/etc")
    assert result.stdout.strip() == "/etc"


def test_user_switch_numeric(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["id"], user="1000:1000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("uid=1000 gid=1000")


def test_user_switch_by_name_resolved_in_image(busybox_dir):
    result = kubirun("run", "-u", "nobody", str(busybox_dir), "--", "id")
    assert result.stdout.split()[:2] == ["uid=65534(nobody)", "gid=65534(nogroup)"]
    assert "100(users)" in result.stdout  # supplementary group from /etc/group


def test_unknown_user_name_is_one_clear_error(busybox_dir):
    result = kubirun("run", "-u", "ghost", str(busybox_dir), "--", "id")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["kubirun: user 'ghost' not found in the image's /etc/passwd"]


def test_missing_command_is_127_and_named(busybox_dir):
    result = kubirun("run", str(busybox_dir), "--", "no-such-program")
    assert result.returncode == 127
    assert result.stderr.strip().splitlines() == [
        'kubirun: exec: "no-such-program": executable file not found in $PATH']


def test_not_executable_is_126(busybox_dir):
    result = kubirun("run", str(busybox_dir), "--", "/etc/passwd")
    assert result.returncode == 126
    assert "permission denied" in result.stderr


def test_proc_1_exe_is_the_program_not_python(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["readlink", "/proc/1/exe"])
    assert result.stdout.strip() == "/bin/busybox"


def test_only_stdio_fds_are_open(runtime, busybox_dir):
    # `ls` is PID 1 and lists its own fds: 0, 1, 2 from the runtime and the
    # lowest free number (3) for the directory it reads. A leaked fd pushes
    # that directory to 4 or beyond.
    result = runtime.run(busybox_dir, ["ls", "/proc/self/fd"])
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["0", "1", "2", "3"]


def test_default_command_is_sh(busybox_dir):
    result = kubirun("run", str(busybox_dir), input="echo from-default-shell\n")
    assert result.stdout.strip() == "from-default-shell"


def test_stdin_is_the_callers_without_tty(busybox_dir):
    result = kubirun("run", str(busybox_dir), "--", "cat", input="piped through\n")
    assert result.stdout == "piped through\n"


def test_not_a_tty_without_t(busybox_dir):
    result = kubirun("run", str(busybox_dir), "--", "tty", stdin=subprocess.DEVNULL)
    assert result.stdout.strip() == "not a tty"


def test_dev_has_the_standard_nodes(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["sh", "-c", "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty"])
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert line.startswith("crw-rw-rw-"), line


def test_sys_is_read_only(runtime, busybox_dir):
    result = runtime.run(busybox_dir, ["sh", "-c", "grep ' /sys ' /proc/mounts"])
    assert " ro," in result.stdout or " ro " in result.stdout


def test_death_by_sigkill_gives_137(busybox_dir):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "sleep", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        init_pid = _wait_for_child_running(proc.pid, "sleep")
        os.kill(init_pid, signal.SIGKILL)
        assert proc.wait(timeout=20) == 137
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_is_forwarded_to_the_container(busybox_dir):
    script = "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 3
        assert proc.stdout.read().strip() == "got-term"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGINT])
def test_other_signals_are_forwarded(busybox_dir, sig):
    name = signal.Signals(sig).name[3:]
    script = f"trap 'echo got-{name}; exit 5' {name}; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 5
        assert proc.stdout.read().strip() == f"got-{name}"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_asked_twice_to_stop_a_program_that_ignores_it_kills_it(busybox_dir, sig):
    # PID 1 without a handler ignores SIGINT and SIGTERM: a second Ctrl-C
    # (or TERM) must still end what the first could not.
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "sleep", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_child_running(proc.pid, "sleep")
        proc.send_signal(sig)
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal is only forwarded"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 137
        assert "killing the container" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_killing_the_runtime_kills_the_container(busybox_dir):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", "orphan-check", str(busybox_dir),
                             "--", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    init_pid = _wait_for_child_running(proc.pid, "sleep")
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{init_pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{init_pid}")
    # SIGKILL gave the runtime no chance to clean up: the container reads
    # stopped, and `delete` reclaims its state, cgroup and directory.
    state = kubirun("state", "orphan-check")
    assert json.loads(state.stdout)["status"] == "stopped", state.stderr
    result = kubirun("delete", "orphan-check")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(os.path.join(os.environ["KUBIRUN_STORE"], "containers", "orphan-check"))
    assert kubirun("state", "orphan-check").returncode != 0


def test_name_in_use_is_refused(busybox_dir, private_store):
    import fcntl
    import shutil

    taken = private_store / "containers" / "taken"
    taken.mkdir(parents=True)
    owner = os.open(taken / "owner", os.O_RDWR | os.O_CREAT)  # as a live run holds it
    fcntl.lockf(owner, fcntl.LOCK_EX)
    try:
        result = kubirun("run", "--name", "taken", str(busybox_dir), "--", "true")
        assert result.returncode != 0
        assert "already in use" in result.stderr
        assert kubirun("gc").stdout == ""
    finally:
        os.close(owner)
    shutil.rmtree(taken)


def test_a_name_whose_run_left_only_its_directory_is_reused(busybox_dir, private_store):
    (private_store / "containers" / "left").mkdir(parents=True)  # a run killed at once
    result = kubirun("run", "--name", "left", str(busybox_dir), "--", "true")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("bad", ["a/b", "..", "white space"])
def test_invalid_names_are_refused(busybox_dir, bad):
    result = kubirun("run", "--name", bad, str(busybox_dir), "--", "true")
    assert result.returncode != 0
    assert result.stderr.startswith("kubirun: invalid container id")


def test_tarball_root_is_removed_after_exit(busybox_tarball, private_store):
    result = kubirun("run", "--name", "gone", str(busybox_tarball), "--", "true")
    assert result.returncode == 0, result.stderr
    assert not (private_store / "containers" / "gone").exists()


def test_keep_keeps_the_unpacked_root(busybox_tarball, private_store):
    result = kubirun("run", "--keep", "--name", "kept", str(busybox_tarball), "--", "sh", "-c", "echo x > /marker")
    assert result.returncode == 0, result.stderr
    kept = private_store / "containers" / "kept"
    assert (kept / "rootfs" / "marker").read_text() == "x\n"
    assert kubirun("delete", "kept").returncode == 0
    assert not kept.exists()


def test_a_kept_container_is_listed_stopped_until_deleted(busybox_tarball, private_store):
    assert kubirun("run", "--keep", "--name", "kept", str(busybox_tarball), "--", "true").returncode == 0
    listed = json.loads(kubirun("list", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in listed] == [("kept", "stopped")]
    again = kubirun("run", "--name", "kept", str(busybox_tarball), "--", "true")
    assert again.returncode != 0 and "already in use" in again.stderr
    assert kubirun("gc").stdout == ""  # kept: not a leftover
    result = kubirun("delete", "kept")
    assert result.returncode == 0, result.stderr
    assert not (private_store / "containers" / "kept").exists()
    assert kubirun("run", "--name", "kept", str(busybox_tarball), "--", "true").returncode == 0


def test_unpacked_tarball_keeps_modes(busybox_tarball):
    result = kubirun("run", str(busybox_tarball), "--", "sh", "-c", "stat -c '%a %U' /tmp /root /bin/busybox")
    assert result.stdout.split("\n")[:3] == ["1777 root", "700 root", "755 root"]


def _wait_for_child_running(pid: int, comm: str, timeout: float = 20) -> int:
    """The runtime's child once it has exec'd `comm`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(pid):
            try:
                with open(f"/proc/{child}/comm") as f:
                    if f.read().strip() == comm:
                        return child
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no child of {pid} became {comm!r}")


def _wait_for_descendant_running(pid: int, comm: str, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found, todo = None, list(children(pid))
        while todo and found is None:
            child = todo.pop()
            try:
                with open(f"/proc/{child}/comm") as f:
                    found = child if f.read().strip() == comm else None
                todo.extend(children(child))
            except OSError:
                continue  # gone meanwhile
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no descendant of {pid} became {comm!r}")


def test_without_privileges_one_clear_error_and_nothing_left():
    import shutil
    import tempfile

    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*as_nobody, str(KUBIRUN_SCRIPT), "--version"], capture_output=True).returncode:
        pytest.skip("this checkout is not readable by the unprivileged user")
    top = tempfile.mkdtemp(prefix="kubirun-nobody-", dir="/tmp")  # reachable by nobody
    try:
        os.chmod(top, 0o755)
        store, image, run = (os.path.join(top, name) for name in ("store", "root", "run"))
        for path in (store, image, run):
            os.mkdir(path)
        os.chown(store, 65534, 65534)
        os.chown(run, 65534, 65534)
        # The user's own runtime dir, as a login gives it: without one the
        # state root would be /tmp/kubirun-65534, outside what this test removes.
        result = subprocess.run(
            [*as_nobody, str(KUBIRUN_SCRIPT), "run", "--name", "unprivileged", image, "--", "true"],
            env={"KUBIRUN_STORE": store, "KUBIRUN_NETWORK": "none", "XDG_RUNTIME_DIR": run},
            capture_output=True, text=True, timeout=30)
        # Rootless runs work (tests/integration/test_rootless.py), but not in
        # a root the user may not write (an empty directory of root's here):
        # one error line, after the warning that no cgroup is delegated.
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if ": warning: " not in line]
        assert len(errors) == 1 and errors[0].startswith("kubirun: "), lines
        assert "Permission denied" in errors[0] or "not permitted" in errors[0], lines
        assert os.listdir(os.path.join(store, "containers")) == []
    finally:
        shutil.rmtree(top)


# --- --init: a tiny init as PID 1, as `docker run --init` ----------------------


def test_with_init_a_first_sigterm_ends_a_program_without_a_handler(busybox_dir):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--init", str(busybox_dir), "--",
                             "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_descendant_running(proc.pid, "sleep")  # PID 1's child
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_with_init_the_program_is_its_child_and_orphans_are_reaped(busybox_dir):
    script = ("sh -c 'sleep 0.2 &'; sleep 1; echo parent=$PPID;"
              " ps -o stat | grep -c '^Z' || true")
    result = kubirun("run", "--init", str(busybox_dir), "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["parent=1", "0"]


@pytest.mark.parametrize("program, code, says", [
    (["sh", "-c", "exit 7"], 7, ""),
    (["no-such-program"], 127, 'exec: "no-such-program"'),
])
def test_with_init_the_exit_status_and_exec_errors_are_the_programs(busybox_dir, program, code, says):
    result = kubirun("run", "--init", str(busybox_dir), "--", *program)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
