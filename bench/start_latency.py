"""Start latency of ``kubirun run``, next to runc, crun and the kernel floor.

What is measured is the full cycle a user waits for: from starting the
runtime to its exit, for a container whose whole job is ``/bin/true`` on an
unpacked busybox root.  The candidates are

    kubirun   ``kubirun run ROOTFS -- /bin/true`` (directory used in place),
              under the default seccomp filter
    kubirun unconfined   the same with ``--security-opt seccomp=unconfined``
    runc      ``runc run`` on an equivalent OCI bundle          (if installed)
    crun      ``crun run`` on the same bundle   (if installed and it works here)
    floor     ``unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS
              /bin/true``: the namespaces and the exec alone, no runtime
    python    ``python3 -I -S -c pass`` with kubirun's interpreter: what any
              Python program pays before its first line

Why: kubirun is written in Python, so its start-up is the one cost that a
user of a Go or C runtime does not pay.  The goal is kubirun <= 1.5x runc;
the floor and the bare interpreter show how much of the gap is avoidable.

Runs alternate (one of each candidate per round, order rotated every round)
so that drift on the host (frequency scaling, page cache, other load) is
spread over all candidates instead of landing on one.  Each run is timed
with ``time.perf_counter`` around ``subprocess.run``; a non-zero exit aborts
the benchmark with the candidate's stderr.

Usage: python3 bench/start_latency.py [--runs N] [--warmup K] [--json]
(as root; stdlib only; builds its inputs in a temporary directory that it
removes at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "rootfs" / "busybox.tar.gz"
VENV_KUBIRUN = REPO / ".venv" / "bin" / "kubirun"
GOAL = 1.5


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass
class Candidate:
    """One command line to time, and the samples taken so far (seconds)."""

    name: str
    argv_for: Callable[[int], list[str]]  # run number -> command line
    env: dict[str, str] | None = None
    prepare: Callable[[int], None] | None = None  # run number -> set-up, not timed
    samples: list[float] = field(default_factory=list)


# --- preparing the inputs -------------------------------------------------

def ensure_image() -> Path:
    if not IMAGE.exists():
        _check(["make", "-C", str(IMAGE.parent)], "building the busybox image")
    return IMAGE


def unpack_rootfs(image: Path, tmp: Path) -> Path:
    rootfs = tmp / "rootfs"
    rootfs.mkdir()
    _check(["tar", "--numeric-owner", "-xzf", str(image), "-C", str(rootfs)],
           "unpacking the busybox image")
    return rootfs


def make_bundle(runtime: str, rootfs: Path, tmp: Path, *,
                readonly: bool | None = False) -> Path:
    """An OCI bundle for runc/crun: RUNTIME's default spec, on ROOTFS, /bin/true.
    READONLY is root.readonly (None: as RUNTIME's spec has it)."""
    bundle = tmp / "bundle"
    bundle.mkdir()
    _check([runtime, "spec", "--bundle", str(bundle)], f"{runtime} spec")
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if readonly is None:
        readonly = bool(config.get("root", {}).get("readonly", False))
    config["root"] = {"path": str(rootfs), "readonly": readonly}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    # A cgroup of the benchmark's own: left to itself runc nests its cgroup
    # under the caller's, which may belong to someone else.  Runs are
    # sequential, and each removes it when its container is deleted.
    config["linux"]["cgroupsPath"] = "/kubirun-bench-oci"
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def kubirun_command() -> str:
    """The console script next to the running interpreter, else the venv's."""
    beside = Path(sys.executable).parent / "kubirun"  # no resolve(): keep the venv
    return str(beside if beside.exists() else VENV_KUBIRUN)


def script_interpreter(script: str) -> str:
    """The interpreter named on SCRIPT's #! line (the one kubirun runs on)."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!") and Path(first[2:].split()[0]).exists():
        return first[2:].split()[0]
    return sys.executable


# --- the candidates -------------------------------------------------------

def build_candidates(tmp: Path, rootfs: Path) -> list[Candidate]:
    kubirun = kubirun_command()
    candidates = [
        # --network none: what runc's bundle has (lo only), and no bridge on the host
        Candidate("kubirun", lambda n: [kubirun, "run", "--network", "none", str(rootfs), "--", "/bin/true"],
                  env={**os.environ, "KUBIRUN_STORE": str(tmp / "store")}),
        # Without the default seccomp filter (runc's bundle has none): what
        # the filter costs an image run, its program read from the cache.
        Candidate("kubirun unconfined",
                  lambda n: [kubirun, "run", "--network", "none", "--security-opt",
                             "seccomp=unconfined", str(rootfs), "--", "/bin/true"],
                  env={**os.environ, "KUBIRUN_STORE": str(tmp / "store")}),
    ]
    oci_runtimes = [r for r in ("runc", "crun") if shutil.which(r)]
    if oci_runtimes:
        bundle = make_bundle(oci_runtimes[0], rootfs, tmp)
        candidates += [oci_candidate(r, tmp, bundle) for r in oci_runtimes]
    candidates.append(Candidate(
        "floor", lambda n: ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc",
                            "--net", "chroot", str(rootfs), "/bin/true"]))
    python = script_interpreter(kubirun)
    candidates.append(Candidate("python -I -S", lambda n: [python, "-I", "-S", "-c", "pass"]))
    return candidates


def oci_candidate(runtime: str, tmp: Path, bundle: Path) -> Candidate:
    state = tmp / f"{runtime}-state"
    return Candidate(runtime, lambda n: [runtime, "--root", str(state), "run",
                                         "--bundle", str(bundle), f"bench-{n}"])


def drop_unavailable(candidates: list[Candidate], counter: list[int],
                     note: Callable[[str], None]) -> tuple[list[Candidate], dict[str, str]]:
    """crun refuses some hosts (hybrid cgroups): try it once, drop it if it fails."""
    kept, dropped = [], {}
    for c in candidates:
        if c.name == "crun":
            counter[0] += 1
            if c.prepare:
                c.prepare(counter[0])
            proc = _run(c, counter[0])
            if proc.returncode != 0:
                lines = proc.stderr.decode(errors="replace").strip().splitlines()
                reason = lines[0] if lines else f"exit status {proc.returncode}"
                note(f"crun: unavailable here ({reason})")
                dropped[c.name] = reason
                continue
        kept.append(c)
    return kept, dropped


# --- running and timing ---------------------------------------------------

def _run(c: Candidate, n: int) -> subprocess.CompletedProcess:
    return subprocess.run(c.argv_for(n), env=c.env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def time_once(c: Candidate, n: int) -> float:
    start = time.perf_counter()
    proc = _run(c, n)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{c.name} exited with status {proc.returncode}: "
                         f"{' '.join(c.argv_for(n))}\n"
                         f"{proc.stderr.decode(errors='replace').rstrip()}")
    return elapsed


def alternate(candidates: list[Candidate], rounds: int, counter: list[int],
              record: bool) -> None:
    """ROUNDS rounds of one run per candidate, the order rotated every round."""
    for r in range(rounds):
        shift = r % len(candidates)
        for c in candidates[shift:] + candidates[:shift]:
            counter[0] += 1
            if c.prepare:
                c.prepare(counter[0])
            elapsed = time_once(c, counter[0])
            if record:
                c.samples.append(elapsed)


# --- reporting ------------------------------------------------------------

def percentile(samples: list[float], p: float) -> float:
    """Linear-interpolated percentile (0 <= p <= 100) of SAMPLES."""
    s = sorted(samples)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarise(candidates: list[Candidate],
              refs: tuple[str, ...] = ("runc", "floor")) -> dict[str, dict]:
    """Per candidate: median, p10, p90, min, max (ms), the median's ratio to
    each of REFS' medians (``vs_<ref>``, None if REF did not run), the samples."""
    medians = {c.name: statistics.median(c.samples) for c in candidates}
    return {c.name: {
        "median_ms": medians[c.name] * 1e3,
        "p10_ms": percentile(c.samples, 10) * 1e3,
        "p90_ms": percentile(c.samples, 90) * 1e3,
        "min_ms": min(c.samples) * 1e3,
        "max_ms": max(c.samples) * 1e3,
        **{f"vs_{ref}": medians[c.name] / medians[ref] if medians.get(ref) else None
           for ref in refs},
        "samples_ms": [round(s * 1e3, 3) for s in c.samples],
    } for c in candidates}


def verdict(summary: dict[str, dict]) -> str:
    ratio = summary["kubirun"]["vs_runc"]
    if ratio is None:
        return f"kubirun/runc = n/a: runc is not installed (goal <= {GOAL})"
    return f"kubirun/runc = {ratio:.2f} (goal <= {GOAL})"


def format_table(summary: dict[str, dict], runs: int, warmup: int,
                 refs: tuple[str, ...] = ("runc", "floor"),
                 title: str = "start latency") -> str:
    def ratio(x: float | None) -> str:
        return f"{x:.2f}x" if x is not None else "-"

    width = max([14, *(len(name) + 2 for name in summary)])
    lines = [f"{title}, {runs} alternating runs each after {warmup} warm-up "
             f"(ms, wall clock of the whole command)",
             f"{'name':<{width}}{'median':>8}{'p10':>8}{'p90':>8}{'max':>8}"
             + "".join(f"{'/' + ref:>8}" for ref in refs)]
    for name, row in summary.items():
        lines.append(f"{name:<{width}}{row['median_ms']:8.2f}{row['p10_ms']:8.2f}"
                     f"{row['p90_ms']:8.2f}{row['max_ms']:8.2f}"
                     + "".join(f"{ratio(row['vs_' + ref]):>8}" for ref in refs))
    return "\n".join(lines)


# --- plumbing -------------------------------------------------------------

def _check(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({' '.join(argv)}, status {proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace').rstrip()}")


def remove_tmp(tmp: Path) -> None:
    """Remove TMP, unless something is still mounted below it (never rm through a mount)."""
    prefix = str(tmp) + "/"
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    if mounted:
        print(f"warning: leaving {tmp} in place, mounts below it: {', '.join(mounted)}",
              file=sys.stderr)
        return
    shutil.rmtree(tmp, ignore_errors=True)


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def argument_parser(doc: str, each: str = "candidate") -> argparse.ArgumentParser:
    """--runs, --warmup and --json, for a benchmark of EACHes described by DOC."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=non_negative_int, default=30,
                        help=f"timed runs of each {each} (default 30)")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help=f"untimed warm-up runs of each {each} (default 3)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object instead of the table")
    return parser


def parse_args(argv: list[str] | None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or argument_parser(__doc__)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def benchmark(args: argparse.Namespace) -> dict:
    def note(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    image = ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-"))
    try:
        rootfs = unpack_rootfs(image, tmp)
        counter = [0]  # run number, for fresh container ids
        candidates, unavailable = drop_unavailable(build_candidates(tmp, rootfs), counter, note)
        alternate(candidates, args.warmup, counter, record=False)
        alternate(candidates, args.runs, counter, record=True)
    finally:
        remove_tmp(tmp)
    summary = summarise(candidates)
    return {"runs": args.runs, "warmup": args.warmup, "results": summary,
            "unavailable": unavailable,
            "kubirun_over_runc": summary["kubirun"]["vs_runc"], "goal": GOAL}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("start_latency: run as root (namespaces, runc)", file=sys.stderr)
        return 1
    try:
        report = benchmark(args)
    except BenchError as e:
        print(f"start_latency: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report["results"], args.runs, args.warmup))
        print(verdict(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
