"""The library's inits from spares (kubirun.zygote): the fork server's
zygote forks each init before a create asks for it, and the create hands
it its config.  What an orchestrator sees must be what an init forked on
demand gives: the same container, network namespace, error, clean-up,
and the same death when the fork server dies.

Spares serve root on a host whose inits are not born in a cgroup: pure
v1 or pure v2.  On a hybrid host (this project's machines: v1 plus a
cgroup2 mount at /sys/fs/cgroup/unified) every init of root's is born in
the unified hierarchy and none would be a spare, so each test runs its
script in a mount namespace of its own where that mount is unmounted, as
bench/library_start.py does for crun: the host's mounts are untouched.
Each script deletes what it made there (a container made with v1's view
is not removed from the hybrid one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TEST_CGROUP_PARENT, remove_cgroup_parent

UNIFIED = "/sys/fs/cgroup/unified"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spares serve root only")

# Every script's head: its arguments (state root, busybox root, cgroup
# parent, scratch directory), ``bundle(name, args, edit)`` (a bundle of
# that root in a cgroup of its own), ``children(pid)``, ``server(rt)``
# (the fork server's PID), ``wait_for``, ``warm_with_helpers``,
# ``exit_code``, ``gone(pid)`` (ended: a zombie or no more), and
# ``report`` (printed as the script's last line).
HEAD = """\
import json, os, sys, time
from kubirun.api import Runtime, Stdio
from kubirun.spec import default_config
from tests.procs import children

state, busybox, parent, scratch = sys.argv[1:5]
report = {}

def bundle(name, args, edit=None):
    directory = os.path.join(scratch, name)
    os.makedirs(directory)
    config = default_config()
    config["root"] = {"path": busybox, "readonly": True}
    config["process"].update(terminal=False, args=args)
    config["linux"]["cgroupsPath"] = f"{parent}/{name}"
    if edit:
        edit(config)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory

def server(rt):
    return rt._server.pid

def wait_for(predicate, seconds=5):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

def warm_with_helpers():
    # A Runtime whose server has made a container, its PID, and its
    # children once they are only its zygote and the zygote's next spare
    # (the warm container's init reaped): report["helpers"] says if so.
    rt = Runtime(root=state)
    rt.create("warm", bundle("warm", ["true"])).delete(force=True)
    pid = server(rt)
    report["helpers"] = wait_for(lambda: len(children(pid)) == 2)
    return rt, pid, children(pid)

def exit_code(rt, name, args):
    # Create, start and wait for a container of bundle(name, args); deleted.
    box = rt.create(name, bundle(name, args))
    try:
        box.start()
        return box.wait(timeout=30).code
    finally:
        box.delete(force=True)

def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped between open and read
        return True
"""
TAIL = """
print(json.dumps(report))
"""


def hybrid() -> bool:
    return os.path.ismount(UNIFIED)


def run_script(body: str, tmp_path, busybox_dir, name: str) -> dict:
    """Run HEAD + ``body`` in a child interpreter where spares serve (in a
    mount namespace without the unified mount, on a hybrid host); its
    ``report``."""
    parent = f"{TEST_CGROUP_PARENT}/{name}"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = [sys.executable, "-c", HEAD + body + TAIL, str(tmp_path / "state"), str(busybox_dir),
            parent, str(scratch)]
    if hybrid():
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f'umount {UNIFIED} && exec "$0" "$@"', *argv]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    finally:
        remove_cgroup_parent(parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_an_init_is_a_spare_forked_before_the_create(tmp_path, busybox_dir):
    """The init of a create was already a child of the fork server, waiting,
    before the create was asked for; the container is what it would be."""
    report = run_script("""
