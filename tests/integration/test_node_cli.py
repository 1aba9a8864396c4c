"""``kubirun node serve`` and kubectl's verbs on it, as a user runs them:
a pasted pod applied, `get pods` showing 1/1 Running for a healthy one and
CrashLoopBackOff with RESTARTS climbing for a failing one, logs, exec,
describe, delete; the API socket is root's only."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from tests.conftest import (BUSYBOX_IMAGE, KUBIRUN_SCRIPT, TEST_CGROUP_PARENT, kubirun,
                            remove_cgroup_parent)

PODS = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo hello; sleep 1000"]
    readinessProbe:
      exec:
        command: ["true"]
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo dying; exit 1"]
"""


def _serve(tmp_path, root) -> subprocess.Popen:
    socket_path = root / "node.sock"
    daemon = subprocess.Popen(
        [str(KUBIRUN_SCRIPT), "--root", str(root), "node", "serve", "--store",
         str(tmp_path / "store"), "--cgroup-parent", f"{TEST_CGROUP_PARENT}/cli"],
        stderr=open(tmp_path / "serve.log", "a"))
    for _ in range(400):
        if socket_path.exists() and kubirun("--root", str(root), "node", "get", "pods"
                                            ).returncode == 0:
            break
        time.sleep(0.05)
    return daemon


@pytest.fixture
def node(tmp_path):
    """A running `kubirun node serve`: the CLI's global options to reach
    it, its socket, and a list holding its process (a test may replace it)."""
    root = tmp_path / "node-state"
    options = ["--root", str(root)]
    daemons = [_serve(tmp_path, root)]
    socket_path = root / "node.sock"
    try:
        yield options, socket_path, daemons
    finally:
        names = kubirun(*options, "node", "get", "pods", "-o", "name").stdout.split()
        for name in names:
            kubirun(*options, "node", "delete", "pod", name.split("/")[1], "--grace-period", "0")
        daemons[-1].send_signal(signal.SIGTERM)
        daemons[-1].wait(timeout=60)
        assert not socket_path.exists()
        remove_cgroup_parent(f"{TEST_CGROUP_PARENT}/cli")
        leftovers = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
        assert not leftovers, f"left behind: {leftovers}"


