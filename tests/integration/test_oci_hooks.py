"""OCI hooks (config.md#posix-platform-hooks): when they run, what they get
on stdin, and what their failure does; one behaviour per test, against
kubirun and runc (``oci``).

The hooks here are /bin/sh scripts of the host appending a line
``PHASE <state JSON>`` to a log file, except startContainer hooks, which
run in the container: they use the container's (busybox) sh and write to
the same log through a bind mount.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.oci_helpers import HOST_SH, assert_nothing_left, wait_for

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# one write per hook (the log is opened O_APPEND), so that startContainer
# and poststart hooks, which may run at the same time, do not interleave
RECORD = 'state=$(cat); printf "%s %s\\n" "$PHASE" "$state" >> "$LOG"'
IN_CONTAINER_LOG_DIR = "/tmp/hooklog"


class HookLog:
    def __init__(self, directory) -> None:
        directory.mkdir()
        self.dir = directory
        self.path = directory / "log"
        self.path.touch()

    def hook(self, phase: str, script: str = RECORD, **extra) -> dict:
        in_container = phase == "startContainer"
        log = f"{IN_CONTAINER_LOG_DIR}/log" if in_container else str(self.path)
        return {"path": "/bin/sh" if in_container else HOST_SH,
                "args": ["sh", "-c", script],
                "env": [PATH_ENV, f"PHASE={phase}", f"LOG={log}"], **extra}

    def entries(self) -> list[tuple[str, dict]]:
        found = []
        for line in self.path.read_text().split("\n")[:-1]:  # whole lines only
            phase, _, payload = line.partition(" ")
            found.append((phase, json.loads(payload) if payload.strip() else None))
        return found

    def phases(self) -> list[str]:
        return [phase for phase, _ in self.entries()]


@pytest.fixture
def hook_log(tmp_path) -> HookLog:
    return HookLog(tmp_path / "hooklog")


def with_hooks(hook_log: HookLog, hooks: dict):
    """An ``edit`` for the bundle factory: these hooks, and the log directory
    mounted in the container (for startContainer hooks)."""
    def edit(config):
        config["hooks"] = hooks
        config["mounts"].append({"destination": IN_CONTAINER_LOG_DIR, "type": "bind",
                                 "source": str(hook_log.dir), "options": ["rbind", "rw"]})
    return edit


ALL_PHASES = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"]


def test_hooks_run_in_lifecycle_order(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {p: [hook_log.hook(p)] for p in ALL_PHASES}))
    cid = oci.new_id()
    assert oci.create(cid, b).returncode == 0
    at_create = hook_log.phases()
    # runc 1.1 runs poststart hooks at the end of `create`, before the
    # program runs (opencontainers/runc#4347, fixed by #5186); the spec puts
    # them in `start`: either way, after createContainer, before `start`
    # returns.
    assert at_create[:3] == ["prestart", "createRuntime", "createContainer"]
    assert at_create[3:] in ([], ["poststart"])
    assert oci.cmd("start", cid).returncode == 0
    # startContainer runs in the container just before its program, and
    # may finish after `start` returns
    wait_for(lambda: len(hook_log.phases()) == 5, "the startContainer hook")
    assert sorted(hook_log.phases()[3:]) == ["poststart", "startContainer"]
    assert oci.cmd("kill", cid, "KILL").returncode == 0
    oci.wait_status(cid, "stopped")
    assert len(hook_log.phases()) == 5, "a hook ran at kill"
    assert oci.cmd("delete", cid).returncode == 0
    assert hook_log.phases()[5:] == ["poststop"]


def test_hooks_get_the_state_on_stdin(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {p: [hook_log.hook(p)] for p in ALL_PHASES}))
    cid = oci.new_id()
    assert oci.create(cid, b).returncode == 0
    pid = oci.state(cid)["pid"]
    assert oci.cmd("start", cid).returncode == 0
    wait_for(lambda: len(hook_log.phases()) == 5, "the startContainer hook")
    assert oci.cmd("delete", "--force", cid).returncode == 0
    entries = dict(hook_log.entries())
    assert sorted(entries) == sorted(ALL_PHASES)
    for phase, state in entries.items():
        assert state is not None, f"{phase}: no state on stdin"
        assert state["id"] == cid, phase
        assert state["bundle"] == str(b), phase
        assert state["ociVersion"], phase
    for phase in ("prestart", "createRuntime", "poststart"):
        assert entries[phase]["pid"] == pid, phase


def test_hook_state_status_follows_the_lifecycle(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {p: [hook_log.hook(p)] for p in ALL_PHASES}))
    cid = oci.new_id()
    assert oci.create(cid, b).returncode == 0
    assert oci.cmd("start", cid).returncode == 0
    wait_for(lambda: len(hook_log.phases()) == 5, "the startContainer hook")
    assert oci.cmd("delete", "--force", cid).returncode == 0
    status = {phase: state["status"] for phase, state in hook_log.entries()}
    # runtime.md: "creating" until create has finished, "created" from then
    # until the program runs; startContainer runs in `start`, after create.
    # prestart (deprecated) is read both ways: runc says "creating", crun
    # and kubirun "created" (runtime-tools' hooks_stdin expects that).
    assert status == {"prestart": status["prestart"], "createRuntime": "creating",
                      "createContainer": "creating", "startContainer": "created",
                      "poststart": status["poststart"], "poststop": "stopped"}
    assert status["prestart"] in ("creating", "created")
    # runc 1.1 runs poststart in `create` (see above): "created" there
    assert status["poststart"] in ("created", "running")


def test_a_failing_prestart_hook_fails_create_and_leaves_nothing(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {
        "prestart": [hook_log.hook("prestart", "cat > /dev/null; exit 3")]}))
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert_nothing_left(oci, cid, b)


def test_a_failing_createruntime_hook_stops_the_later_hooks(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {
        "createRuntime": [hook_log.hook("createRuntime", RECORD + "; exit 1")],
        "createContainer": [hook_log.hook("createContainer")],
        "poststart": [hook_log.hook("poststart")],
    }))
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0
    assert hook_log.phases() == ["createRuntime"]
    assert_nothing_left(oci, cid, b)


def test_a_failing_poststop_hook_does_not_fail_delete(oci, bundle, hook_log):
    b = bundle(edit=with_hooks(hook_log, {
        "poststop": [hook_log.hook("poststop", RECORD + "; exit 1")]}))
    cid = oci.new_id()
    oci.start_created(cid, b)
    assert oci.cmd("kill", cid, "KILL").returncode == 0
    oci.wait_status(cid, "stopped")
    result = oci.cmd("delete", cid)
    assert result.returncode == 0, result.stderr
    assert hook_log.phases() == ["poststop"]
    assert_nothing_left(oci, cid, b)


def test_hooks_of_a_phase_run_in_order(oci, bundle, hook_log):
    hooks = [hook_log.hook("prestart", f'cat > /dev/null; echo "first {i}" >> "$LOG"')
             for i in range(3)]
    b = bundle(edit=with_hooks(hook_log, {"prestart": hooks}))
    cid = oci.new_id()
    assert oci.create(cid, b).returncode == 0
    assert hook_log.path.read_text().splitlines() == ["first 0", "first 1", "first 2"]


def test_a_hook_that_does_not_read_stdin_is_fine(oci, bundle, hook_log):
    true = {"path": "/bin/true", "args": ["true"]}
    b = bundle(edit=with_hooks(hook_log, {"prestart": [true], "createRuntime": [true],
                                          "createContainer": [true], "poststart": [true]}))
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode == 0, result.stderr
    assert oci.cmd("start", cid).returncode == 0
    assert oci.status(cid) == "running"


def test_a_hook_that_does_not_read_a_big_state_is_fine(oci, bundle, hook_log):
    # more state than a pipe holds (64 KiB): writing it fails with EPIPE
    true = {"path": "/bin/true", "args": ["true"]}
    edit = with_hooks(hook_log, {"prestart": [true], "createRuntime": [true]})

    def big(config):
        edit(config)
        config["annotations"] = {f"org.example.k{i}": "v" * 1000 for i in range(200)}

    b = bundle(edit=big)
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode == 0, result.stderr
    assert oci.status(cid) == "created"


def test_a_hook_timeout_fails_create_quickly(oci, bundle, hook_log):
    slow = {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}
    b = bundle(edit=with_hooks(hook_log, {"prestart": [slow]}))
    cid = oci.new_id()
    began = time.monotonic()
    result = oci.create(cid, b)
    elapsed = time.monotonic() - began
    assert result.returncode != 0
    assert elapsed < 5, f"create took {elapsed:.1f}s with a hook timeout of 1s"
    assert_nothing_left(oci, cid, b)


def test_hook_args_and_env_are_passed(oci, bundle, hook_log):
    hook = {"path": HOST_SH,
            "args": ["sh", "-c", 'cat > /dev/null; echo "$0 $1 $X" >> "$LOG"', "zero", "one"],
            "env": [PATH_ENV, "X=ex", f"LOG={hook_log.path}"]}
    b = bundle(edit=with_hooks(hook_log, {"createRuntime": [hook]}))
    cid = oci.new_id()
    assert oci.create(cid, b).returncode == 0
    assert hook_log.path.read_text() == "zero one ex\n"
