"""A container's whole cycle through ``kubirun.api`` (warm fork server),
next to ``runc run`` and ``crun run`` of the same bundle, in one run.

    kubirun.api   ``create`` + ``start`` + ``wait`` + ``delete`` of /bin/true,
                  in this process, the fork server already running; the
                  same bundle as the others (its config.json read by kubirun,
                  its cgroupsPath), as they run it
    kubirun run   the CLI's ``run --bundle`` (a new interpreter each time)
    runc, crun    ``RUNTIME --root STATE run --bundle B ID`` (if installed)

crun refuses hybrid cgroup hosts (a v2 mount at /sys/fs/cgroup/unified
beside the v1 hierarchies): on such a host, with crun installed, the
benchmark re-runs itself in a mount namespace of its own (``unshare -m``,
private propagation) where that mount is unmounted, so every runtime of the
comparison sees the same pure v1 host; the host's own mounts are untouched.

Every runtime's state root is a directory of its own under /run, where
each keeps its state by default (/run/kubirun, /run/runc, /run/crun; a
tmpfs on most hosts); the bundle and its root are in a temporary
directory.  Runs alternate, one of each per round, the order rotated (as in
start_latency.py).  Then 100 containers started at once, from 10 threads,
from asyncio with the awaited calls (``create_async``, ``start_async``,
``delete_async``) and, for comparison, from asyncio with the blocking ones
(the loop held during each create, start and delete): wall time, the
median cycle per container and (asyncio) the longest the loop was held;
three rounds of each, alternating, medians reported; each container of
those in a cgroup of its own.  The fork server serves one create at a time
whichever way they come.

Why: the library is for orchestrators, whose cost per container is this
cycle; the goal is at or under crun's CLI cycle (crun is C, no interpreter
to start).

Usage: python3 bench/library_start.py [--runs N] [--warmup K] [--json]
(as root).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from start_latency import (BenchError, argument_parser, ensure_image, kubirun_command,  # noqa: E402
                           make_bundle, parse_args, percentile, remove_tmp, unpack_rootfs)

CGROUP_PARENT = "/kubirun-bench-lib"
CONCURRENT, THREADS = 100, 10
ROUNDS = 3  # of each way of starting CONCURRENT at once, alternating


def _config(bundle: Path, name: str) -> dict:
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{name}"
    return config


def api_cycle(runtime, bundle: Path, name: str, config: dict | None = None) -> None:
    """One cycle of the bundle as it is, as the CLIs run it: its config.json
    read by kubirun (the fork server), its cgroupsPath theirs too (or
    ``config``: containers that run at once need cgroups of their own)."""
    box = runtime.create(name, bundle, config=config)
    box.start()
    status = box.wait()
    box.delete()
    if status.code != 0:
        raise BenchError(f"kubirun.api: /bin/true exited {status.code}")


def cli_cycle(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace').strip()}")


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def concurrent_threads(runtime, bundle: Path) -> tuple[float, list[float]]:
    cycles: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            for n in range(CONCURRENT // THREADS):
                name = f"th{w}-{n}"
                took = timed(lambda: api_cycle(runtime, bundle, name, _config(bundle, name)))
                with lock:
                    cycles.append(took)
        except BaseException as err:  # noqa: BLE001 - reported below, after the join
            failures.append(err)

    start = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if failures:
        raise BenchError(f"kubirun.api from {THREADS} threads: {failures[0]}")
    return time.perf_counter() - start, cycles


def concurrent_asyncio(runtime, bundle: Path, awaited: bool,
                       round_: int) -> tuple[float, list[float], float]:
    """CONCURRENT cycles gathered on one loop: with the awaited calls
    (``create_async``, ``start_async``, ``delete_async``), or with the
    blocking ones (``awaited`` False: how an orchestrator had to do it
    before, the loop held during each create, start and delete).  Also
    the longest the loop was held: the largest gap between the turns of a
    task that asks for one every millisecond."""
    held = [0.0]

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            held[0] = max(held[0], now - last)
            last = now

    async def one(n: int) -> float:
        name = f"as{round_}-{'a' if awaited else 'b'}{n}"
        start = time.perf_counter()
        if awaited:
            box = await runtime.create_async(name, bundle, config=_config(bundle, name))
            await box.start_async()
            await box.wait_async()
            await box.delete_async()
        else:
            box = runtime.create(name, bundle, config=_config(bundle, name))
            box.start()
            await box.wait_async()
            box.delete()
        return time.perf_counter() - start

    async def main() -> list[float]:
        tick = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0.01)
        try:
            return await asyncio.gather(*(one(n) for n in range(CONCURRENT)))
        finally:
            tick.cancel()

    start = time.perf_counter()
    cycles = asyncio.run(main())
    return time.perf_counter() - start, list(cycles), held[0]


def summary(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples) * 1e3,
            "p10_ms": percentile(samples, 10) * 1e3, "p90_ms": percentile(samples, 90) * 1e3}


def benchmark(args) -> dict:
    from kubirun.api import Runtime

    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-lib-"))
    # Every runtime's state where they all keep it by default (/run/runc,
    # /run/crun, /run/kubirun): /run, a tmpfs on most hosts.
    states = Path(tempfile.mkdtemp(prefix="kubirun-bench-lib-", dir="/run"))
    try:
        rootfs = unpack_rootfs(ensure_image(), tmp)
        reference = "runc" if shutil.which("runc") else None
        bundle = make_bundle(reference or kubirun_command(), rootfs, tmp)
        kubirun = kubirun_command()
        counter = [0]

        def next_id() -> str:
            counter[0] += 1
            return f"bench-{counter[0]}"

        with Runtime(root=str(states / "api-state")) as runtime:
            candidates = {
                "kubirun.api": lambda: api_cycle(runtime, bundle, next_id()),
                "kubirun run": lambda: cli_cycle([kubirun, "--root", str(states / "cli-state"), "run",
                                                  "--bundle", str(bundle), next_id()]),
            }
            for other in ("runc", "crun"):
                if shutil.which(other):
                    step = (lambda other=other: cli_cycle(
                        [other, "--root", str(states / f"{other}-state"), "run", "--bundle",
                         str(bundle), next_id()]))
                    try:
                        step()
                        candidates[other] = step
                    except BenchError as err:
                        print(f"{other} dropped: {err}", file=sys.stderr)
            samples: dict[str, list[float]] = {name: [] for name in candidates}
            names = list(candidates)
            for r in range(args.warmup + args.runs):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    took = timed(candidates[name])
                    if r >= args.warmup:
                        samples[name].append(took)
            concurrent = concurrent_rounds(runtime, bundle)
    finally:
        _remove_cgroup_parent()
        remove_tmp(tmp)
        remove_tmp(states)
    results = {name: summary(s) for name, s in samples.items()}
    for name, row in results.items():
        for ref in ("runc", "crun"):
            if ref in results:
                row[f"vs_{ref}"] = row["median_ms"] / results[ref]["median_ms"]
    return {"runs": args.runs, "warmup": args.warmup, "results": results,
            "unified_hidden": bool(os.environ.get(HIDDEN)),
            "concurrent": concurrent}


def concurrent_rounds(runtime, bundle: Path) -> dict:
    """ROUNDS of each way of starting CONCURRENT containers at once,
    alternating (the host is shared and noisy): per way, the median over
    the rounds of the wall time, of each round's median cycle, and of the
    longest the loop was held."""
    ways = {
        "10 threads": lambda r: concurrent_threads(runtime, bundle) + (None,),
        "asyncio, awaited calls": lambda r: concurrent_asyncio(runtime, bundle, True, r),
        "asyncio, blocking calls": lambda r: concurrent_asyncio(runtime, bundle, False, r),
    }
    rounds: dict[str, list[tuple[float, list[float], float | None]]] = {way: [] for way in ways}
    names = list(ways)
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rounds[name].append(ways[name](r))
    report = {}
    for name, results in rounds.items():
        row = {"containers": CONCURRENT, "rounds": len(results),
               "wall_ms": statistics.median(wall for wall, _, _ in results) * 1e3,
               "median_ms": statistics.median(statistics.median(c) for _, c, _ in results) * 1e3}
        if results[0][2] is not None:
            row["loop_held_ms"] = statistics.median(held for _, _, held in results) * 1e3
        report[name] = row
    return report


def _remove_cgroup_parent() -> None:
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        try:
            os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, CGROUP_PARENT.lstrip("/")))
        except OSError:
            pass
    try:
        os.rmdir("/sys/fs/cgroup" + CGROUP_PARENT)
    except OSError:
        pass


def format_report(report: dict) -> str:
    lines = [f"container cycle (create, start, wait, delete of /bin/true), {report['runs']}"
             f" alternating runs after {report['warmup']} warm-up (ms)"
             + (f"; {UNIFIED} hidden for crun (all runtimes see pure v1)"
                if report.get("unified_hidden") else ""),
             f"{'name':<14}{'median':>8}{'p10':>8}{'p90':>8}{'/runc':>8}{'/crun':>8}"]
    for name, row in report["results"].items():
        ratio = [f"{row[k]:.2f}x" if k in row else "-" for k in ("vs_runc", "vs_crun")]
        lines.append(f"{name:<14}{row['median_ms']:8.2f}{row['p10_ms']:8.2f}{row['p90_ms']:8.2f}"
                     f"{ratio[0]:>8}{ratio[1]:>8}")
    for how, row in report["concurrent"].items():
        held = (f", loop held up to {row['loop_held_ms']:.0f} ms"
                if "loop_held_ms" in row else "")
        lines.append(f"{row['containers']} at once from {how}: {row['wall_ms']:.0f} ms wall,"
                     f" median cycle {row['median_ms']:.1f} ms{held}"
                     f" (medians of {row['rounds']} rounds)")
    return "\n".join(lines)


UNIFIED = "/sys/fs/cgroup/unified"
HIDDEN = "KUBIRUN_BENCH_UNIFIED_HIDDEN"  # set in the re-run whose namespace has no UNIFIED


def hide_unified_for_crun(argv: list[str], script: str = __file__) -> None:
    """On a hybrid host with crun: re-exec SCRIPT (this benchmark unless
    another one names itself) with ARGV in a private mount namespace (never
    returns), or, being that re-run, unmount the v2 mount there."""
    if os.environ.get(HIDDEN):
        subprocess.run(["umount", UNIFIED], check=True)
        return
    if shutil.which("crun") and os.path.ismount(UNIFIED) and shutil.which("unshare"):
        os.environ[HIDDEN] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                              os.path.abspath(script), *argv])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, argument_parser(__doc__))
    if os.geteuid() != 0:
        print("library_start: run as root", file=sys.stderr)
        return 1
    hide_unified_for_crun(sys.argv[1:] if argv is None else list(argv))
    try:
        report = benchmark(args)
    except BenchError as err:
        print(f"library_start: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