def _until(options, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        table = kubirun(*options, "node", "get", "pods").stdout
        rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {table}")
        time.sleep(0.2)


def test_a_healthy_pod_runs_and_a_failing_one_crash_loops(node, tmp_path):
    options, socket_path, _ = node
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(PODS)
    applied = kubirun(*options, "node", "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["pod/web created", "pod/crash created"]
    rows = _until(options, lambda r: r.get("web", [""] * 3)[1:3] == ["1/1", "Running"]
                  and r.get("crash", [""] * 4)[2] == "CrashLoopBackOff")
    assert int(rows["crash"][3]) >= 1
    header = kubirun(*options, "node", "get", "pods").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert kubirun(*options, "node", "logs", "web").stdout == "hello\n"
    assert kubirun(*options, "node", "logs", "crash", "--previous").stdout == "dying\n"
    executed = kubirun(*options, "node", "exec", "web", "--", "sh", "-c", "hostname; exit 3")
    assert (executed.returncode, executed.stdout) == (3, "web\n")
    described = kubirun(*options, "node", "describe", "pod", "crash").stdout
    assert "Reason:      CrashLoopBackOff" in described
    assert described.rstrip().splitlines()[-1].split()[:2] == ["Warning", "BackOff"]
    assert '"phase": "Running"' in kubirun(*options, "node", "get", "pod", "web", "-o",
                                           "json").stdout
    deleted = kubirun(*options, "node", "delete", "pod", "web", "--grace-period", "0")
    assert deleted.stdout == 'pod "web" deleted\n'
    gone = kubirun(*options, "node", "get", "pod", "web")
    assert (gone.returncode, gone.stderr) == (1, 'kubirun: pods "web" not found\n')


def test_a_bad_manifest_is_one_line_and_starts_nothing(node, tmp_path):
    options, _, _ = node
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(PODS.replace("periodSeconds: 1", "periodSeconds: one"))
    applied = kubirun(*options, "node", "apply", "-f", str(manifest))
    assert applied.returncode == 1
    assert applied.stderr == ("kubirun: spec.containers[0].readinessProbe.periodSeconds:"
                              " expected an integer\n")
    assert kubirun(*options, "node", "get", "pods").stderr == "No resources found.\n"


def test_without_a_node_the_cli_says_so(tmp_path):
    result = kubirun("--root", str(tmp_path / "none"), "node", "get", "pods")
    assert result.returncode == 1
    assert "is `kubirun node serve` running?" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_the_supervisor_killed_and_restarted_adopts_its_pods(node, tmp_path):
    options, _, daemons = node
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(PODS)
    assert kubirun(*options, "node", "apply", "-f", str(manifest)).returncode == 0
    rows = _until(options, lambda r: r.get("web", [""] * 3)[1:3] == ["1/1", "Running"]
                  and r.get("crash", [""] * 4)[2] == "CrashLoopBackOff")
    before = kubirun(*options, "node", "get", "pod", "web", "-o", "json").stdout
    web_id = json.loads(before)["status"]["containerStatuses"][0]["containerID"]
    crash_restarts = int(rows["crash"][3])
    daemons[0].kill()  # kill -9: the containers go on
    daemons[0].wait()
    daemons.append(_serve(tmp_path, tmp_path / "node-state"))
    rows = _until(options, lambda r: r.get("web", [""] * 3)[1:3] == ["1/1", "Running"])
    after = json.loads(kubirun(*options, "node", "get", "pod", "web", "-o", "json").stdout)
    status = after["status"]["containerStatuses"][0]
    assert (status["containerID"], status["restartCount"]) == (web_id, 0)  # the same one
    assert int(rows["crash"][3].split()[0]) >= crash_restarts  # its count and ladder kept
    # its output while no supervisor read waited in its FIFO; probes go on
    assert kubirun(*options, "node", "logs", "web").stdout == "hello\n"
    assert kubirun(*options, "node", "exec", "web", "--", "true").returncode == 0


def test_logs_follow_until_the_container_ends_and_tail(node, tmp_path):
    options, _, _ = node
    manifest = tmp_path / "count.json"
    manifest.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "count"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "app", "image": str(BUSYBOX_IMAGE),
            "command": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.5; done"]}]}}))
    assert kubirun(*options, "node", "apply", "-f", str(manifest)).returncode == 0
    _until(options, lambda r: "count" in r)
    followed = kubirun(*options, "node", "logs", "-f", "count", timeout=30)
    assert followed.stdout == "1\n2\n3\n"
    assert kubirun(*options, "node", "logs", "count", "--tail", "1").stdout == "3\n"
    wrong = kubirun(*options, "node", "logs", "count", "-c", "nope")
    assert wrong.stderr == "kubirun: container nope is not valid for pod count\n"


def _children_of(pid: int) -> dict[int, tuple[str, str]]:
    """pid: (state, command line) of ``pid``'s children."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = (fields[0], cmdline)
    return found


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_a_container_that_exits_while_no_supervisor_runs_keeps_its_exit_code(node, tmp_path,
                                                                             stop):
    options, _, daemons = node
    signals = tmp_path / "signals"
    signals.mkdir()
    manifest = tmp_path / "late.json"
    manifest.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "app", "image": str(BUSYBOX_IMAGE),
            "command": ["sh", "-c", "while [ ! -e /signals/go ]; do sleep 0.1; done;"
                        " rm /signals/go; exit 3"],
            "volumeMounts": [{"name": "signals", "mountPath": "/signals"}]}],
            "volumes": [{"name": "signals", "hostPath": {"path": str(signals)}}]}}))
    assert kubirun(*options, "node", "apply", "-f", str(manifest)).returncode == 0
    _until(options, lambda r: r.get("late", [""] * 3)[1:3] == ["1/1", "Running"])
    status = json.loads(kubirun(*options, "node", "get", "pod", "late", "-o", "json").stdout)
    container_id = status["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    servers = [pid for pid, (_, cmd) in _children_of(daemons[0].pid).items()
               if "kubirun.forkserver" in cmd]
    assert len(servers) == 1
    daemons[0].send_signal(stop)  # killed, or stopped leaving its pods running
    daemons[0].wait()
    (signals / "go").touch()  # the container exits 3 now, with no supervisor
    exit_file = tmp_path / "node-state" / "node" / "containers" / container_id / "exit.json"
    deadline = time.monotonic() + 30
    while (signals / "go").exists() or not exit_file.exists():
        assert time.monotonic() < deadline, "the container's exit was not recorded"
        time.sleep(0.1)
    # its reaper, the killed supervisor's fork server, left no zombie behind
    assert all(state != "Z" for state, _ in _children_of(servers[0]).values())
    daemons.append(_serve(tmp_path, tmp_path / "node-state"))
    _until(options, lambda r: r.get("late", [""] * 4)[1:4] == ["1/1", "Running", "1"])
    status = json.loads(kubirun(*options, "node", "get", "pod", "late", "-o", "json").stdout)
    app = status["status"]["containerStatuses"][0]
    assert app["lastState"]["terminated"]["exitCode"] == 3
    assert app["lastState"]["terminated"]["reason"] == "Error"
    assert app["restartCount"] == 1
    # the old fork server ends with the last container it made (the pod's
    # sandbox), and is reaped in turn: no zombie
    assert kubirun(*options, "node", "delete", "pod", "late", "--grace-period", "0"
                   ).returncode == 0
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{servers[0]}"):
        assert time.monotonic() < deadline, "the old fork server is still there"
        time.sleep(0.1)
