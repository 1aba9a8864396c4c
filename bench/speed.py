"""Issue 20's table in one run: every speed goal of kubirun next to runc
and crun, with MET or SHORT (and by how much, and why) on every row.

Why: every kubirun command starts a Python interpreter, whose own start
(``python -I -S -c pass`` on kubirun's interpreter: the floor) no Python
runtime can go below.  It is measured in every row of single commands,
alternated with the runtimes as one more candidate (the host's speed
drifts during a run), and once before the rows for the batches.  A SHORT verdict says
whether that floor alone is over what the goal allows (out of reach while
each command is an interpreter), or else how small kubirun's own part, its
figure less the floor, would have to be.  A batch of N commands at once has
N interpreters' CPU over the host's CPUs for its floor.

Rows (``--only`` takes their names; kill and delete are measured together):

    run         ``RUNTIME --root S run --bundle B ID`` of /bin/true (the
                busybox bundle of oci_run.py): wall and CPU (user+sys of the
                command and its children, from wait4), and the peak RSS
                (ru_maxrss as GNU time reports it, in untimed rounds).  Goals: <= 0.8x runc and <= 2.5x crun, wall and
                CPU; peak RSS <= runc's.
    exec        ``exec ID /bin/true`` into a running container (each runtime
                its own, started once, outside the timing).  Goal <= runc.
    state, list ``state ID`` of that running container, ``list`` of a state
                directory holding it.  Goal <= 2x runc.
    kill        ``kill ID KILL`` of a fresh sleeping container (started
                outside the timing), then ``delete ID`` once it has stopped
    delete      (the wait not timed either).  Goals <= 2x runc.
    help        ``kubirun --help`` and ``kubirun CMD --help`` for every
                command and group of kubirun/cli/table.py, runc's and crun's
                ``--help`` for reference.  Goal: every one <= 25 ms.
    warm        ``kubirun run --network none IMAGE -- /bin/true``, the image
                (rootfs/debian.tar.gz if built, as in the issue, else the
                busybox one; --image) imported into a store of the
                benchmark's before the timing,
                next to ``runc run`` (and crun) of a bundle on the same root
                unpacked.  Goal <= 1.2x runc.
    concurrent  20 ``run -d`` at once (wall of the batch), then 20 ``kill ID
                KILL`` at once followed by 20 ``delete --force ID`` at once
                (wall of both).  Goal <= runc, each.  --batch-runs rounds
                (default 5): each is 20 containers per runtime.
    memory      memory charged to the container's memory cgroup by create +
                start of /bin/true (memory_charged.py's measurement).  Goal
                <= 0.5 MiB.

Every timed command is started with posix_spawn and reaped with wait4, its
stdout /dev/null, its stderr a file (a detached container keeps it).  Within
a row the candidates alternate, one of each per round, the order rotated
every round (as start_latency.alternate); figures are medians (p10, p90
beside), ratios are between medians of the same run.  Note that a detached
container's processes are not the command's children: CPU and RSS of ``run
-d`` batches count the runtime only.

crun refuses hybrid cgroup hosts (cgroup2 at /sys/fs/cgroup/unified beside
v1): on such a host the benchmark re-runs itself in a private mount
namespace with that mount unmounted (library_start.hide_unified_for_crun),
so that every runtime sees the same pure v1 host.  ``--keep-unified``
measures the hybrid host as it is; crun's rows then say unavailable.

Everything lives in a temporary directory (bundles, state directories, the
image store) and in the cgroup parent /kubirun-bench-speed-PID of every
hierarchy; at the end, or on Ctrl-C, every container is deleted by its own
runtime (``delete --force``), a process left in one of those cgroups is
killed by PID, the cgroups are removed with rmdir, and the directory is
removed.  What a runtime left behind is reported under ``left_behind``.

Usage: python3 bench/speed.py [--runs N] [--warmup K] [--batch-runs N] [--only ROW,...]
       [--image IMAGE.tar.gz] [--keep-unified] [--json]
(as root; stdlib only.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from library_start import HIDDEN, UNIFIED, hide_unified_for_crun  # noqa: E402
from memory_charged import charged_once  # noqa: E402
from oci_run import Bundle, cgroup_mounts, stale_bytecode, warn_stale  # noqa: E402
from start_latency import (REPO, BenchError, ensure_image, kubirun_command,  # noqa: E402
                           non_negative_int, percentile, remove_tmp, script_interpreter,
                           unpack_rootfs)

CGROUP_PARENT = f"/kubirun-bench-speed-{os.getpid()}"  # the same PID after the re-exec
ROWS = ("run", "exec", "state", "list", "kill", "delete", "help", "warm", "concurrent", "memory")
REFS = ("runc", "crun")
CONCURRENT = 20
HELP_GOAL_MS = 25.0
MEMORY_GOAL_BYTES = 512 * 1024
SLEEP = ["/bin/sleep", "100000"]
DEBIAN = REPO / "rootfs" / "debian.tar.gz"  # the warm row's image, where built (issue 20's)
GNU_TIME = "/usr/bin/time"  # for the peak RSS of run (see Bench.peak_rss)
TIMEOUT = 30.0  # seconds a single command may take before the benchmark gives up
FLOOR = "python -I -S"  # the interpreter's start, alternated in a row (see timed)


class Sample(NamedTuple):
    """One command (or one batch of them), reaped."""

    wall: float  # s
    cpu: float  # s, user+sys of the command and its waited-for children
    maxrss_kb: int  # as wait4 says (see figures(): not the command's own)


# --- running commands -------------------------------------------------------

class Runner:
    """Starts commands with posix_spawn, stdin and stdout /dev/null, stderr a
    file of the benchmark's, and reaps them with wait4 (for their rusage)."""

    def __init__(self, tmp: Path) -> None:
        self.errors = tmp / "stderr"
        self.errors.touch()
        self.live: set[int] = set()  # spawned, not yet reaped

    def spawn(self, argv: list[str], env: dict[str, str] | None = None,
              errors: Path | None = None) -> int:
        err = os.open(errors or self.errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                      0o600)
        try:
            pid = os.posix_spawnp(argv[0], argv, os.environ if env is None else env,
                                  file_actions=[
                                      (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                      (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                                      (os.POSIX_SPAWN_DUP2, err, 2)])
        finally:
            os.close(err)
        self.live.add(pid)
        return pid

    def reap(self, pid: int) -> tuple[int, resource.struct_rusage]:
        _, status, usage = os.wait4(pid, 0)
        self.live.discard(pid)
        return os.waitstatus_to_exitcode(status), usage

    def settle(self) -> None:
        """After an interruption: let the commands still running finish
        (a runtime killed half-way through ``create`` would leave more to
        clean than one that completes), KILL them after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while self.live:
            for pid in list(self.live):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    self.live.discard(pid)
                elif time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def failed(self, argv: list[str], code: int, errors: Path | None = None) -> BenchError:
        text = (errors or self.errors).read_text(errors="replace").strip()
        return BenchError(f"{' '.join(argv)} exited with status {code}"
                          + (f":\n{text[-2000:]}" if text else ""))

    def measure(self, argv: list[str], env: dict[str, str] | None = None) -> Sample:
        """Run ARGV to its end; its wall time, CPU and peak RSS.  A non-zero
        exit is a BenchError carrying its stderr."""
        start = time.perf_counter()
        pid = self.spawn(argv, env)
        code, usage = self.reap(pid)
        wall = time.perf_counter() - start
        if code != 0:
            raise self.failed(argv, code)
        return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)

    def batch(self, argvs: list[list[str]], tmp: Path) -> Sample:
        """Start every command of ARGVS at once and reap them all: the wall
        time of the batch, the CPU of all, the largest peak RSS."""
        paths = [tmp / f"batch-{i}.stderr" for i in range(len(argvs))]
        start = time.perf_counter()
        pids = [self.spawn(argv, errors=path) for argv, path in zip(argvs, paths)]
        results = [self.reap(pid) for pid in pids]
        wall = time.perf_counter() - start
        for argv, path, (code, _) in zip(argvs, paths, results):
            if code != 0:
                raise self.failed(argv, code, path)
        return Sample(wall, sum(u.ru_utime + u.ru_stime for _, u in results),
                      max(u.ru_maxrss for _, u in results))

    def output(self, argv: list[str]) -> subprocess.CompletedProcess:
        """An untimed command whose stdout is wanted (``state``)."""
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)


# --- the runtimes -----------------------------------------------------------

class Runtime:
    """One OCI runtime's command line with its own state directory."""

    def __init__(self, name: str, command: str, tmp: Path) -> None:
        self.name = name
        self.command = command
        self.state = tmp / f"{name}-state"

    def argv(self, *words: str) -> list[str]:
        return [self.command, "--root", str(self.state), *words]

    def container_ids(self) -> list[str]:
        """What the state directory holds (one directory per container in
        runc's, crun's and kubirun's layout)."""
        if not self.state.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.state) if e.is_dir(follow_symlinks=False))

    def wait_stopped(self, runner: Runner, container_id: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            proc = runner.output(self.argv("state", container_id))
            try:
                if json.loads(proc.stdout or "{}").get("status") == "stopped":
                    return
            except ValueError:
                pass
            time.sleep(0.005)
        raise BenchError(f"{self.name}: container {container_id} still not stopped after "
                         f"{TIMEOUT:.0f} s")


def bundle_copy(bundle: Bundle, where: Path, args: list[str], container_id: str,
                root: Path | None = None) -> Path:
    """A bundle like BUNDLE at WHERE, running ARGS in cgroup PARENT/CONTAINER_ID
    (on ROOT instead of the bundle's root if given)."""
    config = json.loads(json.dumps(bundle.config))
    config["process"]["args"] = args
    config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{container_id}"
    if root is not None:
        config["root"]["path"] = str(root)
    where.mkdir(parents=True, exist_ok=True)
    (where / "config.json").write_text(json.dumps(config))
    return where


# --- alternating ------------------------------------------------------------

Step = Callable[[int], dict[str, Sample]]  # run number -> samples, by metric


def alternate(steps: dict[str, Step], warmup: int, runs: int,
              counter: list[int]) -> dict[str, dict[str, list[Sample]]]:
    """WARMUP then RUNS rounds of one step per candidate, the order rotated
    every round; the samples of the timed rounds, by candidate and metric."""
    names = list(steps)
    samples: dict[str, dict[str, list[Sample]]] = {name: {} for name in names}
    for r in range(warmup + runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            counter[0] += 1
            taken = steps[name](counter[0])
            if r >= warmup:
                for metric, sample in taken.items():
                    samples[name].setdefault(metric, []).append(sample)
    return samples


def stats(values: list[float], scale: float = 1e3) -> dict:
    return {"median": statistics.median(values) * scale,
            "p10": percentile(values, 10) * scale, "p90": percentile(values, 90) * scale,
            "samples": [round(v * scale, 3) for v in values]}


def figures(samples: list[Sample], cpu: bool = True) -> dict:
    """Wall and CPU figures.  Not the peak RSS: wait4's ru_maxrss of a child
    this process spawned starts at this process's own RSS (the child's
    memory was a copy of ours, or ours under vfork, until its exec), so it
    says ~26 MB for every runtime: see ``peak_rss``."""
    out = {"wall_ms": stats([s.wall for s in samples])}
    if cpu:
        out["cpu_ms"] = stats([s.cpu for s in samples])
    return out


# --- goals ------------------------------------------------------------------

class Floor(NamedTuple):
    """What a goal's kubirun figure cannot go below while every kubirun
    command starts an interpreter: ``python -I -S -c pass`` on kubirun's
    own interpreter, measured in the same run (``what`` says so in words),
    times the commands a figure counts, spread over the CPUs for a batch
    that runs at once."""

    value: float  # in the goal's unit
    what: str


def ratio_goal(what: str, results: dict, key: str, ref: str, limit: float,
               unavailable: dict[str, str], floor: Floor | None = None) -> dict:
    """kubirun's median of KEY at most LIMIT times REF's; when short, by how
    much and why: the interpreter's share of what the goal allows."""
    goal = f"{what} <= {limit:g}x {ref}"
    if ref not in results:
        return {"goal": goal, "met": None,
                "text": f"n/a ({ref}: {unavailable.get(ref, 'not measured')})"}
    unit, digits = ("KiB", 0) if key == "maxrss_kb" else ("ms", 1)
    mine, theirs = results["kubirun"][key]["median"], results[ref][key]["median"]
    ratio = mine / theirs
    allowed = limit * theirs
    out = {"goal": goal, "ratio": ratio, "met": ratio <= limit}
    if ratio <= limit:
        out["text"] = f"MET ({ratio:.2f}x: {mine:.{digits}f} vs {theirs:.{digits}f} {unit})"
        return out
    # By how much: what kubirun must lose, absolute and as a share of it.
    out["text"] = (f"SHORT by {mine - allowed:.{digits}f} {unit}, {(mine - allowed) / mine:.0%} of"
                   f" kubirun's ({ratio:.2f}x: {mine:.{digits}f} vs {theirs:.{digits}f} {unit})")
    if floor is not None:
        out["why"] = why_short(mine, allowed, floor, unit, digits)
        out["text"] += f"; why: {out['why']}"
    return out


def why_short(mine: float, allowed: float, floor: Floor, unit: str, digits: int) -> str:
    """Whether a goal kubirun misses is out of reach of any Python runtime
    that starts an interpreter per command, or how small kubirun's own part
    (its figure less the interpreter's) would have to be."""
    f = floor.value
    if f >= allowed:
        return (f"out of reach with an interpreter per command: {floor.what} alone"
                f" {f:.{digits}f} {unit}, the goal allows {allowed:.{digits}f}")
    return (f"{floor.what} {f:.{digits}f} of the {allowed:.{digits}f} {unit} allowed; kubirun's"
            f" own part {mine - f:.{digits}f} {unit} would have to be {allowed - f:.{digits}f}")


def absolute_goal(what: str, value: float, limit: float, unit: str) -> dict:
    met = value <= limit
    text = (f"MET ({value:.2f} {unit})" if met else
            f"SHORT by {value - limit:.2f} {unit}, {(value - limit) / value:.0%} of kubirun's"
            f" ({value:.2f} {unit})")
    return {"goal": f"{what} <= {limit:g} {unit}", "value": value, "met": met, "text": text}


def ratios(results: dict, key: str = "wall_ms") -> dict:
    return {f"kubirun/{ref}": results["kubirun"][key]["median"] / results[ref][key]["median"]
            for ref in REFS if ref in results and "kubirun" in results}


# --- the benchmark ----------------------------------------------------------

class Bench:
    """The inputs (busybox root and bundle, the runtimes found, each with a
    state directory in TMP) and one method per row, each returning that
    row's report: title, per-candidate figures, goals."""

    def __init__(self, args: argparse.Namespace, tmp: Path, note: Callable[[str], None]) -> None:
        self.args = args
        self.tmp = tmp
        self.note = note
        self.runner = Runner(tmp)
        self.counter = [0]
        self.kubirun = kubirun_command()
        self.python = script_interpreter(self.kubirun)
        self.busybox = ensure_image()
        self.image = Path(args.image).resolve() if args.image else \
            DEBIAN if DEBIAN.exists() else self.busybox
        self.rootfs = unpack_rootfs(self.busybox, tmp)
        self.bundle = Bundle(self.rootfs, tmp, self.kubirun, cgroup_parent=CGROUP_PARENT)
        self.unavailable: dict[str, str] = {}
        self.runtimes = {"kubirun": Runtime("kubirun", self.kubirun, tmp)}
        for name in REFS:
            if shutil.which(name):
                self.runtimes[name] = Runtime(name, name, tmp)
            else:
                self.unavailable[name] = "not installed"
        self.running: dict[str, str] = {}  # runtime -> the container exec/state/list use
        self.floor: dict = {}  # measure_floor's

    def next_id(self, runtime: str) -> str:
        self.counter[0] += 1
        return f"{runtime}-{self.counter[0]}"

    def run_once(self, rt: Runtime, n: int) -> Sample:
        container_id = f"{rt.name}-{n}"
        self.bundle.use_cgroup(container_id)
        return self.runner.measure(rt.argv("run", "--bundle", str(self.bundle.path),
                                           container_id))

    def probe(self) -> None:
        """crun refuses some hosts (hybrid cgroups): try each runtime once."""
        for name in list(self.runtimes):
            try:
                self.run_once(self.runtimes[name], 0)
            except BenchError as err:
                if name == "kubirun":
                    raise
                lines = str(err).splitlines()
                reason = lines[-1] if len(lines) > 1 else lines[0]
                self.note(f"{name}: unavailable here ({reason})")
                self.unavailable[name] = reason
                self.runner.output(self.runtimes.pop(name).argv("delete", "--force", f"{name}-0"))

    def measure_floor(self) -> dict:
        """``python -I -S -c pass`` on kubirun's interpreter: its wall and
        CPU (the runs of every row), its peak RSS (GNU time, as peak_rss)."""
        samples = alternate({FLOOR: lambda n: {"floor": self.runner.measure(
            [self.python, "-I", "-S", "-c", "pass"])}}, self.args.warmup, self.args.runs,
            self.counter)
        floor = figures(samples[FLOOR]["floor"])
        if os.access(GNU_TIME, os.X_OK):
            out = self.tmp / "time.out"
            rss = []
            for _ in range(5):
                self.runner.measure([GNU_TIME, "-f", "%M", "-o", str(out), self.python, "-I",
                                     "-S", "-c", "pass"])
                rss.append(float(out.read_text().split()[-1]))
            floor["maxrss_kb"] = stats(rss, 1)
        return floor

    def floor_of(self, key: str, commands: int = 1, results: dict | None = None) -> Floor | None:
        """The floor of a goal on KEY for ``commands`` kubirun commands (a
        batch of them at once shares the CPUs: its wall cannot be below
        their CPU over the CPUs): the row's own interpreter rounds if it
        has them (``results[FLOOR]``: the same minutes as its runtimes'),
        else measure_floor's."""
        figures_ = (results or {}).get(FLOOR) or self.floor
        figure = figures_.get("cpu_ms" if commands > 1 else key)
        if figure is None:
            return None
        if commands == 1:
            what = {"wall_ms": "the interpreter (python -I -S -c pass)",
                    "cpu_ms": "the interpreter's CPU",
                    "maxrss_kb": "the interpreter's peak RSS"}[key]
            return Floor(figure["median"], what)
        cpus = len(os.sched_getaffinity(0))
        return Floor(figure["median"] * commands / cpus,
                     f"{commands} interpreters' CPU over {cpus} CPUs")

    def timed(self, steps: dict[str, Step], runs: int | None = None,
              floor: tuple[str, ...] = ()) -> dict[str, dict[str, list[Sample]]]:
        """The steps alternated; with ``floor`` (a step's sample names), the
        interpreter's start among them too, one sample per name a round,
        so that a row's why is measured in the same minutes as its figures
        (the host's speed drifts by a third over a run here)."""
        if floor:
            steps = {**steps, FLOOR: lambda n: {name: self.runner.measure(
                [self.python, "-I", "-S", "-c", "pass"]) for name in floor}}
        return alternate(steps, self.args.warmup, runs or self.args.runs, self.counter)

    # -- rows --

    def row_run(self) -> dict:
        steps: dict[str, Step] = {name: (lambda n, rt=rt: {"run": self.run_once(rt, n)})
                                  for name, rt in self.runtimes.items()}
        samples = self.timed(steps, floor=("run",))
        results = {name: figures(s["run"]) for name, s in samples.items()}
        for name, rss in self.peak_rss().items():
            results[name]["maxrss_kb"] = stats(rss, 1)
        if "maxrss_kb" in self.floor:
            results[FLOOR]["maxrss_kb"] = self.floor["maxrss_kb"]
        goals = [ratio_goal(f"{what}", results, key, ref, limit, self.unavailable,
                            self.floor_of(key, results=results))
                 for what, key in (("wall", "wall_ms"), ("CPU", "cpu_ms"))
                 for ref, limit in (("runc", 0.8), ("crun", 2.5))]
        goals.append(ratio_goal("peak RSS", results, "maxrss_kb", "runc", 1.0, self.unavailable,
                                self.floor_of("maxrss_kb", results=results)))
        return {"title": "run --bundle B ID of /bin/true (busybox)", "results": results,
                "ratios": ratios(results), "cpu_ratios": ratios(results, "cpu_ms"),
                "goals": goals}

    def peak_rss(self) -> dict[str, list[float]]:
        """ru_maxrss of ``run`` (KiB), as GNU time reports it for its child:
        a small process's copy to start from, unlike ours.  --runs rounds
        of their own after the timed ones, not timed (time costs an exec)."""
        if not os.access(GNU_TIME, os.X_OK):
            self.note(f"peak RSS: not measured ({GNU_TIME} is not installed)")
            return {}
        out = self.tmp / "time.out"

        def step(n: int, rt: Runtime) -> dict[str, Sample]:
            container_id = f"{rt.name}-{n}"
            self.bundle.use_cgroup(container_id)
            self.runner.measure([GNU_TIME, "-f", "%M", "-o", str(out), *rt.argv(
                "run", "--bundle", str(self.bundle.path), container_id)])
            kib = int(out.read_text().split()[-1])
            return {"rss": Sample(0.0, 0.0, kib)}

        samples = alternate({name: (lambda n, rt=rt: step(n, rt))
                             for name, rt in self.runtimes.items()}, 0, self.args.runs,
                            self.counter)
        return {name: [float(x.maxrss_kb) for x in s["rss"]] for name, s in samples.items()}

    def start_running(self) -> None:
        """One sleeping container per runtime, for exec, state and list."""
        for name, rt in self.runtimes.items():
            if name in self.running:
                continue
            container_id = self.next_id(name)
            where = bundle_copy(self.bundle, self.tmp / "bundles" / container_id, SLEEP,
                                container_id)
            self.running[name] = container_id
            self.runner.measure(rt.argv("run", "-d", "--bundle", str(where), container_id))

    def stop_running(self) -> None:
        for name, container_id in list(self.running.items()):
            self.runner.output(self.runtimes[name].argv("delete", "--force", container_id))
            del self.running[name]

    def row_simple(self, row: str, words: Callable[[str], list[str]], limit: float,
                   title: str) -> dict:
        self.start_running()
        steps = {name: (lambda n, rt=rt: {row: self.runner.measure(
            rt.argv(*words(self.running[rt.name])))}) for name, rt in self.runtimes.items()}
        samples = self.timed(steps, floor=(row,))
        results = {name: figures(s[row]) for name, s in samples.items()}
        return {"title": title, "results": results, "ratios": ratios(results),
                "goals": [ratio_goal("wall", results, "wall_ms", "runc", limit,
                                     self.unavailable, self.floor_of("wall_ms", results=results))]}

    def kill_delete_cycle(self, rt: Runtime, n: int) -> dict[str, Sample]:
        container_id = f"{rt.name}-{n}"
        where = bundle_copy(self.bundle, self.tmp / "bundles" / "kill", SLEEP, container_id)
        self.runner.measure(rt.argv("run", "-d", "--bundle", str(where), container_id))
        try:
            killed = self.runner.measure(rt.argv("kill", container_id, "KILL"))
            rt.wait_stopped(self.runner, container_id)
            deleted = self.runner.measure(rt.argv("delete", container_id))
        except BaseException:
            self.runner.output(rt.argv("delete", "--force", container_id))
            raise
        return {"kill": killed, "delete": deleted}

    def rows_kill_delete(self) -> dict[str, dict]:
        steps = {name: (lambda n, rt=rt: self.kill_delete_cycle(rt, n))
                 for name, rt in self.runtimes.items()}
        samples = self.timed(steps, floor=("kill", "delete"))
        rows = {}
        for row, title in (("kill", "kill ID KILL (a running container)"),
                           ("delete", "delete ID (a stopped container)")):
            results = {name: figures(s[row]) for name, s in samples.items()}
            rows[row] = {"title": title, "results": results, "ratios": ratios(results),
                         "goals": [ratio_goal("wall", results, "wall_ms", "runc", 2.0,
                                              self.unavailable,
                                              self.floor_of("wall_ms", results=results))]}
        return rows

    def help_commands(self) -> list[list[str]]:
        """``--help``, then ``CMD --help`` for every command and group of the
        command table (read by kubirun's own interpreter)."""
        listing = subprocess.run(
            [self.python, "-I", "-S", "-c",
             "import json, sys; sys.path.insert(0, sys.argv[1]);"
             "from kubirun.cli.table import COMMANDS, GROUPS;"
             "print(json.dumps([[c] for c in COMMANDS] + [[g] + s for g, (_, sub) in"
             " GROUPS.items() for s in [[]] + [[c] for c in sub]]))",
             str(Path(__file__).resolve().parent.parent)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if listing.returncode != 0:
            raise BenchError(f"reading kubirun's command table: {listing.stderr.strip()}")
        return [[]] + json.loads(listing.stdout)

    def row_help(self) -> dict:
        steps: dict[str, Step] = {}
        for words in self.help_commands():
            name = " ".join(["kubirun", *words, "--help"])
            argv = [self.kubirun, *words, "--help"]
            steps[name] = lambda n, argv=argv: {"help": self.runner.measure(argv)}
        for ref in REFS:
            if shutil.which(ref):
                steps[f"{ref} --help"] = lambda n, ref=ref: {"help": self.runner.measure(
                    [ref, "--help"])}
        samples = self.timed(steps)
        results = {name: figures(s["help"], cpu=False) for name, s in samples.items()}
        mine = {name: r["wall_ms"]["median"] for name, r in results.items()
                if name.startswith("kubirun")}
        slowest = max(mine, key=mine.get)
        over = sorted((name for name, ms in mine.items() if ms > HELP_GOAL_MS),
                      key=mine.get, reverse=True)
        goal = absolute_goal("every help", mine[slowest], HELP_GOAL_MS, "ms")
        goal["text"] += f", slowest: {slowest}" + (f"; over: {', '.join(over)}" if over else "")
        return {"title": "--help and every command's help", "results": results,
                "kubirun_max_ms": mine[slowest], "kubirun_median_ms": statistics.median(
                    mine.values()), "kubirun_slowest": slowest, "over_goal": over,
                "commands": len(mine), "goals": [goal]}

    def row_warm(self) -> dict:
        store = self.tmp / "store"
        env = {**os.environ, "KUBIRUN_STORE": str(store), "KUBIRUN_PROGRESS": "0",
               "KUBIRUN_CGROUP_PARENT": CGROUP_PARENT}
        self.runner.measure([self.kubirun, "images", "import", str(self.image)], env)
        if self.image == self.busybox:
            root = self.rootfs
        else:
            root = self.tmp / "warm-root"
            root.mkdir()
            self.runner.measure(["tar", "--numeric-owner", "-xf", str(self.image), "-C",
                                 str(root)])
        kubirun = self.runtimes["kubirun"]
        image_argv = kubirun.argv("run", "--network", "none", str(self.image), "--", "/bin/true")
        steps: dict[str, Step] = {"kubirun": lambda n: {"warm": self.runner.measure(
            image_argv, env)}}
        for name in REFS:
            if name in self.runtimes:
                rt = self.runtimes[name]

                def step(n: int, rt: Runtime = rt) -> dict[str, Sample]:
                    container_id = f"{rt.name}-{n}"
                    where = bundle_copy(self.bundle, self.tmp / "bundles" / "warm",
                                        ["/bin/true"], container_id, root)
                    return {"warm": self.runner.measure(
                        rt.argv("run", "--bundle", str(where), container_id))}
                steps[name] = step
        samples = self.timed(steps, floor=("warm",))
        results = {name: figures(s["warm"]) for name, s in samples.items()}
        return {"title": f"warm run --network none {self.image.name} -- /bin/true vs a bundle"
                         " on the same root", "image": str(self.image), "results": results,
                "ratios": ratios(results),
                "goals": [ratio_goal("wall", results, "wall_ms", "runc", 1.2, self.unavailable,
                                     self.floor_of("wall_ms", results=results))]}

    def concurrent_cycle(self, rt: Runtime, n: int) -> dict[str, Sample]:
        ids = [f"{rt.name}-{n}-{i}" for i in range(CONCURRENT)]
        bundles = [bundle_copy(self.bundle, self.tmp / "bundles" / f"c{i}", SLEEP, cid)
                   for i, cid in enumerate(ids)]
        batch_tmp = self.tmp / "batch"
        batch_tmp.mkdir(exist_ok=True)
        try:
            started = self.runner.batch([rt.argv("run", "-d", "--bundle", str(b), cid)
                                         for b, cid in zip(bundles, ids)], batch_tmp)
            killed = self.runner.batch([rt.argv("kill", cid, "KILL") for cid in ids], batch_tmp)
            deleted = self.runner.batch([rt.argv("delete", "--force", cid) for cid in ids],
                                        batch_tmp)
        except BaseException:
            for cid in ids:
                self.runner.output(rt.argv("delete", "--force", cid))
            raise
        return {"start": started, "teardown": Sample(killed.wall + deleted.wall,
                                                     killed.cpu + deleted.cpu,
                                                     max(killed.maxrss_kb, deleted.maxrss_kb))}

    def row_concurrent(self) -> dict:
        steps = {name: (lambda n, rt=rt: self.concurrent_cycle(rt, n))
                 for name, rt in self.runtimes.items()}
        samples = self.timed(steps, self.args.batch_runs)
        results = {name: {"start": figures(s["start"]), "teardown": figures(s["teardown"])}
                   for name, s in samples.items()}
        goals = []
        for phase in ("start", "teardown"):
            flat = {name: r[phase] for name, r in results.items()}
            commands = CONCURRENT if phase == "start" else 2 * CONCURRENT
            goals.append(ratio_goal(f"{CONCURRENT} {'run -d' if phase == 'start' else 'kill + delete'}",
                                    flat, "wall_ms", "runc", 1.0, self.unavailable,
                                    self.floor_of("wall_ms", commands)))
        return {"title": f"{CONCURRENT} concurrent run -d, then {CONCURRENT} kills + deletes",
                "runs": self.args.batch_runs, "results": results, "goals": goals}

    def row_memory(self) -> dict:
        names = list(self.runtimes)
        values: dict[str, list[int]] = {}
        errors: dict[str, str] = {}
        for r in range(self.args.warmup + self.args.runs):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if name in errors:
                    continue
                self.counter[0] += 1
                value = charged_once(name, self.runtimes[name].command, self.bundle, self.tmp,
                                     self.counter[0])
                if isinstance(value, str):
                    errors[name] = value
                elif r >= self.args.warmup:
                    values.setdefault(name, []).append(value)
        if "kubirun" not in values:
            raise BenchError(f"memory: kubirun: {errors.get('kubirun', 'no samples')}")
        results = {name: {"charged_kib": stats([v / 1024 for v in vs], 1)}
                   for name, vs in values.items()}
        mib = results["kubirun"]["charged_kib"]["median"] / 1024
        return {"title": "memory charged to the container's cgroup (create + start of /bin/true)",
                "results": results, "unavailable": errors,
                "goals": [absolute_goal("charged", mib, MEMORY_GOAL_BYTES / (1 << 20), "MiB")]}

    def measure(self, only: list[str]) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        self.probe()
        self.note("the interpreter's floor")
        self.floor = self.measure_floor()
        if "run" in only:
            self.note("row: run")
            rows["run"] = self.row_run()
        for row, words, limit, title in (
                ("exec", lambda cid: ["exec", cid, "/bin/true"], 1.0,
                 "exec ID /bin/true into a running container"),
                ("state", lambda cid: ["state", cid], 2.0, "state ID (a running container)"),
                ("list", lambda cid: ["list"], 2.0, "list (one container)")):
            if row in only:
                self.note(f"row: {row}")
                rows[row] = self.row_simple(row, words, limit, title)
        self.stop_running()
        if "kill" in only or "delete" in only:
            self.note("rows: kill, delete")
            rows.update(self.rows_kill_delete())
        for row, method in (("help", self.row_help), ("warm", self.row_warm),
                            ("concurrent", self.row_concurrent), ("memory", self.row_memory)):
            if row in only:
                self.note(f"row: {row}")
                rows[row] = method()
        return rows

    # -- leaving nothing behind --

    def clean_up(self) -> list[str]:
        """Delete what is left in the state directories (its own runtime's
        ``delete --force``), kill by PID what is left in the benchmark's
        cgroups, rmdir them, remove the temporary directory.  What was left
        is returned, as a runtime's leak (the benchmark deletes its own)."""
        self.runner.settle()
        self.stop_running()
        problems = []
        for rt in self.runtimes.values():
            for container_id in rt.container_ids():
                problems.append(f"{rt.name}: state left behind: {container_id}")
                self.runner.output(rt.argv("delete", "--force", container_id))
        problems += remove_cgroups()
        remove_tmp(self.tmp)
        return problems


def remove_cgroups() -> list[str]:
    """rmdir CGROUP_PARENT and everything under it in every hierarchy; a
    process still in one of them (a container whose runtime lost it) is
    killed by PID first."""
    problems = []
    trees = [os.path.join(m, CGROUP_PARENT.strip("/")) for m in cgroup_mounts()]
    trees = [t for t in trees if os.path.isdir(t)]
    for tree in trees:
        for base, _, _ in os.walk(tree):
            if base == tree:
                continue
            problems.append(f"cgroup left behind: {base}")
            for pid in _procs(base):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + 5
    for tree in trees:
        for base, _, _ in sorted(os.walk(tree), key=lambda w: -w[0].count("/")):
            while True:
                try:
                    os.rmdir(base)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        problems.append(f"cannot remove {base}: {e.strerror}")
                        break
                    time.sleep(0.02)  # killed processes still leaving
    return problems


def _procs(cgroup: str) -> list[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


# --- reporting --------------------------------------------------------------

def summary_table(report: dict) -> str:
    """Issue 20's table: one line per row (and per measure), medians."""
    rows = report["rows"]
    lines = ["| path | kubirun | runc | crun | ratio to runc | goal | verdict |",
             "|---|---|---|---|---|---|---|"]

    def med(results: dict, name: str, key: str, fmt: str = "{:.1f} ms") -> str:
        r = results.get(name)
        return fmt.format(r[key]["median"]) if r and key in r else "unavailable" \
            if name in report["unavailable"] else "-"

    def line(path: str, results: dict, key: str, goals: list[dict], fmt: str = "{:.1f} ms"):
        ratio = (f"{results['kubirun'][key]['median'] / results['runc'][key]['median']:.2f}"
                 if "runc" in results and "kubirun" in results else "-")
        for i, goal in enumerate(goals or [{"goal": "", "text": ""}]):
            cells = [path, med(results, "kubirun", key, fmt), med(results, "runc", key, fmt),
                     med(results, "crun", key, fmt), ratio] if i == 0 else [""] * 5
            lines.append("| " + " | ".join(cells + [goal["goal"], goal["text"]]) + " |")

    if "run" in rows:
        r = rows["run"]
        g = r["goals"]
        line("`run --bundle B ID` of `/bin/true`", r["results"], "wall_ms", g[0:2])
        line("CPU per `run` (user+sys)", r["results"], "cpu_ms", g[2:4])
        line("peak RSS of `run`", r["results"], "maxrss_kb", g[4:5], "{:.0f} KiB")

    for row, path in (("exec", "`exec ID /bin/true`"), ("state", "`state ID`"),
                      ("list", "`list`"), ("kill", "`kill ID KILL`"),
                      ("delete", "`delete ID` (stopped)")):
        if row in rows:
            line(path, rows[row]["results"], "wall_ms", rows[row]["goals"])
    if "help" in rows:
        h = rows["help"]
        runc = h["results"].get("runc --help", {}).get("wall_ms", {}).get("median")
        crun = h["results"].get("crun --help", {}).get("wall_ms", {}).get("median")
        lines.append(f"| `--help`, every command's help ({h['commands']}) | max "
                     f"{h['kubirun_max_ms']:.1f} ms, median {h['kubirun_median_ms']:.1f} ms | "
                     + (f"{runc:.1f} ms" if runc else "-") + " | "
                     + (f"{crun:.1f} ms" if crun else "-") + " | "
                     + (f"{h['kubirun_max_ms'] / runc:.1f} (max)" if runc else "-")
                     + f" | {h['goals'][0]['goal']} | {h['goals'][0]['text']} |")
    if "warm" in rows:
        w = rows["warm"]
        line(f"warm `run --network none {Path(w['image']).name} -- /bin/true` vs the same root"
             " as a bundle", w["results"], "wall_ms", w["goals"])
    if "concurrent" in rows:
        c = rows["concurrent"]
        for i, phase in enumerate(("start", "teardown")):
            flat = {name: r[phase] for name, r in c["results"].items()}
            line(f"{CONCURRENT} concurrent `run -d`" if phase == "start"
                 else f"then {CONCURRENT} kills + {CONCURRENT} deletes", flat, "wall_ms",
                 c["goals"][i:i + 1])
    if "memory" in rows:
        m = rows["memory"]
        line("memory charged to the container", m["results"], "charged_kib", m["goals"],
             "{:.0f} KiB")
    floor = report.get("floor") or {}
    if floor:
        rss = floor.get("maxrss_kb")
        lines.append("| reference, the floor of every goal's why: `python -I -S -c pass` on"
                     f" kubirun's interpreter | {floor['wall_ms']['median']:.1f} ms,"
                     f" CPU {floor['cpu_ms']['median']:.1f} ms"
                     + (f", peak RSS {rss['median']:.0f} KiB" if rss else "") + " | | | | | |")
    return "\n".join(lines)


def details(report: dict) -> str:
    """Per row and candidate: median, p10, p90 of the wall time (the
    memory row: of the KiB charged), of the CPU where measured, and the
    wall medians' ratios to runc's and crun's."""
    out = []
    for row in report["rows"].values():
        first = next(iter(row["results"].values()))
        phases = ("start", "teardown") if "start" in first else ("",)
        key, unit = ("charged_kib", "KiB") if "charged_kib" in first else ("wall_ms", "ms")
        refs = [ref for ref in REFS if ref in row["results"]]  # not in the help row
        out.append(f"{row['title']}")
        out.append(f"  {'':<34}{unit + ': median':>14}{'p10':>8}{'p90':>8}"
                   + (f"{'CPU ms: median':>16}{'p10':>8}{'p90':>8}" if "cpu_ms" in (
                       first.get(phases[0]) if phases[0] else first) else "")
                   + "".join(f"{'/' + ref:>8}" for ref in refs))
        for phase in phases:
            flat = {name: (r[phase] if phase else r) for name, r in row["results"].items()}
            for name, fig in flat.items():
                s = fig[key]
                line = (f"  {(name + ' ' + phase).strip():<34}{s['median']:14.2f}{s['p10']:8.2f}"
                        f"{s['p90']:8.2f}")
                if "cpu_ms" in fig:
                    c = fig["cpu_ms"]
                    line += f"{c['median']:16.2f}{c['p10']:8.2f}{c['p90']:8.2f}"
                for ref in refs:
                    theirs = flat[ref][key]["median"]
                    line += f"{s['median'] / theirs:7.2f}x"
                out.append(line)
        if "maxrss_kb" in first:
            out.append("  peak RSS (KiB, GNU time): " + ", ".join(
                f"{name} {r['maxrss_kb']['median']:.0f}" for name, r in row["results"].items()
                if "maxrss_kb" in r))
    return "\n".join(out)


# --- main -------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=non_negative_int, default=20,
                        help="timed rounds of each row (default 20)")
    parser.add_argument("--warmup", type=non_negative_int, default=2,
                        help="untimed rounds before them (default 2)")
    parser.add_argument("--batch-runs", type=non_negative_int, default=5,
                        help=f"timed rounds of the concurrent row, {CONCURRENT} containers"
                             " per runtime each (default 5)")
    parser.add_argument("--only", default=",".join(ROWS),
                        help=f"rows to measure, comma-separated: {','.join(ROWS)} (default all)")
    parser.add_argument("--image", help="the warm row's image, a root filesystem tar (default"
                                        " rootfs/debian.tar.gz if built, else"
                                        " rootfs/busybox.tar.gz)")
    parser.add_argument("--keep-unified", action="store_true",
                        help="measure the hybrid host as it is (crun then unavailable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.batch_runs < 1:
        parser.error("--runs and --batch-runs must be at least 1")
    if args.image and not os.path.isfile(args.image):
        parser.error(f"--image {args.image}: no such file")
    args.only_rows = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in args.only_rows if r not in ROWS]
    if unknown or not args.only_rows:
        parser.error(f"--only: unknown row {', '.join(unknown) or '(none)'}; rows: {', '.join(ROWS)}")
    return args


def _load() -> float:
    """The 1-minute load average: the figures mean little when it is high."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("speed: run as root (namespaces, cgroups, runc)", file=sys.stderr)
        return 1
    if not args.keep_unified:
        hide_unified_for_crun(sys.argv[1:] if argv is None else list(argv), __file__)

    def note(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    signal.signal(signal.SIGTERM, _interrupted)
    load_start = _load()
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-speed-"))
    bench = None
    started = time.monotonic()
    try:
        bench = Bench(args, tmp, note)
        rows = bench.measure(args.only_rows)
        stale = stale_bytecode(bench.python)
        warn_stale(stale, note)
    except BenchError as err:
        print(f"speed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("speed: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = bench.clean_up() if bench else (remove_tmp(tmp), remove_cgroups())[1]
        for problem in left:
            print(f"warning: {problem}", file=sys.stderr)
    load = _load()
    report = {"runs": args.runs, "warmup": args.warmup, "rows": rows, "floor": bench.floor,
              "unavailable": bench.unavailable,
              "unified_hidden": bool(os.environ.get(HIDDEN)), "cgroup_parent": CGROUP_PARENT,
              "load": {"start": load_start, "end": load}, "seconds": round(time.monotonic() - started, 1),
              "stale_bytecode": stale, "left_behind": left,
              "goals_met": all(g["met"] is not False for r in rows.values() for g in r["goals"])}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"\n{args.runs} alternating rounds per row ({args.batch_runs} of the concurrent row)"
          f" after {args.warmup} warm-up; medians;"
          f" load {load_start:.2f} at the start, {load:.2f} at the end; "
          + (f"{UNIFIED} hidden (every runtime sees pure v1)" if report["unified_hidden"]
             else "the host's cgroups as they are"))
    print(details(report))
    print()
    print(summary_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
