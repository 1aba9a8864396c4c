"""Seccomp notify (``SCMP_ACT_NOTIFY`` with ``linux.seccomp.listenerPath``):
the runtime sends the filter's listener and the container process state to
a seccomp agent, which answers the container's notified calls.  Against
kubirun and runc (``oci``), with the agent of ``seccomp_agent.py`` in a
process of its own (it lets mkdir go on and answers chmod with EPERM).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import rootless_helpers
from tests.integration.oci_helpers import TIMEOUT, assert_nothing_left, read_config, wait_for
from tests.integration.rootless_helpers import NOBODY, as_user
from tests.integration.test_oci_seccomp import PRIVILEGE_CASES, seccomp_features

AGENT = Path(__file__).with_name("seccomp_agent.py")
NOTIFIED = ["mkdir", "mkdirat", "chmod", "fchmodat"]
NOTIFY_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": NOTIFIED, "action": "SCMP_ACT_NOTIFY"}],
}
# mkdir goes on (the agent says CONTINUE), chmod fails (the agent's EPERM)
SCRIPT = "mkdir /tmp/d; echo mkdir=$?; chmod 700 /tmp/d; echo chmod=$?; ls -ld /tmp/d"


class Agent:
    """The agent process, listening at ``path``; what it logged."""

    def __init__(self, path: Path, log: Path, hold: bool = False) -> None:
        self.path, self.log = path, log
        self.process = subprocess.Popen([sys.executable, str(AGENT), str(path), str(log)],
                                        stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, AGENT_HOLD="1" if hold else ""))
        assert self.process.stdout.readline() == "ready\n", "the agent did not start"

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def states(self) -> list[dict]:
        return [e for e in self.entries() if "state" in e]

    def received(self, count: int = 1) -> list[dict]:
        """The first ``count`` container process states it received."""
        wait_for(lambda: len(self.states()) >= count, f"the agent to receive {count} listener(s)")
        return self.states()[:count]

    def calls(self) -> list[str]:
        return [e["call"] for e in self.entries() if "call" in e]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=TIMEOUT)
        self.process.stdout.close()


@pytest.fixture
def agent(tmp_path):
    started = []

    def start(path: Path | None = None, hold: bool = False) -> Agent:
        started.append(Agent(path or tmp_path / "agent.sock", tmp_path / f"agent{len(started)}.log",
                             hold))
        return started[-1]

    yield start
    for one in started:
        one.kill()


def with_agent(path, nnp: bool = True, uid: int = 0, metadata: str = "", profile=None):
    def edit(config):
        config["linux"]["seccomp"] = json.loads(json.dumps(profile or NOTIFY_PROFILE))
        if path is not None:
            config["linux"]["seccomp"]["listenerPath"] = str(path)
        if metadata:
            config["linux"]["seccomp"]["listenerMetadata"] = metadata
        config["process"]["noNewPrivileges"] = nnp
        config["process"]["user"] = {"uid": uid, "gid": uid}

    return edit


def run(oci, b, **kw):
    return oci.cmd("run", "--bundle", str(b), oci.new_id(), **kw)


def assert_agent_answered(stdout: str, stderr: str) -> None:
    lines = stdout.splitlines()
    assert lines[:2] == ["mkdir=0", "chmod=1"], (stdout, stderr)
    assert lines[2].startswith("drwxr-xr-x"), stdout  # made, and its mode unchanged
    assert "Operation not permitted" in stderr


# --- the agent answers -----------------------------------------------------------


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_the_agent_answers_the_calls_the_container_makes(oci, bundle, agent, nnp, uid):
    a = agent()
    result = run(oci, bundle(["sh", "-c", SCRIPT], edit=with_agent(a.path, nnp, uid)))
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)
    calls = a.calls()
    assert {"mkdir", "mkdirat"} & set(calls) and {"chmod", "fchmodat"} & set(calls), calls


def test_create_and_start_send_the_container_process_state_with_the_listener(oci, bundle, agent):
    a = agent()

    def edit(config):
        with_agent(a.path, metadata="pod=web")(config)
        config["annotations"] = {"org.example.key": "value"}

    b = bundle(["sleep", "100"], edit=edit)
    cid = oci.new_id()
    state = oci.start_created(cid, b)
    (entry,) = a.received()
    assert entry["fds"] == 1  # one fd, by SCM_RIGHTS
    sent = entry["state"]
    assert sent == {
        "ociVersion": read_config(b)["ociVersion"], "fds": ["seccompFd"], "pid": state["pid"],
        "metadata": "pod=web",
        "state": {"ociVersion": read_config(b)["ociVersion"], "id": cid, "status": "creating",
                  "pid": state["pid"], "bundle": str(b),
                  "annotations": {"org.example.key": "value"}},
    }


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_an_exec_process_sends_its_own_listener(oci, bundle, agent, nnp, uid):
    a = agent()
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle(["sleep", "100"], edit=with_agent(a.path, nnp, uid)))["pid"]
    result = oci.cmd("exec", cid, "sh", "-c", SCRIPT)
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)
    first, second = (entry["state"] for entry in a.received(2))
    assert first["pid"] == pid
    assert second["pid"] not in (0, pid)  # the exec'd process, as the runtime sees it
    assert second["fds"] == ["seccompFd"]
    assert (second["state"]["id"], second["state"]["status"], second["state"]["pid"]) == \
        (cid, "running", pid)


def test_the_container_process_holds_no_listener(oci, bundle, agent):
    # With it, the container could answer its own notified calls.
    a = agent()
    script = "ls -l /proc/$$/fd; true"  # the shell's fds (what the init exec'd)
    result = run(oci, bundle(["sh", "-c", script], edit=with_agent(a.path)))
    assert result.returncode == 0, result.stderr
    assert " 0 -> " in result.stdout
    assert "anon_inode" not in result.stdout  # [seccomp notify]


def test_a_relative_listener_path_is_the_bundles(oci, bundle, agent, tmp_path):
    b = bundle(["sh", "-c", SCRIPT], edit=with_agent("agent.sock"), name="relative")
    agent(b / "agent.sock")
    result = oci.cmd("run", "--bundle", str(b), oci.new_id(), cwd="/")
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)


def test_a_long_container_id_does_not_keep_the_listener_from_the_agent(oci, bundle, agent):
    # kubirun's init waits for `start` on a socket in the state directory:
    # its path is then longer than a sockaddr_un holds.
    a = agent()
    cid = oci.new_id() + "x" * 120
    oci.ids.append(cid)
    result = oci.cmd("run", "--bundle", str(bundle(["sh", "-c", SCRIPT], edit=with_agent(a.path))), cid)
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)


def test_the_agent_gets_the_listener_of_a_container_in_a_user_namespace(oci, bundle, agent,
                                                                        reachable_root):
    a = agent()

    def edit(config):
        with_agent(a.path)(config)
        config["root"]["path"] = reachable_root
        config["linux"]["namespaces"].append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = mapping

    result = run(oci, bundle(["sh", "-c", SCRIPT], edit=edit))
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)


def test_wait_killable_recv_is_taken_with_a_listener(oci, bundle, agent):
    if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" not in seccomp_features(oci).get("supportedFlags", []):
        pytest.skip(f"{oci.name} does not support that flag (its features say so)")
    a = agent()
    profile = dict(NOTIFY_PROFILE, flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    result = run(oci, bundle(["sh", "-c", SCRIPT], edit=with_agent(a.path, profile=profile)))
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)


# --- without an agent ----------------------------------------------------------------


def test_a_call_waiting_for_the_agent_fails_with_enosys_when_the_agent_dies(oci, bundle, agent):
    a = agent(hold=True)  # it never answers
    b = bundle(["sh", "-c", "mkdir /tmp/d; echo mkdir=$?"], edit=with_agent(a.path))
    process = subprocess.Popen(oci.argv("run", "--bundle", str(b), oci.new_id()), text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_for(lambda: a.calls(), "the container's mkdir to reach the agent")
        a.kill()
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == "mkdir=1\n"
    assert "Function not implemented" in stderr


def test_a_missing_agent_fails_the_run_and_leaves_nothing(oci, bundle, tmp_path):
    missing = tmp_path / "no-agent.sock"
    b = bundle(["sh", "-c", "echo ran"], edit=with_agent(missing))
    cid = oci.new_id()
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode != 0
    assert "ran" not in result.stdout
    assert str(missing) in result.stderr
    if oci.name == "kubirun":
        assert result.stderr.startswith("kubirun: ") and result.stderr.count("\n") == 1, result.stderr
    assert_nothing_left(oci, cid, b)


def test_a_missing_agent_fails_a_detached_run_and_leaves_nothing(oci, bundle, tmp_path):
    missing = tmp_path / "no-agent.sock"
    b = bundle(["sh", "-c", "echo ran"], edit=with_agent(missing))
    cid = oci.new_id()
    result = oci.run_detached(cid, b)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert_nothing_left(oci, cid, b)
    assert "ran" not in result.out_path.read_text()


def test_a_created_container_never_runs_without_its_agent(oci, bundle, tmp_path):
    # runc loads the filter during create, which fails; kubirun during start.
    missing = tmp_path / "no-agent.sock"
    cid = oci.new_id()
    created = oci.create(cid, bundle(["sh", "-c", "echo ran"], edit=with_agent(missing)))
    if created.returncode == 0:
        started = oci.cmd("start", cid)
        assert started.returncode != 0
        assert str(missing) in started.stderr
        oci.wait_status(cid, "stopped")
    else:
        assert str(missing) in created.stderr
    assert "ran" not in created.out_path.read_text()


def test_a_listener_path_without_notify_rules_is_not_used(oci, bundle, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    b = bundle(["sh", "-c", "mkdir /tmp/x || echo denied"],
               edit=with_agent(tmp_path / "no-agent.sock", profile=profile))
    result = run(oci, b)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "denied\n"


def test_notify_rules_without_a_listener_path_are_refused_naming_it(oci, bundle):
    b = bundle(["true"], edit=with_agent(None))
    cid = oci.new_id()
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode != 0
    assert "listenerPath" in result.stderr
    if oci.name == "kubirun":
        assert result.stderr.startswith("kubirun: config.json: linux.seccomp.listenerPath: missing")
    assert_nothing_left(oci, cid, b)


def test_notify_cannot_be_the_default_action(oci, bundle, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_NOTIFY",
               "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    b = bundle(["true"], edit=with_agent(tmp_path / "agent.sock", profile=profile))
    cid = oci.new_id()
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode != 0
    assert "SCMP_ACT_NOTIFY" in result.stderr and "default action" in result.stderr
    assert_nothing_left(oci, cid, b)


# --- rootless ----------------------------------------------------------------------------


@pytest.fixture
def user_home(busybox_dir):
    yield from rootless_helpers.user_home(busybox_dir, "kubirun-notify-")


def test_a_rootless_container_sends_its_listener_too(user_home, agent):
    a = agent(Path(user_home) / "agent.sock")
    os.chmod(a.path, 0o777)  # the agent is root's; the runtime is nobody
    bundle = os.path.join(user_home, "bundle")
    assert as_user(user_home, "spec", "--rootless", "--bundle", bundle).returncode == 0
    path = os.path.join(bundle, "config.json")
    config = json.loads(Path(path).read_text())
    config["process"].update(terminal=False, args=["sh", "-c", SCRIPT])
    config["root"]["readonly"] = False
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["mode=1777"]})
    with_agent(a.path)(config)
    config["process"]["user"] = {"uid": 0, "gid": 0}
    Path(path).write_text(json.dumps(config))
    os.chown(path, NOBODY, NOBODY)
    result = as_user(user_home, "run", "--bundle", bundle, "notify1")
    assert result.returncode == 0, result.stderr
    assert_agent_answered(result.stdout, result.stderr)
    assert a.received()[0]["state"]["state"]["id"] == "notify1"
