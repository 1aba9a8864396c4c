"""``kubirun.api``, the library an orchestrator embeds: containers made by
a fork server (the caller never forks), stdio per container, exit status
from any thread or asyncio and recorded for a later ``Runtime``, no signal
handler taken, no fd left behind."""
from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO, TEST_CGROUP_PARENT
from tests.integration.api_helpers import MANY_HEAD, run_many
from tests.integration.api_helpers import make_bundle, own_cgroup, runtime  # noqa: F401 (fixtures)
from tests.procs import children


def test_a_container_from_create_to_delete_with_its_output_in_pipes(runtime, make_bundle):
    from kubirun.api import ExitStatus, Stdio

    box = runtime.create("first", make_bundle(["sh", "-c", "echo out; echo err >&2; exit 3"]),
                         stdio=Stdio(stdout=Stdio.PIPE, stderr=Stdio.PIPE))
    assert box.state()["status"] == "created"
    box.start()
    assert (box.stdout.read(), box.stderr.read()) == (b"out\n", b"err\n")
    assert box.wait(timeout=20) == ExitStatus(3)
    box.delete()
    assert runtime.list() == []


def test_stdout_appended_to_a_file(runtime, make_bundle, tmp_path):
    from kubirun.api import Stdio

    log = tmp_path / "box.log"
    log.write_text("before\n")
    box = runtime.create("logged", make_bundle(["echo", "after"]), stdio=Stdio(stdout=str(log)))
    box.start()
    assert box.wait(timeout=20).code == 0
    box.delete()
    assert log.read_text() == "before\nafter\n"


def test_a_later_runtime_reads_the_exit_status(tmp_path, make_bundle):
    from kubirun.api import ExitStatus, Runtime

    root = str(tmp_path / "api-root")
    with Runtime(root=root) as first:
        box = first.create("recorded", make_bundle(["sleep", "30"]))
        box.start()
        box.kill(signal.SIGKILL)
        assert box.wait(timeout=20) == ExitStatus(137, signal.SIGKILL)
    with Runtime(root=root) as second:
        again = second.load("recorded")
        assert again.exit_status == ExitStatus(137, signal.SIGKILL)
        assert again.wait() == ExitStatus(137, signal.SIGKILL)
        again.delete()


def test_a_socket_made_in_the_containers_network_namespace_reaches_its_loopback(
        runtime, make_bundle):
    import socket

    box = runtime.create("listener", make_bundle(["sh", "-c", "echo hello | nc -l -p 7000"]))
    box.start()
    with open(f"/proc/{box.state()['pid']}/ns/net") as ns:  # before it ends, after the talk
        theirs = os.fstat(ns.fileno()).st_ino
    deadline = time.monotonic() + 20
    while True:
        sock = box.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", 7000))
            assert sock.recv(100) == b"hello\n"
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "nothing listened on the container's loopback"
            time.sleep(0.05)
        finally:
            sock.close()
    # the namespace is the container's, not ours
    assert theirs != os.stat("/proc/self/ns/net").st_ino
    assert os.stat(f"/proc/{runtime._server.pid}/ns/net").st_ino != theirs  # it came back
    assert box.wait(timeout=20).code == 0
    box.delete()


def test_wait_with_a_timeout(runtime, make_bundle):
    box = runtime.create("sleeper", make_bundle(["sleep", "30"]))
    box.start()
    with pytest.raises(TimeoutError):
        box.wait(timeout=0.2)
    box.kill(signal.SIGKILL)
    assert box.wait(timeout=20).signal == signal.SIGKILL
    box.delete()


def test_exec_and_wait_for_it(runtime, make_bundle):
    from kubirun.api import Stdio

    box = runtime.create("host", make_bundle(["sleep", "30"]))
    box.start()
    process = box.exec(["sh", "-c", "echo inside; exit 4"], stdio=Stdio(stdout=Stdio.PIPE))
    assert process.stdout.read() == b"inside\n"
    assert process.wait(timeout=20).code == 4
    box.delete(force=True)


def test_a_detached_exec_does_not_keep_a_dead_container_running(runtime, make_bundle):
    box = runtime.create("zap", make_bundle(["sleep", "30"]))
    box.start()
    box.exec(["sleep", "30"])
    box.kill(signal.SIGKILL)  # PID 1 only: the kernel ends the rest of its namespace
    deadline = time.monotonic() + 1
    while box.state()["status"] != "stopped":
        assert time.monotonic() < deadline, "still not stopped after 1 s"
        time.sleep(0.02)
    box.delete()


