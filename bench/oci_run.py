"""``kubirun run ID`` next to ``runc run ID`` and ``crun run ID``, one bundle.

The three runtimes run the same OCI bundle through the same command line,
``RUNTIME --root STATE run --bundle BUNDLE ID`` (create, start, wait,
delete), so what differs is only the runtime.  The bundle is ``runc spec``'s
default (``kubirun spec``'s if runc is missing) with

    root.path          an unpacked rootfs/busybox.tar.gz (root.readonly as
                       the spec has it)
    process            /bin/true, terminal false
    linux.cgroupsPath  /kubirun-bench-oci/ID, rewritten before every run
                       (not timed): a parent of the benchmark's own, because
                       left to itself runc nests its cgroup under the
                       caller's, which may belong to someone else

Each runtime has its own ``--root`` state directory.  Runs alternate, one of
each runtime per round, the order rotated every round (as in
start_latency.py, whose helpers this script imports).  crun refuses hosts
with hybrid v1/v2 cgroups: it is then reported as unavailable with its
error line.

At the end the state directories and the unpacked root are removed, and
/kubirun-bench-oci is removed (rmdir only) in every cgroup hierarchy.  A
container's cgroup left under it, or a state directory left behind, is a
runtime's leak: it is reported (and removed, rmdir only).

``--profile`` runs kubirun alone, once under ``python -X importtime`` and
once under ``strace -f -tt -e trace=%process,mount,pivot_root,mkdir,openat,write``
(with ``--seccomp-bpf`` where strace has it, so that only those system calls
stop the process), and prints where the wall time of one run goes.

Usage: python3 bench/oci_run.py [--runs N] [--warmup K] [--json] [--profile]
(as root; stdlib only).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import start_latency
from start_latency import (REPO, BenchError, Candidate, alternate, argument_parser,
                           drop_unavailable, ensure_image, format_table, kubirun_command,
                           make_bundle, remove_tmp, script_interpreter, summarise, unpack_rootfs)

CGROUP_PARENT = "/kubirun-bench-oci"
REFS = ("runc", "crun")  # what kubirun is compared with
STRACE_SET = "trace=%process,mount,pivot_root,mkdir,openat,write"
PROFILE_REFERENCE_RUNS = 10  # untraced runs of kubirun (and python) with --profile


# --- the bundle and the candidates ----------------------------------------

class Bundle:
    """The one bundle every runtime runs; ``use_cgroup(id)`` points its
    cgroupsPath at CGROUP_PARENT/ID (/kubirun-bench-oci/ID unless another
    benchmark gives its own parent) before a run."""

    def __init__(self, rootfs: Path, tmp: Path, kubirun: str,
                 cgroup_parent: str = CGROUP_PARENT) -> None:
        self.cgroup_parent = cgroup_parent
        spec_from = "runc" if shutil.which("runc") else kubirun
        self.path = make_bundle(spec_from, rootfs, tmp, readonly=None)
        self.config_path = self.path / "config.json"
        self.config = json.loads(self.config_path.read_text())
        self.spec_from = Path(spec_from).name
        self.argv = self.config["process"]["args"]

    def use_cgroup(self, container_id: str) -> None:
        self.config["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{container_id}"
        self.config_path.write_text(json.dumps(self.config, indent=2))

    def describe(self) -> dict:
        return {"spec_from": self.spec_from, "root": self.config["root"],
                "args": self.argv, "terminal": self.config["process"]["terminal"],
                "cgroupsPath": f"{self.cgroup_parent}/<id>"}


def runtime_candidate(name: str, command: str, bundle: Bundle, tmp: Path) -> Candidate:
    """``COMMAND --root TMP/NAME-state run --bundle BUNDLE NAME-N`` for run N."""
    state = tmp / f"{name}-state"
    return Candidate(
        name, lambda n: [command, "--root", str(state), "run", "--bundle", str(bundle.path),
                         f"{name}-{n}"],
        prepare=lambda n: bundle.use_cgroup(f"{name}-{n}"))


def build_candidates(bundle: Bundle, tmp: Path, kubirun: str) -> tuple[list[Candidate], dict]:
    candidates = [runtime_candidate("kubirun", kubirun, bundle, tmp)]
    missing = {}
    for name in REFS:
        if shutil.which(name):
            candidates.append(runtime_candidate(name, name, bundle, tmp))
        else:
            missing[name] = "not installed"
    return candidates, missing


# --- leaving nothing behind -----------------------------------------------

def cgroup_mounts() -> list[str]:
    """Every cgroup (v1 or v2) mount point, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2") and fields[4] not in points:
                points.append(fields[4])
    return points