with Runtime(root=state) as rt:
    rt.create("warm", bundle("warm", ["true"])).delete(force=True)
    report["runs"] = []
    for n in range(3):
        ready = children(server(rt))
        box = rt.create(f"c{n}", bundle(f"c{n}", ["sh", "-c", "echo out; echo err >&2; exit 3"]),
                        stdio=Stdio(stdout=Stdio.PIPE, stderr=Stdio.PIPE))
        try:
            pid = box.state()["pid"]
            box.start()
            report["runs"].append({"ready before": pid in ready, "parent": server(rt),
                                   "stdout": box.stdout.read().decode(),
                                   "stderr": box.stderr.read().decode(),
                                   "code": box.wait(timeout=30).code})
        finally:
            box.delete(force=True)
""", tmp_path, busybox_dir, "spare-init")
    for run in report["runs"]:
        assert run["ready before"], run
        assert (run["stdout"], run["stderr"], run["code"]) == ("out\n", "err\n", 3)


def test_a_spares_network_namespace_is_new_with_loopback_up(tmp_path, busybox_dir):
    """A spare makes its network namespace while it waits: the container
    that asks for a new one gets it, only its loopback, up."""
    report = run_script("""
with Runtime(root=state) as rt:
    for n in range(2):
        box = rt.create(f"net{n}", bundle(f"net{n}", ["sh", "-c",
                        "tail -n +3 /proc/net/dev | cut -d: -f1; ip link show lo"]),
                        stdio=Stdio(stdout=Stdio.PIPE))
        try:
            box.start()
            report[f"out{n}"] = box.stdout.read().decode()
            box.wait(timeout=30)
        finally:
            box.delete(force=True)
""", tmp_path, busybox_dir, "spare-net")
    for n in range(2):
        interfaces, link = report[f"out{n}"].split("\n", 1)
        assert interfaces.split() == ["lo"]
        assert "UP" in link.split(">")[0]


def test_a_container_without_a_network_namespace_has_the_hosts(tmp_path, busybox_dir):
    """The spare's own network namespace is not the container's when the
    config asks for none: it shares the caller's, as an init forked on
    demand would."""
    report = run_script("""
def host_network(config):
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                     if ns["type"] != "network"]
with open("/proc/net/dev") as f:
    report["host"] = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
with Runtime(root=state) as rt:
    box = rt.create("hostnet", bundle("hostnet", ["sh", "-c", "tail -n +3 /proc/net/dev"],
                    host_network), stdio=Stdio(stdout=Stdio.PIPE))
    try:
        box.start()
        lines = box.stdout.read().decode().splitlines()
        report["container"] = sorted(line.split(":")[0].strip() for line in lines)
        box.wait(timeout=30)
    finally:
        box.delete(force=True)
""", tmp_path, busybox_dir, "spare-hostnet")
    assert report["container"] == report["host"]


def test_a_container_joining_a_network_namespace_by_path_is_in_it(tmp_path, busybox_dir):
    """Not the spare's: the one at the path, told by its loopback (down,
    as a new namespace's is, with an MTU of the test's)."""
    name = f"kubirun-spare-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "ip", "link", "set", "lo", "mtu",
                        "1234"], check=True)
        report = run_script(f"""
def joined(config):
    config["linux"]["namespaces"] = [dict(ns, path="/run/netns/{name}") if ns["type"] == "network"
                                     else ns for ns in config["linux"]["namespaces"]]
with Runtime(root=state) as rt:
    box = rt.create("joiner", bundle("joiner", ["ip", "link", "show", "lo"], joined),
                    stdio=Stdio(stdout=Stdio.PIPE))
    try:
        box.start()
        report["link"] = box.stdout.read().decode()
        box.wait(timeout=30)
    finally:
        box.delete(force=True)
""", tmp_path, busybox_dir, "spare-join")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    flags, rest = report["link"].split(">", 1)
    assert "mtu 1234" in rest
    assert "UP" not in flags.split("<")[1].split(",")


def test_a_failed_create_from_a_spare_leaves_nothing_and_the_next_works(tmp_path, busybox_dir):
    report = run_script("""
