"""``kubirun.api`` from asyncio: ``create_async``, ``run_image_async``,
``sandbox_async``, ``exec_async`` await the fork server's answer on the
running loop (which goes on meanwhile), ``start_async`` and
``delete_async`` run in the loop's executor; errors are KubirunError from
the awaited call, and a cancelled create leaves nothing behind."""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.integration.api_helpers import MANY_HEAD, run_many
from tests.integration.api_helpers import cgroup_dirs, make_bundle, own_cgroup, runtime  # noqa: F401
from tests.procs import children


def _server_children(runtime) -> list[int]:
    """The fork server's children, once those that have exited are reaped
    (it reaps in its loop, soon after a delete has seen one die)."""
    import time

    pid = runtime._server.pid
    deadline = time.monotonic() + 10
    while True:
        found = sorted(children(pid))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


class Ticker:
    """A task of the loop that counts its turns (one per millisecond at most)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1

    def __enter__(self) -> "Ticker":
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self.task.cancel()


def test_the_loop_goes_on_while_20_creates_are_at_the_fork_server(runtime, make_bundle):
    bundle = make_bundle(["true"])
    runtime.create("warm-up", bundle).delete(force=True)  # the fork server runs now

    async def main() -> list[int]:
        with Ticker() as ticker:
            async def one(n: int) -> int:
                before = ticker.ticks
                box = await runtime.create_async(f"c{n}", bundle,
                                                 config=own_cgroup(bundle, f"c{n}"))
                ticked = ticker.ticks - before
                await box.start_async()
                assert (await box.wait_async()).code == 0
                await box.delete_async()
                return ticked

            return await asyncio.gather(*(one(n) for n in range(20)))

    ticked = asyncio.run(main())
    # Each create's request was pending while the loop's other task ran:
    # a create that blocked the loop would see no tick at all.
    assert [n for n in ticked if n == 0] == [], ticked
    assert runtime.list() == []


def test_an_awaited_create_of_a_bad_bundle_raises_a_kubirun_error_and_leaves_nothing(runtime,
                                                                                   tmp_path):
    from kubirun.api import KubirunError

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(KubirunError, match="malformed JSON"):
        asyncio.run(runtime.create_async("bad", str(tmp_path / "bad")))
    assert runtime.list() == []


def test_an_awaited_exec_in_a_stopped_container_raises_a_kubirun_error(runtime, make_bundle):
    from kubirun.api import KubirunError

    async def main() -> None:
        box = await runtime.create_async("done", make_bundle(["true"]))
        await box.start_async()
        await box.wait_async()
        try:
            with pytest.raises(KubirunError, match="not running|stopped"):
                await box.exec_async(["true"])
        finally:
            await box.delete_async()

    asyncio.run(main())
    assert runtime.list() == []


def test_an_awaited_start_of_a_started_container_raises_a_kubirun_error(runtime, make_bundle):
    from kubirun.api import KubirunError

    async def main() -> None:
        box = await runtime.create_async("twice", make_bundle(["sleep", "30"]))
        await box.start_async()
        try:
            with pytest.raises(KubirunError, match="not created"):
                await box.start_async()
        finally:
            await box.delete_async(force=True)

    asyncio.run(main())
    assert runtime.list() == []


def test_an_awaited_exec_gives_its_output_and_exit_status(runtime, make_bundle):
    from kubirun.api import Stdio

    async def main() -> tuple[bytes, int]:
        box = await runtime.create_async("host", make_bundle(["sleep", "30"]))
        await box.start_async()
        try:
            process = await box.exec_async(["sh", "-c", "echo inside; exit 4"],
                                           stdio=Stdio(stdout=Stdio.PIPE))
            status = await process.wait_async()
            return process.stdout.read(), status.code
        finally:
            await box.delete_async(force=True)

    assert asyncio.run(main()) == (b"inside\n", 4)


def test_an_awaited_sandbox_runs_until_deleted(runtime):
    async def main() -> str:
        pod = await runtime.sandbox_async("pod")
        try:
            return pod.state()["status"]
        finally:
            await pod.delete_async(force=True)

    assert asyncio.run(main()) == "running"
    assert runtime.list() == []


def _held_in_create(tmp_path) -> tuple[dict, str, str]:
    """createRuntime hooks that hold the fork server inside a create (the
    init forked, its cgroup and state made) until RELEASE exists; the hook
    makes MARKER once it holds it."""
    marker, release = str(tmp_path / "in-create"), str(tmp_path / "release")
    script = f"touch {marker}; while [ ! -e {release} ]; do sleep 0.01; done"
    return {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}, marker, release


async def _until_exists(path: str) -> None:
    for _ in range(3000):
        if os.path.exists(path):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_a_create_cancelled_while_the_server_forks_it_leaves_nothing(runtime, make_bundle,
                                                                      tmp_path):
    hooks, marker, release = _held_in_create(tmp_path)
    bundle = make_bundle(["sleep", "30"], hooks)
    runtime.create("warm-up", make_bundle(["true"])).delete(force=True)

    async def main() -> None:
        create = asyncio.ensure_future(runtime.create_async("held", bundle))
        await _until_exists(marker)  # the server is making it: init forked, cgroup made
        assert runtime.list() == ["held"] and cgroup_dirs("1")  # (its bundle's cgroup)
        create.cancel()
        with pytest.raises(asyncio.CancelledError):
            await create
        open(release, "w").close()
        # The server serves one request at a time: this answer comes after
        # it has finished with the cancelled one.
        probe = await runtime.create_async("probe", make_bundle(["true"]))
        await probe.delete_async(force=True)

    asyncio.run(main())
    assert runtime.list() == []
    assert cgroup_dirs("1") == []
    assert _server_children(runtime) == []  # no init, no zombie


def test_a_create_cancelled_before_the_server_reads_it_makes_nothing(runtime, make_bundle,
                                                                     tmp_path):
    hooks, marker, release = _held_in_create(tmp_path)
    held = make_bundle(["true"], hooks)
    made = tmp_path / "second-made"
    queued = make_bundle(["sleep", "30"], {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"touch {made}"]}]})

    async def main() -> None:
        first = asyncio.ensure_future(runtime.create_async("first", held))
        await _until_exists(marker)  # the server is busy with the first
        second = asyncio.ensure_future(runtime.create_async("second", queued))
        for _ in range(20):
            await asyncio.sleep(0)  # its request sent (it waits for the answer)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        open(release, "w").close()
        box = await first
        await box.delete_async(force=True)
        # Served after the second's request: the server is past it.
        probe = await runtime.create_async("probe", held)
        await probe.delete_async(force=True)

    asyncio.run(main())
    assert not made.exists()  # the server dropped the request: not even begun
    assert runtime.list() == []
    assert cgroup_dirs("2") == []
    assert _server_children(runtime) == []


def test_a_create_cancelled_with_its_answer_unread_leaves_nothing(runtime, make_bundle, tmp_path):
    import time

    hooks, marker, release = _held_in_create(tmp_path)
    bundle = make_bundle(["sleep", "30"], hooks)

    async def main() -> None:
        create = asyncio.ensure_future(runtime.create_async("late", bundle))
        await _until_exists(marker)
        open(release, "w").close()
        # Without a turn of the loop: the server finishes, its answer waits
        # in our socket unread, and then the create is cancelled.
        deadline = time.monotonic() + 30
        while runtime.load("late").state()["status"] != "created":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # the answer follows the state's last write
        create.cancel()
        with pytest.raises(asyncio.CancelledError):
            await create

    asyncio.run(main())
    assert runtime.list() == []
    assert cgroup_dirs("1") == []
    assert _server_children(runtime) == []


MANY_ASYNC = MANY_HEAD + """\

    async def one(n):
        box = await rt.create_async(f"a{n}", bundle, config=own(f"a{n}"),
                                    stdio=Stdio(stdout=Stdio.PIPE))
        await box.start_async()
        status = await box.wait_async()
        out = box.stdout.read()
        await box.delete_async()
        return [status.code, out.decode()]

    async def main():
        return await asyncio.gather(*(one(n) for n in range(200)), return_exceptions=True)

    results = asyncio.run(main())
    print(json.dumps({
        "errors": [repr(r) for r in results if isinstance(r, BaseException)][:3],
        "ok": results.count([0, "kubirun\\n"]), "left": rt.list(),
        "fds": sorted(set(os.listdir("/proc/self/fd")) - fds),
        "threads": threading.active_count() - threads, "children": len(children()),
    }))
print(json.dumps({"children_after_close": len(children())}))
"""


def test_200_containers_from_asyncio_through_the_awaited_calls_with_256_fds(make_bundle, tmp_path):
    report, after = run_many(MANY_ASYNC, tmp_path, make_bundle(["hostname"]), "many-async")
    assert report == {"errors": [], "ok": 200, "left": [], "fds": [], "threads": 0,
                      "children": 1}  # the fork server alone
    assert after == {"children_after_close": 0}
