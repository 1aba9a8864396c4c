"""The OCI lifecycle through the command line (runtime.md): create, start,
state, kill, delete, run, one behaviour per test.

Every test runs against kubirun and runc (``oci``): if runc fails one, the
test is wrong.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.oci_helpers import assert_nothing_left, cgroup_dirs, pid_alive, wait_for

TRAP_TERM = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]


def test_create_leaves_the_container_created_with_a_live_pid(oci, bundle):
    cid = oci.new_id()
    result = oci.create(cid, bundle())
    assert result.returncode == 0, result.stderr
    state = oci.state(cid)
    assert state["status"] == "created"
    assert state["pid"] > 0
    assert pid_alive(state["pid"])


def test_start_makes_it_running(oci, bundle):
    cid = oci.new_id()
    assert oci.create(cid, bundle()).returncode == 0
    result = oci.cmd("start", cid)
    assert result.returncode == 0, result.stderr
    assert oci.wait_status(cid, "running")["pid"] > 0


def test_start_runs_the_process_with_create_stdout(oci, bundle):
    cid = oci.new_id()
    created = oci.create(cid, bundle(["echo", "hello from the container"]))
    assert created.returncode == 0, created.stderr
    assert oci.cmd("start", cid).returncode == 0
    oci.wait_status(cid, "stopped")
    assert "hello from the container" in created.out_path.read_text()


def test_kill_default_signal_is_term(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle(TRAP_TERM))["pid"]
    result = oci.cmd("kill", cid)
    assert result.returncode == 0, result.stderr
    oci.wait_status(cid, "stopped")
    assert not pid_alive(pid)


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "9"])
def test_kill_accepts_signal_names_and_numbers(oci, bundle, sig):
    cid = oci.new_id()
    oci.start_created(cid, bundle())  # sleep: as PID 1 it ignores TERM, not KILL
    result = oci.cmd("kill", cid, sig)
    assert result.returncode == 0, result.stderr
    oci.wait_status(cid, "stopped")


def test_kill_all_signals_every_process(oci, bundle):
    cid = oci.new_id()
    b = bundle(["sh", "-c", "sleep 100 & sleep 100 & wait"])
    pid = oci.start_created(cid, b)["pid"]

    def three_processes():
        pids = json.loads(oci.cmd("ps", "--format", "json", cid).stdout)
        return pids if len(pids) >= 3 else None

    ps = wait_for(three_processes, "sh and its two sleeps")
    result = oci.cmd("kill", "--all", cid, "KILL")
    assert result.returncode == 0, result.stderr
    oci.wait_status(cid, "stopped")
    wait_for(lambda: not any(pid_alive(p) for p in ps), "every process to die")
    assert not pid_alive(pid)


def test_kill_of_a_created_container_stops_it(oci, bundle):
    cid = oci.new_id()
    assert oci.create(cid, bundle()).returncode == 0
    pid = oci.state(cid)["pid"]
    result = oci.cmd("kill", cid, "KILL")
    assert result.returncode == 0, result.stderr
    oci.wait_status(cid, "stopped")
    assert not pid_alive(pid)


def test_delete_removes_the_container(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(["true"]), until="stopped")
    result = oci.cmd("delete", cid)
    assert result.returncode == 0, result.stderr
    after = oci.cmd("state", cid)
    assert after.returncode != 0
    assert not (oci.root / cid).exists()


def test_create_with_a_duplicate_id_fails(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    assert oci.create(cid, b).returncode == 0
    pid = oci.state(cid)["pid"]
    again = oci.create(cid, b)
    assert again.returncode != 0
    assert again.stderr.strip()
    # the first container is untouched
    state = oci.state(cid)
    assert state["status"] == "created" and state["pid"] == pid


@pytest.mark.parametrize("bad_id", [
    pytest.param("a/b", id="slash"), pytest.param("..", id="dotdot"), pytest.param(".", id="dot"),
    pytest.param("a b", id="space"), pytest.param("", id="empty")])
def test_create_with_an_invalid_id_fails(oci, bundle, bad_id):
    b = bundle()
    result = oci.cmd("create", "--bundle", str(b), bad_id, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
    if result.returncode == 0:  # wrongly accepted: do not leave it running
        oci.cmd("delete", "--force", bad_id)
    assert result.returncode != 0
    assert not oci.root.exists() or os.listdir(oci.root) == []


def test_state_of_an_unknown_id_fails_with_one_line(oci):
    result = oci.cmd("state", "no-such-container")
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_start_twice_fails_the_second_time(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    again = oci.cmd("start", cid)
    assert again.returncode != 0
    assert again.stderr.strip()
    assert oci.status(cid) == "running"


def test_start_of_a_stopped_container_fails(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(["true"]), until="stopped")
    result = oci.cmd("start", cid)
    assert result.returncode != 0
    assert result.stderr.strip()


def test_kill_of_a_stopped_container_fails_saying_it_is_not_running(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(["true"]), until="stopped")
    result = oci.cmd("kill", cid, "KILL")
    assert result.returncode != 0
    assert "container not running" in result.stderr


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_kill_all_of_a_stopped_container_succeeds(oci, bundle, sig):
    # containerd's CRI StopContainer sends `kill --all ID 9` after the task
    # has exited, and retries for ~40 s unless it succeeds.
    cid = oci.new_id()
    oci.start_created(cid, bundle(["true"]), until="stopped")
    result = oci.cmd("kill", "--all", cid, sig)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "stopped"


def test_kill_all_of_a_stopped_container_kills_what_is_left_in_its_cgroup(oci, bundle):
    # Without a PID namespace of its own, the init's children outlive it
    # (reparented on the host) and stay in the container's cgroup.
    def host_pid_namespace(config):
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]

    cid = oci.new_id()
    b = bundle(["sh", "-c", "sleep 100 & exit 0"], edit=host_pid_namespace)
    oci.start_created(cid, b, until="stopped")
    procs = cgroup_dirs(oci.bundle_cgroups[b])[0] / "cgroup.procs"
    left = [int(p) for p in wait_for(lambda: procs.read_text().split(), "the sleep in the cgroup")]
    oci.pids.update(left)
    result = oci.cmd("kill", "--all", cid, "KILL")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not any(pid_alive(p) for p in left), "the left-over sleep to die")


def test_delete_of_a_running_container_fails_without_force(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle())["pid"]
    result = oci.cmd("delete", cid)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert oci.status(cid) == "running"
    assert pid_alive(pid)


def test_delete_force_of_a_running_container_kills_it(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle())["pid"]
    result = oci.cmd("delete", "--force", cid)
    assert result.returncode == 0, result.stderr
    assert oci.cmd("state", cid).returncode != 0
    wait_for(lambda: not pid_alive(pid), "the init to be gone", timeout=5)


def test_delete_force_of_an_unknown_id_succeeds(oci):
    result = oci.cmd("delete", "--force", "no-such-container")
    assert result.returncode == 0, result.stderr


def test_delete_of_an_unknown_id_fails(oci):
    result = oci.cmd("delete", "no-such-container")
    assert result.returncode != 0


def test_delete_of_a_created_container_kills_its_init(oci, bundle):
    cid = oci.new_id()
    assert oci.create(cid, bundle()).returncode == 0
    pid = oci.state(cid)["pid"]
    result = oci.cmd("delete", cid)
    assert result.returncode == 0, result.stderr
    assert oci.cmd("state", cid).returncode != 0
    wait_for(lambda: not pid_alive(pid), "the init to be gone", timeout=5)


def test_pid_file_holds_bare_digits_equal_to_the_state_pid(oci, bundle, tmp_path):
    cid = oci.new_id()
    pid_file = tmp_path / "init.pid"
    result = oci.create(cid, bundle(), "--pid-file", str(pid_file))
    assert result.returncode == 0, result.stderr
    text = pid_file.read_text()
    assert text.isdigit(), repr(text)
    assert int(text) == oci.state(cid)["pid"]


def test_pid_file_relative_to_the_callers_directory(oci, bundle, tmp_path):
    cid = oci.new_id()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = oci.create(cid, bundle(), "--pid-file", "rel.pid", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert int((workdir / "rel.pid").read_text()) == oci.state(cid)["pid"]


@pytest.mark.parametrize("code", [0, 7])
def test_run_returns_the_exit_code_and_leaves_no_state(oci, bundle, code):
    cid = oci.new_id()
    b = bundle(["sh", "-c", f"echo out; exit {code}"])
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode == code, result.stderr
    assert result.stdout == "out\n"
    assert oci.cmd("state", cid).returncode != 0
    assert not (oci.root / cid).exists()


def test_run_uses_the_current_directory_as_the_bundle(oci, bundle):
    cid = oci.new_id()
    b = bundle(["sh", "-c", "echo in-cwd; exit 4"])
    result = oci.cmd("run", cid, cwd=b)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "in-cwd\n"
    assert oci.cmd("state", cid).returncode != 0


def test_run_detached_leaves_it_running(oci, bundle):
    cid = oci.new_id()
    result = oci.run_detached(cid, bundle())
    assert result.returncode == 0, result.stderr
    state = oci.wait_status(cid, "running")
    assert pid_alive(state["pid"])


def test_state_has_the_oci_fields(oci, bundle):
    cid = oci.new_id()

    def annotate(config):
        config["annotations"] = {"org.example.key": "value"}

    b = bundle(edit=annotate)
    assert oci.create(cid, b).returncode == 0
    state = oci.state(cid)
    assert state["ociVersion"]
    assert state["id"] == cid
    assert state["status"] == "created"
    assert isinstance(state["pid"], int) and state["pid"] > 0
    assert state["bundle"] == str(b)
    assert state["annotations"] == {"org.example.key": "value"}


def test_state_bundle_is_absolute_when_create_runs_in_the_bundle(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    result = oci._with_files(["create", cid], f"create-{cid}", cwd=b)
    assert result.returncode == 0, result.stderr
    assert oci.state(cid)["bundle"] == str(b)


def test_state_pid_is_zero_once_stopped(oci, bundle):
    cid = oci.new_id()
    state = oci.start_created(cid, bundle(["true"]), until="stopped")
    assert state["pid"] == 0


def test_list_shows_the_id(oci, bundle):
    cid = oci.new_id()
    assert oci.create(cid, bundle()).returncode == 0
    result = oci.cmd("list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "PID", "STATUS"]
    assert [r.split()[0] for r in rows] == [cid]
    assert rows[0].split()[2] == "created"


def test_list_format_json(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    assert oci.create(cid, b).returncode == 0
    result = oci.cmd("list", "--format", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [c["id"] for c in listed] == [cid]
    assert listed[0]["status"] == "created"
    assert listed[0]["bundle"] == str(b)
    assert listed[0]["pid"] == oci.state(cid)["pid"]


def test_list_quiet_prints_ids_only(oci, bundle):
    ids = sorted([oci.new_id(), oci.new_id()])
    for cid in ids:
        assert oci.create(cid, bundle()).returncode == 0
    result = oci.cmd("list", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == ids


def test_list_of_an_empty_root_is_empty_json(oci):
    result = oci.cmd("list", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) in ([], None)


def test_ps_format_json_contains_the_init(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle())["pid"]
    result = oci.cmd("ps", "--format", "json", cid)
    assert result.returncode == 0, result.stderr
    pids = json.loads(result.stdout)
    assert isinstance(pids, list)
    assert pid in pids


def test_pause_and_resume(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("pause", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "paused"
    result = oci.cmd("resume", cid)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "running"


def test_resume_of_a_running_container_fails(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("resume", cid)
    assert result.returncode != 0
    assert oci.status(cid) == "running"


def test_delete_force_of_a_paused_container(oci, bundle):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle())["pid"]
    assert oci.cmd("pause", cid).returncode == 0
    result = oci.cmd("delete", "--force", cid)
    assert result.returncode == 0, result.stderr
    assert oci.cmd("state", cid).returncode != 0
    wait_for(lambda: not pid_alive(pid), "the init to be gone", timeout=5)


def test_nothing_is_left_after_delete(oci, bundle):
    cid = oci.new_id()
    b = bundle()
    oci.start_created(cid, b)
    assert oci.cmd("delete", "--force", cid).returncode == 0
    assert_nothing_left(oci, cid, b)


def _session_keyrings(name: str) -> list[str]:
    with open("/proc/keys") as f:
        return [line for line in f if line.rstrip().endswith(f"{name}: empty")]


def test_the_container_gets_a_session_keyring_of_its_own(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(["sleep", "100"]))
    (line,) = _session_keyrings(f"_ses.{cid}")
    assert line.split()[4] == "3f1b0000"  # possessor all, user view+read+search (runc's)


def test_exec_joins_the_containers_session_keyring(oci, bundle, probe_root):
    if os.uname().machine != "x86_64":
        pytest.skip("the probe's keyctl number is x86_64's")

    def in_probe_root(config):
        config["root"]["path"] = str(probe_root)

    cid = oci.new_id()
    oci.start_created(cid, bundle(["sleep", "100"], edit=in_probe_root))
    (line,) = _session_keyrings(f"_ses.{cid}")
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING): the serial
    result = oci.cmd("exec", cid, "syscall_probe", "250", "0", "-3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok {int(line.split()[0], 16)}\n"


def test_no_new_keyring_keeps_the_callers(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(["sleep", "100"]), "--no-new-keyring")
    assert _session_keyrings(f"_ses.{cid}") == []