def remove_cgroup_parent() -> list[str]:
    """rmdir /kubirun-bench-oci in every hierarchy.  A container's cgroup
    still under it is a runtime's leak: rmdir it too (rmdir refuses a cgroup
    with processes in it) and return what was found, as warnings."""
    problems = []
    for mount in cgroup_mounts():
        parent = os.path.join(mount, CGROUP_PARENT.strip("/"))
        if not os.path.isdir(parent):
            continue
        for entry in sorted(os.scandir(parent), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                problems.append(f"cgroup left behind: {entry.path}")
                _rmdir(entry.path, problems)
        _rmdir(parent, problems)
    return problems


def _rmdir(path: str, problems: list[str]) -> None:
    try:
        os.rmdir(path)
    except OSError as e:
        problems.append(f"cannot remove {path}: {e.strerror}")


def leftover_state(tmp: Path) -> list[str]:
    """Containers still in a runtime's state directory after its runs."""
    return [f"state left behind: {d}" for state in sorted(tmp.glob("*-state"))
            for d in sorted(state.iterdir())]


def cleaned_up(tmp: Path, note) -> list[str]:
    problems = leftover_state(tmp)
    remove_tmp(tmp)
    problems += remove_cgroup_parent()
    for problem in problems:
        note(f"warning: {problem}")
    return problems


def stale_bytecode(python: str) -> list[str]:
    """kubirun's modules whose cached bytecode (for PYTHON) is missing or does
    not match the source.  Checked after the warm-up: a module still stale
    then is compiled again at every start (PYTHONDONTWRITEBYTECODE is set,
    or __pycache__ is not writable), which is not what an installed kubirun
    pays; ``make bytecode`` compiles them."""
    tag = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=False).stdout.strip()
    stale = []
    for source in sorted((REPO / "kubirun").rglob("*.py")):
        if "__pycache__" in source.parts or not tag:
            continue
        try:
            with open(source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc", "rb") as f:
                flags, mtime, size = struct.unpack("<4xIII", f.read(16))
        except (OSError, struct.error):
            stale.append(str(source.relative_to(REPO)))
            continue
        st = source.stat()
        if flags == 0 and (mtime, size) != (int(st.st_mtime) & 0xFFFFFFFF,
                                            st.st_size & 0xFFFFFFFF):
            stale.append(str(source.relative_to(REPO)))
    return stale


def warn_stale(stale: list[str], note) -> None:
    if stale:
        note(f"warning: kubirun's bytecode is stale for {', '.join(stale)}: every run compiles "
             f"{'it' if len(stale) == 1 else 'them'} again (PYTHONDONTWRITEBYTECODE="
             f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}); `make bytecode` first")


# --- the benchmark --------------------------------------------------------

def ratios(summary: dict[str, dict]) -> dict[str, float | None]:
    return {f"kubirun/{ref}": summary["kubirun"][f"vs_{ref}"] for ref in REFS}


def verdict(report: dict) -> str:
    parts = []
    for ref in REFS:
        ratio = report["ratios"][f"kubirun/{ref}"]
        if ratio is not None:
            parts.append(f"kubirun/{ref} = {ratio:.2f}")
        else:
            parts.append(f"kubirun/{ref} = n/a ({ref}: "
                         f"{report['unavailable'].get(ref, 'no samples')})")
    return ", ".join(parts)


