"""CVE-2019-5736 and CVE-2016-9962 class: while kubirun sets up a process
inside a container, that process is Python (the runtime's own
interpreter): an `exec` process, or the init of a container that joins
another's PID namespace.  It must stay out of the container's reach until
it has become the container's program: non-dumpable, so no container
process may open its /proc/PID/exe (to overwrite the runtime, as the
runc exploit did), read its memory or ptrace it; and without
CAP_SYS_PTRACE the container cannot override that.

The attacker (attacker.c, built static here) runs as a container's
process and tries all of those on every process that is not busybox,
while we `exec` into that container and start containers in its PID
namespace, over and over."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT

ATTACKER_SOURCE = os.path.join(os.path.dirname(__file__), "attacker.c")
ROUNDS = 30
# what /proc/PID/comm says of kubirun's processes (its launcher script)
RUNTIME_NAMES = ["kubirun", "python", "python3", "python3.11"]


@pytest.fixture(scope="module")
def attacker(tmp_path_factory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (make test installs it)")
    binary = str(tmp_path_factory.mktemp("attacker") / "attacker")
    result = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", binary, ATTACKER_SOURCE],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"cannot build the attacker: {result.stderr}"
    return binary


def _bundle(directory, busybox_dir, args, attacker=None, edit=None) -> str:
    os.makedirs(directory, exist_ok=True)
    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(directory)], check=True)
    config_path = os.path.join(directory, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=args)
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    if attacker:
        config["mounts"].append({"destination": "/attacker", "type": "bind", "source": attacker,
                                 "options": ["bind", "ro"]})
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/reach-{os.path.basename(directory)}"
    if edit:
        edit(config)
    assert "CAP_SYS_PTRACE" not in config["process"]["capabilities"]["bounding"]
    with open(config_path, "w") as f:
        json.dump(config, f)
    return str(directory)


def test_a_container_cannot_reach_the_runtimes_setup_processes(tmp_path, busybox_dir, attacker):
    root = ["--root", str(tmp_path / "state")]
    target = _bundle(tmp_path / "target", busybox_dir, ["/attacker", "60", *RUNTIME_NAMES], attacker)
    out_path = tmp_path / "attack.out"
    with open(out_path, "w") as out:
        started = subprocess.run([str(KUBIRUN_SCRIPT), *root, "run", "-d", "--bundle", target, "target"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
    assert started.returncode == 0, out_path.read_text()
    joined = []
    try:
        deadline = time.monotonic() + 10
        while "ready" not in out_path.read_text():
            assert time.monotonic() < deadline, "the attacker did not start"
            time.sleep(0.02)
        pid = json.loads(subprocess.run([str(KUBIRUN_SCRIPT), *root, "state", "target"],
                                        capture_output=True, text=True).stdout)["pid"]

        def join_pid_namespace(config):
            config["linux"]["namespaces"] = [
                dict(ns, path=f"/proc/{pid}/ns/pid") if ns["type"] == "pid" else ns
                for ns in config["linux"]["namespaces"]]
        for i in range(ROUNDS):
            # an exec process, set up in the container's namespaces
            result = subprocess.run([str(KUBIRUN_SCRIPT), *root, "exec", "target", "true"],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            # an init, set up in the attacker's PID namespace
            if i % 3 == 0:
                name = f"joiner{i}"
                joined.append(name)
                b = _bundle(tmp_path / name, busybox_dir, ["true"], edit=join_pid_namespace)
                result = subprocess.run([str(KUBIRUN_SCRIPT), *root, "run", "--bundle", b, name],
                                        capture_output=True, text=True, timeout=30,
                                        stdin=subprocess.DEVNULL)
                assert result.returncode == 0, result.stderr
        lines = out_path.read_text().splitlines()
        reached = [line for line in lines if line != "ready" and not line.startswith("saw ")]
        assert reached == [], f"the container reached the runtime's processes: {reached}"
        assert any(line.startswith("saw ") for line in lines), "the attacker never saw a target"
    finally:
        for name in ["target", *joined]:
            subprocess.run([str(KUBIRUN_SCRIPT), *root, "delete", "--force", name], timeout=30,
                           capture_output=True)


def test_the_attacker_does_reach_a_dumpable_process(tmp_path, busybox_dir, attacker):
    """The control: the same attacker reports a process it can reach (a
    copy of itself under another name, which is not busybox)."""
    root = ["--root", str(tmp_path / "state")]
    b = _bundle(tmp_path / "control", busybox_dir,
                ["sh", "-c", "cp /attacker /tmp/victim; /tmp/victim 3 none >/dev/null & /attacker 2 victim"],
                attacker)
    result = subprocess.run([str(KUBIRUN_SCRIPT), *root, "run", "--bundle", b, "control"],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for how in ("open-exe-path", "open-exe-write", "open-mem", "ptrace-seize"):
        assert f" {how} victim" in result.stdout, result.stdout