with Runtime(root=state) as rt:
    rt.create("warm", bundle("warm", ["true"])).delete(force=True)
    try:
        rt.create("bad", bundle("bad", ["/no/such/program"]))
        report["error"] = None
    except Exception as err:
        report["error"] = str(err)
    report["state"] = sorted(os.listdir(state))
    report["cgroups"] = [h for h in os.listdir("/sys/fs/cgroup")
                         if os.path.isdir(f"/sys/fs/cgroup/{h}{parent}/bad")]
    # reaped: what is left is the zygote and its next spare, none a zombie
    report["reaped"] = wait_for(lambda: len(children(server(rt))) == 2
                                and not any(gone(pid) for pid in children(server(rt))))
    report["next"] = exit_code(rt, "good", ["true"])
""", tmp_path, busybox_dir, "spare-bad")
    assert report["error"] and "\n" not in report["error"]
    assert "/no/such/program" in report["error"]
    assert report["state"] == [] and report["cgroups"] == []
    assert report["reaped"]
    assert report["next"] == 0


def test_an_exec_into_a_created_container_cannot_read_its_spare_init(tmp_path, busybox_dir):
    """CVE-2019-5736: until its execve, an init is the host's Python; a
    spare is non-dumpable from its birth, so a process of the container
    (an exec, before `start`) cannot open /proc/1/exe."""
    report = run_script("""
with Runtime(root=state) as rt:
    box = rt.create("victim", bundle("victim", ["sleep", "30"]))
    try:
        probe = box.exec(["sh", "-c", "cat /proc/1/exe > /dev/null && echo readable"],
                         stdio=Stdio(stdout=Stdio.PIPE, stderr=Stdio.PIPE))
        report["out"], report["err"] = probe.stdout.read().decode(), probe.stderr.read().decode()
        probe.wait(timeout=30)
    finally:
        box.delete(force=True)
""", tmp_path, busybox_dir, "spare-exe")
    assert report["out"] == ""
    assert "Permission denied" in report["err"]


def test_the_zygote_and_its_spare_die_with_the_fork_server(tmp_path, busybox_dir):
    report = run_script("""
import signal
rt, pid, helpers = warm_with_helpers()
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
report["gone"] = wait_for(lambda: all(gone(helper) for helper in helpers))
report["after"] = exit_code(rt, "after", ["true"])
rt.close()
""", tmp_path, busybox_dir, "spare-kill")
    assert report["helpers"]
    assert report["gone"]
    assert report["after"] == 0


def test_close_ends_the_zygote_and_its_spare(tmp_path, busybox_dir):
    report = run_script("""
