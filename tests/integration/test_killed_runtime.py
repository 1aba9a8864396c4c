"""A runtime SIGKILLed at any point leaves only what ``delete --force``,
``kubirun run`` of the same name and ``kubirun gc`` recognise and remove.

The runtime kills itself at a named step (``KUBIRUN_TEST_KILL_AT``, see
kubirun/base/killpoint.py), as an engine's runtime is killed by an OOM killer,
a timeout or a reboot of the shim; then the reclaimer runs, and the host
must be back to the baseline: no mount under the test's directories, an
empty state root and store (no container directory, no unpack leftover,
no lock of a layer never made), no cgroup of the container, no process of
the case alive.  Bridge-mode leases and links: tests/network.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT
from tests.integration.oci_helpers import cgroup_dirs, pid_alive

MARKER = "KUBIRUN_KILL_CASE"

# Every step of `create` (kubirun.container), in order.
CREATE_STEPS = ["create.claiming", "create.claimed", "create.fifo", "create.recorded", "create.forked",
                "create.cgroup", "create.created", "create.done"]
# Before `created` is recorded: what `gc` may remove (later, a created
# container is a container like any other, until its user deletes it).
PARTIAL_CREATE_STEPS = CREATE_STEPS[:6]
# Every step of `run IMAGE` (kubirun.imagerun), its import and its delete.
RUN_STEPS = ["run.claiming", "run.claimed", "run.network", "import.staging", "import.unpacked", "run.mounted",
             *CREATE_STEPS[:-1], "run.created", "run.attached", "run.exited",
             "delete.killed", "delete.cgroup", "delete.network", "delete.store", "delete.renamed"]


@pytest.fixture
def case(tmp_path, private_store):
    return Case(tmp_path, private_store)


class Case:
    def __init__(self, tmp_path: Path, store: Path) -> None:
        self.tmp = tmp_path
        self.store = store
        self.root = Path(os.environ["KUBIRUN_ROOT"])
        self.marker = uuid.uuid4().hex
        self.env = {**os.environ, MARKER: self.marker}

    def killed(self, step: str, *args: str) -> subprocess.CompletedProcess:
        """kubirun ARGS, killed at ``step``."""
        result = self.kubirun(*args, env={**self.env, "KUBIRUN_TEST_KILL_AT": step})
        assert result.returncode == -signal.SIGKILL, (step, result.returncode, result.stderr)
        return result

    def kubirun(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Output through files: a container made by a `create` or `run -d`
        keeps the runtime's stdio open."""
        with open(self.tmp / "out", "w+") as out, open(self.tmp / "err", "w+") as err:
            result = subprocess.run([str(KUBIRUN_SCRIPT), *args], stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, env=env or self.env, timeout=60)
            out.seek(0)
            err.seek(0)
            result.stdout, result.stderr = out.read(), err.read()
        return result

    def bundle(self, rootfs: Path, *args: str) -> Path:
        bundle = self.tmp / "bundle"
        bundle.mkdir(exist_ok=True)
        assert self.kubirun("spec", "--bundle", str(bundle)).returncode == 0
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"].update(args=list(args) or ["sleep", "1000"], terminal=False)
        config["process"]["env"].append(f"{MARKER}={self.marker}")
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    # --- the baseline ----------------------------------------------------------

    def leftovers(self, name: str) -> dict:
        found = {}
        if self.root.exists() and os.listdir(self.root):
            found["state root"] = sorted(os.listdir(self.root))
        for sub in ("containers", "tmp"):
            if (self.store / sub).exists() and os.listdir(self.store / sub):
                found[f"store/{sub}"] = sorted(os.listdir(self.store / sub))
        if (self.store / "locks").exists():
            layers = set(os.listdir(self.store / "layers"))
            locks = [n for n in os.listdir(self.store / "locks") if n != "store" and n not in layers]
            if locks:
                found["store/locks"] = locks
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if str(self.tmp) in line.split()[4]]
        if mounts:
            found["mounts"] = mounts
        if cgroup_dirs(f"{TEST_CGROUP_PARENT}/{name}"):
            found["cgroups"] = [str(d) for d in cgroup_dirs(f"{TEST_CGROUP_PARENT}/{name}")]
        processes = self.processes()
        if processes:
            found["processes"] = processes
        return found

    def processes(self) -> list[int]:
        """Live processes of this case: its runtimes, inits, exec'd ones."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"{MARKER}={self.marker}".encode() not in f.read().split(b"\0"):
                        continue
            except OSError:
                continue
            if pid_alive(int(pid)):
                found.append(int(pid))
        return found

    def assert_clean(self, name: str) -> None:
        deadline = time.monotonic() + 5  # a SIGKILLed process takes a moment to go
        while (left := self.leftovers(name)) and set(left) == {"processes"} \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert left == {}, f"left behind: {left}"


# --- create and run -d (OCI bundles) ------------------------------------------------------

@pytest.mark.parametrize("step", CREATE_STEPS)
def test_a_create_killed_at_any_step_is_removed_by_delete_force(case, busybox_dir, step):
    bundle = case.bundle(busybox_dir)
    case.killed(step, "create", "--bundle", str(bundle), "c1")
    result = case.kubirun("delete", "--force", "c1")
    assert result.returncode == 0, result.stderr
    case.assert_clean("c1")
    assert case.kubirun("create", "--bundle", str(bundle), "c1").returncode == 0  # the id is free
    assert case.kubirun("delete", "--force", "c1").returncode == 0
    case.assert_clean("c1")


@pytest.mark.parametrize("step", PARTIAL_CREATE_STEPS)
def test_a_create_killed_before_created_is_removed_by_gc(case, busybox_dir, step):
    case.killed(step, "create", "--bundle", str(case.bundle(busybox_dir)), "c1")
    result = case.kubirun("gc")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed ") and "c1" in result.stdout, result.stdout
    case.assert_clean("c1")


@pytest.mark.parametrize("step", ["create.forked", "create.done"])
def test_a_run_detached_killed_is_removed_by_delete_force(case, busybox_dir, step):
    case.killed(step, "run", "--bundle", str(case.bundle(busybox_dir)), "--detach", "c1")
    assert case.kubirun("delete", "--force", "c1").returncode == 0
    case.assert_clean("c1")


def test_gc_leaves_a_created_container_alone(case, busybox_dir):
    assert case.kubirun("create", "--bundle", str(case.bundle(busybox_dir)), "c1").returncode == 0
    try:
        assert case.kubirun("gc").stdout == ""
        assert json.loads(case.kubirun("state", "c1").stdout)["status"] == "created"
    finally:
        case.kubirun("delete", "--force", "c1")
    case.assert_clean("c1")


@pytest.mark.parametrize("step", ["delete.killed", "delete.cgroup", "delete.store", "delete.renamed"])
def test_a_delete_killed_at_any_step_is_finished_by_delete_force(case, busybox_dir, step):
    assert case.kubirun("run", "--bundle", str(case.bundle(busybox_dir)), "-d", "c1").returncode == 0
    case.killed(step, "delete", "--force", "c1")
    assert case.kubirun("delete", "--force", "c1").returncode == 0
    case.assert_clean("c1")


# --- run IMAGE ------------------------------------------------------------------------------

@pytest.mark.parametrize("step", RUN_STEPS)
@pytest.mark.parametrize("reclaimer", ["delete --force", "run", "gc"])
def test_an_image_run_killed_at_any_step_is_removed(case, busybox_tarball, step, reclaimer):
    run = ("run", "--name", "r1", "-e", f"{MARKER}={case.marker}", str(busybox_tarball), "--")
    case.killed(step, *run, "true")
    if reclaimer == "delete --force":
        result = case.kubirun("delete", "--force", "r1")
    elif reclaimer == "run":
        result = case.kubirun(*run, "echo", "again")
        assert result.stdout == "again\n"
    else:
        result = case.kubirun("gc")
    assert result.returncode == 0, result.stderr
    case.assert_clean("r1")


def test_images_rm_accepts_the_image_of_a_reclaimed_run(case, busybox_tarball):
    case.killed("run.created", "run", "--name", "r1", str(busybox_tarball), "--", "true")
    assert "used by container r1" in case.kubirun("images", "rm", str(busybox_tarball)).stderr
    assert case.kubirun("delete", "--force", "r1").returncode == 0
    result = case.kubirun("images", "rm", str(busybox_tarball))
    assert result.returncode == 0, result.stderr


# --- exec -----------------------------------------------------------------------------------

# The caller of `kubirun exec` (an engine's shim, a subreaper) inherits the
# exec'd process when the runtime dies, and reaps it when it gets to it.
SLOW_REAPER = r"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
runtime = subprocess.Popen(sys.argv[1:])
runtime.wait()
print(runtime.returncode, flush=True)
sys.stdin.read()  # until the test is done: no reaping meanwhile
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


@pytest.mark.parametrize("step", ["exec.forked", "exec.ready"])
def test_delete_force_does_not_wait_for_an_orphaned_exec_to_be_reaped(case, busybox_dir, step):
    assert case.kubirun("run", "--bundle", str(case.bundle(busybox_dir)), "-d", "c1").returncode == 0
    reaper = subprocess.Popen([sys.executable, "-c", SLOW_REAPER, str(KUBIRUN_SCRIPT), "exec", "c1",
                               "sleep", "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**case.env, "KUBIRUN_TEST_KILL_AT": step})
    try:
        assert reaper.stdout.readline() == f"{-signal.SIGKILL}\n"
        result = case.kubirun("delete", "--force", "c1")
        assert result.returncode == 0, result.stderr
        assert not (case.root / "c1").exists()
    finally:
        reaper.communicate("", timeout=30)
    case.assert_clean("c1")


# --- damaged state ----------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b'{"ociVersion": "1.0', b"{}", b"[]", b"\xff"])
def test_a_damaged_state_file_hides_only_its_container(case, busybox_dir, content):
    bundle = case.bundle(busybox_dir)
    for name in ("c1", "c2"):
        assert case.kubirun("create", "--bundle", str(bundle), name).returncode == 0
    (case.root / "c1" / "state.json").write_bytes(content)
    try:
        listed = case.kubirun("list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert [c["id"] for c in json.loads(listed.stdout)] == ["c2"]
        assert "c1" in listed.stderr and "corrupt" in listed.stderr
        result = case.kubirun("delete", "--force", "c1")
        assert result.returncode == 0, result.stderr
        assert not (case.root / "c1").exists()
    finally:
        case.kubirun("delete", "--force", "c2")
    case.assert_clean("c1")  # its init and cgroup too: kubirun's default cgroup of the id