def benchmark(args: argparse.Namespace, note) -> dict:
    image = ensure_image()
    kubirun = kubirun_command()
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-oci-"))
    try:
        bundle = Bundle(unpack_rootfs(image, tmp), tmp, kubirun)
        counter = [0]  # run number, for fresh container ids
        candidates, unavailable = build_candidates(bundle, tmp, kubirun)
        candidates, dropped = drop_unavailable(candidates, counter, note)
        unavailable.update(dropped)
        alternate(candidates, args.warmup, counter, record=False)
        stale = stale_bytecode(script_interpreter(kubirun))
        warn_stale(stale, note)
        alternate(candidates, args.runs, counter, record=True)
    finally:
        problems = cleaned_up(tmp, note)
    summary = summarise(candidates, REFS)
    report = {"runs": args.runs, "warmup": args.warmup, "bundle": bundle.describe(),
              "results": summary, "unavailable": unavailable}
    report["ratios"] = ratios(summary)
    report["stale_bytecode"] = stale
    report["left_behind"] = problems
    return report


# --- the profile ----------------------------------------------------------

def profile(args: argparse.Namespace, note) -> dict:
    """kubirun alone: untraced runs for reference, one run under
    ``-X importtime``, one under strace."""
    image = ensure_image()
    kubirun = kubirun_command()
    python = script_interpreter(kubirun)
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-oci-"))
    report: dict = {}
    try:
        bundle = Bundle(unpack_rootfs(image, tmp), tmp, kubirun)
        counter = [0]
        plain = runtime_candidate("kubirun", kubirun, bundle, tmp)
        bare = Candidate("python -I -S", lambda n: [python, "-I", "-S", "-c", "pass"])
        alternate([plain, bare], args.warmup, counter, record=False)
        report["stale_bytecode"] = stale_bytecode(python)
        warn_stale(report["stale_bytecode"], note)
        alternate([plain, bare], PROFILE_REFERENCE_RUNS, counter, record=True)
        report["untraced"] = {"runs": PROFILE_REFERENCE_RUNS,
                              "kubirun_median_ms": statistics.median(plain.samples) * 1e3,
                              "python_median_ms": statistics.median(bare.samples) * 1e3}

        counter[0] += 1
        importtime = Candidate("kubirun -X importtime", lambda n: [
            python, "-X", "importtime", *plain.argv_for(n)], prepare=plain.prepare)
        importtime.prepare(counter[0])
        wall, stderr = traced_run(importtime, counter[0])
        report["importtime"] = {"wall_ms": wall * 1e3, **parse_importtime(stderr)}

        if shutil.which("strace"):
            counter[0] += 1
            out = tmp / "strace.out"
            strace = Candidate("kubirun under strace", lambda n: [
                "strace", *strace_bpf_flag(), "-f", "-tt", "-e", STRACE_SET, "-o", str(out),
                *plain.argv_for(n)], prepare=plain.prepare)
            strace.prepare(counter[0])
            wall, _ = traced_run(strace, counter[0])
            report["strace"] = {"wall_ms": wall * 1e3, "seccomp_bpf": bool(strace_bpf_flag()),
                                **analyse_strace(out.read_text(), kubirun, str(bundle.config_path),
                                               bundle.argv[0])}
        else:
            report["strace"] = {"unavailable": "strace is not installed"}
    finally:
        report["left_behind"] = cleaned_up(tmp, note)
    return report


def traced_run(c: Candidate, n: int) -> tuple[float, str]:
    """Time one run of C, keeping its stderr (where -X importtime writes)."""
    start = time.perf_counter()
    proc = subprocess.run(c.argv_for(n), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"{c.name} exited with status {proc.returncode}: "
                         f"{' '.join(c.argv_for(n))}\n{stderr.rstrip()[-2000:]}")
    return elapsed, stderr