def test_a_bad_bundle_is_one_error_and_nothing_is_left(runtime, tmp_path):
    from kubirun.api import KubirunError

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(KubirunError, match="malformed JSON"):
        runtime.create("bad", str(tmp_path / "bad"))
    assert runtime.list() == []


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_many_containers_from_threads_with_few_fds(runtime, make_bundle):
    from kubirun.api import Stdio

    bundle = make_bundle(["hostname"])
    runtime.create("warm-up", bundle).delete(force=True)  # the fork server runs now
    fds_before, threads_before = _open_fds(), threading.active_count()
    children_before = children()  # the fork server (and what earlier tests left running)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    errors: list[BaseException] = []

    def cycle(worker: int) -> None:
        try:
            for n in range(10):
                name = f"t{worker}-{n}"
                box = runtime.create(name, bundle, config=own_cgroup(bundle, name),
                                     stdio=Stdio(stdout=Stdio.PIPE))
                box.start()
                assert box.stdout.read() == b"kubirun\n"
                assert box.wait(timeout=30).code == 0
                box.delete()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    try:
        workers = [threading.Thread(target=cycle, args=(w,)) for w in range(10)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not errors, errors[:3]
    assert runtime.list() == []
    # nothing of ours left open or running (an earlier test's object the
    # garbage collector frees meanwhile may only make these smaller)
    assert _open_fds() <= fds_before
    assert threading.active_count() <= threads_before
    assert children() <= children_before  # no init, no exec'd process, no zombie of ours


def test_many_containers_from_asyncio(runtime, make_bundle):
    bundle = make_bundle(["sh", "-c", "exit $((RANDOM % 7))"])

    async def one(n: int) -> int:
        box = runtime.create(f"a{n}", bundle, config=own_cgroup(bundle, f"a{n}"))
        box.start()
        status = await box.wait_async()
        box.delete()
        return status.code

    async def main() -> list[int]:
        return await asyncio.gather(*(one(n) for n in range(20)))

    codes = asyncio.run(main())
    assert len(codes) == 20 and all(0 <= code < 7 for code in codes)
    assert runtime.list() == []


EMBEDDER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever we inherited
from kubirun.api import Runtime
root, bundle = sys.argv[1], sys.argv[2]
with Runtime(root=root) as rt:
    box = rt.create("kept", bundle)
    box.start()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        print("no KeyboardInterrupt")
    except KeyboardInterrupt:
        print("KeyboardInterrupt", box.state()["status"])
    box.delete(force=True)
"""


def test_sigint_to_the_embedder_is_its_own_and_the_containers_are_untouched(make_bundle, tmp_path):
    result = subprocess.run([sys.executable, "-c", EMBEDDER, str(tmp_path / "root"),
                             make_bundle(["sleep", "30"])], capture_output=True, text=True,
                            timeout=60, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["KeyboardInterrupt", "running"]


def test_the_caller_keeps_its_dumpable_flag_umask_cwd_and_signal_handlers(runtime, make_bundle):
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    before = (prctl(3, 0, 0, 0, 0), os.umask(0o022), os.getcwd(),  # PR_GET_DUMPABLE
              [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)])
    os.umask(before[1])
    box = runtime.create("polite", make_bundle(["true"]))
    box.start()
    box.wait(timeout=20)
    box.delete()
    after = (prctl(3, 0, 0, 0, 0), os.umask(0o022), os.getcwd(),
             [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)])
    os.umask(after[1])
    assert after == before


def test_a_cgroup_parent_for_configs_that_name_none(tmp_path, make_bundle):
    from kubirun.api import Runtime
    from tests.conftest import remove_cgroup_parent

    config = json.loads(open(os.path.join(make_bundle(["sleep", "30"]), "config.json")).read())
    del config["linux"]["cgroupsPath"]
    (tmp_path / "nopath").mkdir()
    (tmp_path / "nopath" / "config.json").write_text(json.dumps(config))
    try:
        with Runtime(root=str(tmp_path / "root"), cgroup_parent=f"{TEST_CGROUP_PARENT}/pods") as rt:
            box = rt.create("placed", str(tmp_path / "nopath"))
            box.start()
            with open(f"/proc/{box.state()['pid']}/cgroup") as f:
                assert f"{TEST_CGROUP_PARENT}/pods/placed" in f.read()
            box.delete(force=True)
    finally:
        remove_cgroup_parent(f"{TEST_CGROUP_PARENT}/pods")


def test_a_fork_server_that_died_is_replaced(runtime, make_bundle):
    first = runtime.create("before", make_bundle(["true"]))
    first.delete(force=True)
    os.kill(runtime._server.pid, signal.SIGKILL)
    os.waitpid(runtime._server.pid, 0)  # dead for sure (SIGKILL is not instant)
    second = runtime.create("after", make_bundle(["echo", "fine"]))
    second.start()
    assert second.wait(timeout=20).code == 0
    second.delete()


def _read_all(pty) -> bytes:
    """What the pty's master reads until the other side is gone (EIO)."""
    out = b""
    while True:
        try:
            data = pty.read(4096)
        except OSError:
            return out
        if not data:
            return out
        out += data


def test_a_container_with_a_terminal_hands_the_caller_its_master(runtime, make_bundle):
    from kubirun.api import Stdio

    box = runtime.create("tty", make_bundle(["sh", "-c", "tty; read line; echo got $line"]),
                         stdio=Stdio.PTY)
    assert box.stdout is None and box.pty is not None
    box.start()
    box.pty.write(b"typed\n")
    lines = _read_all(box.pty).decode().splitlines()
    # the line discipline's echo of what we typed comes when it does
    assert [line for line in lines if line != "typed"][-1] == "got typed"
    assert any(line.startswith("/dev/pts/") for line in lines)
    assert box.wait(timeout=20).code == 0
    box.delete()
    assert box.pty.closed


def test_an_exec_with_a_terminal_and_its_master_closed_by_wait(runtime, make_bundle):
    from kubirun.api import Stdio

    box = runtime.create("tty-exec", make_bundle(["sleep", "30"]))
    box.start()
    process = box.exec(["sh", "-c", "test -t 0 && test -t 1 && tty"], stdio=Stdio(terminal=True))
    assert _read_all(process.pty).startswith(b"/dev/pts/")
    pty = process.pty
    assert process.wait(timeout=20).code == 0
    assert pty.closed
    box.delete(force=True)


def test_events_end_with_the_exit_and_its_status(runtime, make_bundle):
    from kubirun.api import ExitEvent, ExitStatus, StatsEvent

    box = runtime.create("evented", make_bundle(["sh", "-c", "sleep 0.5; exit 5"]))
    box.start()
    events = list(runtime.events("evented", stats_interval=0.1))
    assert isinstance(events[-1], ExitEvent) and events[-1].status == ExitStatus(5)
    stats = [event for event in events if isinstance(event, StatsEvent)]
    assert stats and all("memory" in event.stats or "pids" in event.stats for event in stats)
    box.delete()


def test_events_in_asyncio(runtime, make_bundle):
    from kubirun.api import ExitEvent, ExitStatus

    box = runtime.create("async-evented", make_bundle(["sh", "-c", "sleep 0.3; exit 6"]))
    box.start()

    async def collect() -> list:
        return [event async for event in runtime.events("async-evented")]

    fds_before = _open_fds()
    assert asyncio.run(collect()) == [ExitEvent(ExitStatus(6), "async-evented")]
    assert _open_fds() <= fds_before
    box.delete()


def test_an_oom_kill_is_an_event_and_in_the_exit_status(runtime, make_bundle):
    from kubirun.api import ExitEvent, OOMEvent

    bundle = make_bundle(["sh", "-c", "x=a; while true; do x=$x$x; done"])
    config = own_cgroup(bundle, "oomed")
    config["linux"]["resources"] = {"memory": {"limit": 16 << 20}}
    box = runtime.create("oomed", bundle, config=config)
    limit = ((box.stats().get("memory") or {}).get("usage") or {}).get("limit")
    if limit != 16 << 20:
        box.delete(force=True)
        pytest.skip("this host applies no memory limit to the container")
    box.start()
    events = list(runtime.events("oomed"))
    box.delete()
    assert any(isinstance(event, OOMEvent) for event in events)
    assert isinstance(events[-1], ExitEvent) and events[-1].status.oom_killed


MANY = MANY_HEAD + """\
    errors, codes = [], []

    def worker(w):
        try:
            for n in range(10):
                box = rt.create(f"t{w}-{n}", bundle, config=own(f"t{w}-{n}"),
                                stdio=Stdio(stdout=Stdio.PIPE))
                box.start()
                out = box.stdout.read()
                codes.append((box.wait(timeout=60).code, out))
                box.delete()
        except BaseException as err:
            errors.append(repr(err))

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(10)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    async def one(n):
        box = rt.create(f"a{n}", bundle, config=own(f"a{n}"))
        box.start()
        status = await box.wait_async()
        box.delete()
        return status.code

    async def main():
        return await asyncio.gather(*(one(n) for n in range(100)), return_exceptions=True)

    results = asyncio.run(main())
    errors += [repr(r) for r in results if isinstance(r, BaseException)]
    print(json.dumps({
        "errors": errors[:3], "threaded": len(codes), "asyncio": len(results),
        "ok": sum(c == (0, b"kubirun\\n") for c in codes) + results.count(0),
        "left": rt.list(), "fds": sorted(set(os.listdir("/proc/self/fd")) - fds),
        "threads": threading.active_count() - threads, "children": len(children()),
    }))
print(json.dumps({"children_after_close": len(children())}))
"""


def test_200_containers_from_10_threads_and_asyncio_with_256_fds(make_bundle, tmp_path):
    report, after = run_many(MANY, tmp_path, make_bundle(["hostname"]), "many")
    assert report == {"errors": [], "threaded": 100, "asyncio": 100, "ok": 200, "left": [],
                      "fds": [], "threads": 0, "children": 1}  # the fork server alone
    assert after == {"children_after_close": 0}