rt, pid, helpers = warm_with_helpers()
rt.close()
report["gone"] = wait_for(lambda: gone(pid) and all(gone(helper) for helper in helpers))
report["left"] = sorted(children())
""", tmp_path, busybox_dir, "spare-close")
    assert report["helpers"] and report["gone"]
    assert report["left"] == []


@pytest.mark.parametrize("step", ["create.claimed", "create.fifo", "create.forked", "create.recorded",
                                  "create.cgroup", "create.created"])
def test_a_fork_server_killed_in_a_create_from_a_spare_leaves_what_delete_force_removes(
        tmp_path, busybox_dir, step):
    """With a spare, the init is handed its config before the first record
    (creation.init_before_record): a server killed at any step of that
    create takes the init with it (PDEATHSIG, set at the spare's birth),
    and `delete --force` removes the rest, as after a killed `kubirun
    create` (test_killed_runtime.py).  The server dies at STEP by
    KUBIRUN_TEST_KILL_AT, which it inherits; its zygote, spare and the
    init carry a marker in their environment, by which they are found."""
    report = run_script(f"""
import subprocess, uuid
marker = uuid.uuid4().hex
os.environ["KUBIRUN_SPARE_CASE"] = marker
os.environ["KUBIRUN_TEST_KILL_AT"] = "{step}"
victim = bundle("victim", ["sleep", "30"])
rt = Runtime(root=state)
try:
    rt.create("victim", victim)
    report["error"] = None
except Exception as err:
    report["error"] = str(err)
del os.environ["KUBIRUN_TEST_KILL_AT"]

def marked_alive():
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{{pid}}/environ", "rb") as f:
                if marker.encode() in f.read() and not gone(pid):
                    alive.append(int(pid))
        except OSError:
            pass
    return alive

report["ended"] = wait_for(lambda: not marked_alive())
deleted = subprocess.run([sys.executable, "-m", "kubirun", "--root", state, "delete", "--force",
                          "victim"], capture_output=True, text=True)
report["delete"] = [deleted.returncode, deleted.stderr]
report["state"] = sorted(os.listdir(state)) if os.path.isdir(state) else []
report["cgroups"] = [h for h in os.listdir("/sys/fs/cgroup")
                     if os.path.isdir(f"/sys/fs/cgroup/{{h}}{{parent}}/victim")]
rt.close()
""", tmp_path, busybox_dir, f"spare-killed-{step.split('.')[1]}")
    assert report["error"], "the create reported no failure"
    assert report["ended"], "a process of the killed server's lived on"
    assert report["delete"][0] == 0, report["delete"]
    assert report["state"] == [] and report["cgroups"] == []


def test_creates_go_on_when_the_spare_or_the_zygote_is_killed(tmp_path, busybox_dir):
    """Someone kills the waiting spare, then the zygote: each create after
    that still makes its container (from the next spare, or forked by the
    server once the zygote is gone), and nothing is left a zombie."""
    report = run_script("""
import signal

def own_pid_namespace(pid):
    # A spare is PID 1 of a PID namespace of its own: two NSpid entries.
    with open(f"/proc/{pid}/status") as f:
        return len(next(line for line in f if line.startswith("NSpid:")).split()) > 2

rt, pid, helpers = warm_with_helpers()
spare = next(helper for helper in helpers if own_pid_namespace(helper))
zygote = next(helper for helper in helpers if helper != spare)
os.kill(spare, signal.SIGKILL)
report["after spare"] = exit_code(rt, "after-spare", ["true"])
os.kill(zygote, signal.SIGKILL)
report["zygote reaped"] = wait_for(lambda: zygote not in children(pid))
report["after zygote"] = [exit_code(rt, f"after-zygote{n}", ["true"]) for n in range(3)]
report["zombies"] = not wait_for(lambda: not any(gone(child) for child in children(pid)))
rt.close()
""", tmp_path, busybox_dir, "spare-killed-helpers")
    assert report["after spare"] == 0
    assert report["zygote reaped"]
    assert report["after zygote"] == [0, 0, 0]
    assert not report["zombies"]


def test_a_spares_ipc_namespace_is_the_containers_only_when_it_asks_for_a_new_one(
        tmp_path, busybox_dir):
    """A spare makes an IPC namespace while it waits too: a container that
    asks for a new one gets one of its own (not the host's, not the last
    container's); one that asks for none shares the caller's."""
    report = run_script("""
def no_ipc(config):
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                     if ns["type"] != "ipc"]

def ipc_of(rt, name, edit=None):
    box = rt.create(name, bundle(name, ["readlink", "/proc/self/ns/ipc"], edit),
                    stdio=Stdio(stdout=Stdio.PIPE))
    try:
        box.start()
        return box.stdout.read().decode().strip()
    finally:
        box.wait(timeout=30)
        box.delete(force=True)

report["host"] = os.readlink("/proc/self/ns/ipc")
with Runtime(root=state) as rt:
    report["new"] = [ipc_of(rt, f"ipc{n}") for n in range(2)]
    report["none"] = ipc_of(rt, "noipc", no_ipc)
""", tmp_path, busybox_dir, "spare-ipc")
    first, second = report["new"]
    assert first != report["host"] and second != report["host"] and first != second
    assert report["none"] == report["host"]