def strace_bpf_flag() -> list[str]:
    """``--seccomp-bpf`` if this strace has it: without it every system call,
    traced or not, stops the process (here: 40 ms runs took 170 ms)."""
    proc = subprocess.run(["strace", "--seccomp-bpf", "-f", "-e", "trace=exit_group", "true"],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return ["--seccomp-bpf"] if proc.returncode == 0 else []


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)$")


def parse_importtime(stderr: str) -> dict:
    """Total of the self times, the count, the share of the top-level
    ``kubirun*`` imports (with all they import), the largest top-level ones."""
    total_us, count, top = 0, 0, []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        own, cumulative, indent, name = int(m[1]), int(m[2]), m[3], m[4]
        total_us += own
        count += 1
        if len(indent) == 1:
            top.append((cumulative, name))
    top.sort(reverse=True)
    kubirun_us = sum(us for us, name in top if name.split(".")[0] == "kubirun")
    return {"imports_ms": total_us / 1e3, "modules": count, "kubirun_ms": kubirun_us / 1e3,
            "largest_ms": {name: us / 1e3 for us, name in top[:8]}}


_STRACE_LINE = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RETURN = re.compile(r"\)\s+=\s+(-?\d+|\?)")
_FORKS = ("clone", "clone3", "fork", "vfork")


def parse_strace(text: str) -> list[dict]:
    """``strace -f -tt -o`` lines as events {pid, t (s), call, args, ret};
    an unfinished call is one event at its start, completed by its
    resumption; exits are call "+++"."""
    events, pending, day = [], {}, 0.0
    last = None
    for line in text.splitlines():
        m = _STRACE_LINE.match(line)
        if not m:
            continue
        pid = int(m[1])
        t = int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4]) + day
        if last is not None and t < last - 43200:  # past midnight
            day += 86400
            t += 86400
        last = t
        rest = m[5]
        if rest.startswith("+++"):
            events.append({"pid": pid, "t": t, "call": "+++", "args": rest, "ret": None})
            continue
        if rest.startswith("---"):
            continue  # a signal
        resumed = _RESUMED.match(rest)
        if resumed:
            event = pending.pop(pid, None)
            if event is not None:
                event["args"] += resumed[2]
                ret = _RETURN.search(resumed[2])
                event["ret"] = ret[1] if ret else None
            continue
        call = _CALL.match(rest)
        if not call:
            continue
        event = {"pid": pid, "t": t, "call": call[1], "args": call[2], "ret": None}
        events.append(event)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = event
        else:
            ret = _RETURN.search(call[2])
            event["ret"] = ret[1] if ret else None
    return events


def analyse_strace(text: str, script: str, config: str, program: str) -> dict:
    """Milestones of one ``kubirun run`` and the time between them (ms from
    the first exec), with the number of traced calls in each phase:

        exec        the runtime's first execve
        script      the interpreter opens SCRIPT, the kubirun command (its
                    start-up and site done)
        config      the runtime opens CONFIG, the bundle's config.json
        cgroup      the runtime's first mkdir in a cgroup hierarchy
        fork        the clone that makes the container's process
        pivot_root  in the container's process
        execve      the container's execve of PROGRAM
        exited      the container's process exits
        end         the runtime exits
    """
    events = parse_strace(text)
    if not events:
        return {"error": "empty trace"}
    runtime = events[0]["pid"]
    container = next((e["pid"] for e in events if e["call"] == "execve"
                      and e["pid"] != runtime and e["args"].startswith(f'"{program}"')), None)
    script_arg, config_arg = f'"{os.path.abspath(script)}"', f'"{config}"'
    cgroup_dirs = tuple(f'"{m}/' for m in cgroup_mounts())
    found: dict[str, float] = {}

    def first(name: str, t: float) -> None:
        found.setdefault(name, t)

    for e in events:
        pid, call, args, t = e["pid"], e["call"], e["args"], e["t"]
        if pid == runtime:
            if call == "openat" and script_arg in args:
                first("script", t)
            elif call == "openat" and config_arg in args:
                first("config", t)
            elif call == "mkdir" and args.startswith(cgroup_dirs):
                first("cgroup", t)
            elif call == "+++":
                found["end"] = t
        if call in _FORKS and container is not None and e["ret"] == str(container):
            first("fork", t)
        if pid == container:
            if call == "pivot_root":
                first("pivot_root", t)
            elif call == "execve":
                first("execve", t)
            elif call == "+++":
                found["exited"] = t
    t0 = events[0]["t"]
    at_ms = {name: (found[name] - t0) * 1e3 if name in found else None
             for name in ("exec", "script", "config", "cgroup", "fork", "pivot_root",
                          "execve", "exited", "end")}
    at_ms["exec"] = 0.0
    times = [(e["t"] - t0) * 1e3 for e in events if e["call"] != "+++"]
    return {"at_ms": at_ms, "phases_ms": phases(at_ms, times),
            "traced_calls": len(times), "counts": count_calls(events, runtime, container),
            "largest_gaps": largest_gaps(events, {runtime: "runtime", container: "init"}, t0)}


def largest_gaps(events: list[dict], names: dict, t0: float, most: int = 6) -> list[dict]:
    """The longest stretches between two consecutive traced calls of one
    process (NAMES: pid -> name): Python at work, calls not traced (read,
    openat2, mkdirat, mknodat, ...), or a wait in an untraced call such as
    the read of the channel from the other process.  ``others_calls``
    counts the other processes' traced calls meanwhile: many, and the gap
    is likely a wait for them."""
    last: dict[int, dict] = {}
    gaps = []
    for i, e in enumerate(events):
        pid = e["pid"]
        if pid not in names:
            continue
        if pid in last:
            j, before = last[pid]
            others = sum(1 for o in events[j + 1:i] if o["pid"] != pid and o["call"] != "+++")
            gaps.append({"process": names[pid], "ms": (e["t"] - before["t"]) * 1e3,
                         "at_ms": (before["t"] - t0) * 1e3, "others_calls": others,
                         "after": _brief(before), "before": _brief(e)})
        last[pid] = (i, e)
    return sorted(gaps, key=lambda g: -g["ms"])[:most]


def _brief(event: dict) -> str:
    if event["call"] == "+++":
        return event["args"]
    args = event["args"].split(", ")
    first = args[1] if event["call"] == "openat" and len(args) > 1 else args[0]
    return f"{event['call']}({first[:70]})"


PHASES = [
    ("exec", "script", "interpreter start-up and site"),
    ("script", "config", "kubirun CLI: imports, parsing, up to reading config.json"),
    ("config", "cgroup", "spec checks, state dir, imports, up to the first cgroup mkdir"),
    ("cgroup", "fork", "cgroups made and limits written, up to the fork"),
    ("fork", "pivot_root", "init: namespaces, mounts (runtime: cgroup joins)"),
    ("pivot_root", "execve", "init: masks, read-only root, user, exec fifo"),
    ("execve", "exited", "the container's program"),
    ("exited", "end", "runtime: wait, delete, interpreter exit"),
]


def phases(at_ms: dict, times: list[float]) -> list[dict]:
    """PHASES with their length and the traced calls that fall in each
    (each one a stop under strace, so a phase with many is inflated more)."""
    rows = []
    for a, b, what in PHASES:
        start, end = at_ms[a], at_ms[b]
        known = start is not None and end is not None
        rows.append({"from": a, "to": b, "what": what,
                     "ms": end - start if known else None,
                     "traced_calls": sum(start <= t < end for t in times) if known else None})
    return rows


def count_calls(events: list[dict], runtime: int, container: int | None) -> dict:
    counts: dict[str, dict[str, int]] = {"runtime": {}, "container": {}, "others": {}}
    for e in events:
        if e["call"] == "+++":
            continue
        who = "runtime" if e["pid"] == runtime else "container" if e["pid"] == container \
            else "others"
        key = e["call"]
        if key == "openat" and re.search(r'\.(py|pyc|so(\.\d+)*)"', e["args"]):
            key = "openat (module files)"
        counts[who][key] = counts[who].get(key, 0) + 1
    return counts


def format_profile(report: dict) -> str:
    def ms(x: float | None) -> str:
        return f"{x:7.1f} ms" if x is not None else "     n/a  "

    u, it, st = report["untraced"], report["importtime"], report["strace"]
    lines = ["kubirun profile: `kubirun run --bundle` of /bin/true",
             (f"  untraced, median of {u['runs']}: kubirun {u['kubirun_median_ms']:.1f} ms; "
              f"python -I -S -c pass {u['python_median_ms']:.1f} ms"),
             (f"  -X importtime run (wall {it['wall_ms']:.1f} ms): imports "
              f"{it['imports_ms']:.1f} ms in {it['modules']} modules, "
              f"{it['kubirun_ms']:.1f} ms of them kubirun's; largest top-level (ms):"),
             "    " + ", ".join(f"{n} {v:.1f}" for n, v in it["largest_ms"].items())]
    if "unavailable" in st:
        lines.append(f"  strace: {st['unavailable']}")
        return "\n".join(lines)
    at = st["at_ms"]
    bpf = " --seccomp-bpf" if st["seccomp_bpf"] else " (no --seccomp-bpf: every syscall stops)"
    lines.append(f"  strace run{bpf} (wall {st['wall_ms']:.1f} ms), times from the first exec:")

    def span(a: str, b: str) -> float | None:
        return at[b] - at[a] if at[a] is not None and at[b] is not None else None

    lines.append(f"    first exec -> container's execve of /bin/true {ms(span('exec', 'execve'))}")
    lines.append(f"    that execve -> runtime's exit                {ms(span('execve', 'end'))}")
    extra = st["wall_ms"] - u["kubirun_median_ms"]
    lines.append(f"    in detail (strace added {extra:.1f} ms to the untraced median over "
                 f"{st['traced_calls']} traced calls, ~{extra * 1e3 / st['traced_calls']:.0f} us "
                 f"each; calls = traced calls in the phase):")
    for row in st["phases_ms"]:
        calls = f"{row['traced_calls']:4d}" if row["traced_calls"] is not None else " n/a"
        lines.append(f"      {row['from'] + ' -> ' + row['to']:<22}{ms(row['ms'])} {calls}  "
                     f"{row['what']}")
    lines.append("    largest gaps between two traced calls of one process "
                 "(others = the other processes' traced calls meanwhile):")
    for g in st["largest_gaps"]:
        lines.append(f"      {g['ms']:5.1f} ms at {g['at_ms']:5.1f} ({g['process']}, "
                     f"others {g['others_calls']}): after {g['after']}, before {g['before']}")
    for who, calls in st["counts"].items():
        if calls:
            lines.append(f"    {who} syscalls: " + ", ".join(
                f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


# --- command line ---------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, each="runtime")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the comparison: kubirun alone, once under "
                             "python -X importtime and once under strace, and where its "
                             "time goes")
    return start_latency.parse_args(argv, parser)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("oci_run: run as root (namespaces, cgroups, runc)", file=sys.stderr)
        return 1

    def note(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        report = profile(args, note) if args.profile else benchmark(args, note)
    except BenchError as e:
        print(f"oci_run: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.profile:
        print(format_profile(report))
    else:
        print(format_table(report["results"], args.runs, args.warmup, REFS,
                           title="`RUNTIME run --bundle B ID` of /bin/true"))
        print(verdict(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
