"""Image unpacking: kubirun's cold import next to GNU tar, and a warm run of
a stored image next to a run of the same root as a plain directory.

Cold (every run into a new directory or a new store, the same ``.tar.gz``
for all; ``sync`` before each run, untimed):

    gnu tar       ``tar --numeric-owner -xpzf IMAGE -C DIR``
    pigz          ``tar --numeric-owner -I pigz -xpf IMAGE -C DIR``  (if installed)
    tarfile       ``tarfile.open(IMAGE).extractall(DIR, filter="fully_trusted")``
    kubirun       ``kubirun images import IMAGE`` into an empty store: detection,
                  decompression, sha256 of the layer (its diff_id), the safe
                  extractor, the store's records

Warm (the busybox demo image, imported once before the timed runs):

    stored        ``kubirun run IMAGE.tar.gz -- /bin/true``: a lookup and an
                  overlay mount of the stored layer
    directory     ``kubirun run DIR -- /bin/true`` on the same root unpacked

Goals (issue 20): cold <= 1.0x pigz (so <= GNU tar too); warm stored <=
1.2x directory.  Besides the ratio of the medians, each comparison gives the
median of the same-round ratios (kubirun's run over the reference's in the
same round), steadier on a machine with other work running.

The outputs of the cold runs are removed only after the last one: ext4
without a journal does not reuse an inode freed in the last minute (five
more while its table block is dirty) and scans past each such inode for
every file it creates, so a run right after the ``rm -rf`` of the previous
run's tree spent most of its time in that scan (perf: ``recently_deleted``),
whoever was being timed.  They need the image's unpacked size times the
number of cold runs (warm-up included) of all candidates, on top of the
free space.  ``--workdir /dev/shm`` takes the disk out altogether: what is
left is decompression and the system calls.

The default cold image is built from this host's files (``tar -czf`` of
/usr/lib/python3.*, /etc, /usr/sbin, /usr/share/zoneinfo, /usr/share/perl:
about 100 MB and 6,000 entries, the size of a debian minbase image);
``--image`` takes any rootfs ``.tar.gz`` instead (a debootstrap minbase).

Usage: python3 bench/unpack.py [--cold-runs N] [--cold-warmup K] [--runs N]
       [--warmup K] [--image IMAGE.tar.gz] [--workdir DIR] [--json]
(as root; stdlib only; every input and output lives in a temporary
directory removed at the end.)  Runs alternate as in start_latency.py,
whose helpers this script imports.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from start_latency import (
    BenchError,
    Candidate,
    _check,
    alternate,
    argument_parser,
    ensure_image,
    format_table,
    kubirun_command,
    non_negative_int,
    remove_tmp,
    script_interpreter,
    summarise,
)

COLD_GOAL = 1.0
WARM_GOAL = 1.2
HOST_TREES = ["usr/lib/python3.*", "etc", "usr/sbin", "usr/share/zoneinfo", "usr/share/perl"]


def build_host_image(tmp: Path) -> Path:
    """A rootfs-like .tar.gz of this host's files (numeric owners, sorted)."""
    members = sorted({m for pattern in HOST_TREES for m in glob.glob(pattern, root_dir="/")})
    if not members:
        raise BenchError("none of the host trees to archive exist here: pass --image")
    image = tmp / "host-image.tar.gz"
    proc = subprocess.run(["tar", "--numeric-owner", "--sort=name", "--ignore-failed-read",
                           "-czf", str(image), "-C", "/", *members],
                          stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode not in (0, 1):  # 1: files changed while read (/etc): fine
        raise BenchError(f"building the host image failed: {proc.stderr.decode(errors='replace')}")
    return image


def describe(image: Path) -> dict:
    listing = subprocess.run(["tar", "-tzf", str(image)], capture_output=True, check=True).stdout
    size = 0
    with subprocess.Popen(["gzip", "-dc", str(image)], stdout=subprocess.PIPE) as gz:
        while chunk := gz.stdout.read(1 << 20):
            size += len(chunk)
    return {"path": str(image), "compressed_bytes": image.stat().st_size,
            "uncompressed_bytes": size, "entries": listing.count(b"\n")}


def _fresh(path: Path) -> None:
    """A new, empty ``path``, and the previous runs' output written back
    before the timed run starts."""
    path.mkdir(parents=True)
    subprocess.run(["sync"], check=False)


def cold_candidates(tmp: Path, image: Path) -> list[Candidate]:
    outputs = tmp / "out"
    kubirun = kubirun_command()
    python = script_interpreter(kubirun)

    def out(n: int) -> str:
        return str(outputs / str(n))

    def prepare(n: int) -> None:
        _fresh(outputs / str(n))

    candidates = [
        Candidate("gnu tar", lambda n: ["tar", "--numeric-owner", "-xpzf", str(image), "-C", out(n)],
                  prepare=prepare),
    ]
    if shutil.which("pigz"):
        candidates.append(Candidate(
            "pigz", lambda n: ["tar", "--numeric-owner", "-I", "pigz", "-xpf", str(image),
                               "-C", out(n)], prepare=prepare))
    candidates.append(Candidate(
        "tarfile", lambda n: [python, "-I", "-S", "-c",
                              "import sys, tarfile; tarfile.open(sys.argv[1]).extractall("
                              "sys.argv[2], numeric_owner=True, **({'filter': 'fully_trusted'}"
                              " if hasattr(tarfile, 'data_filter') else {}))",
                              str(image), out(n)], prepare=prepare))
    kubirun_cold = Candidate("kubirun", lambda n: [kubirun, "images", "import", str(image)])

    def prepare_store(n: int) -> None:  # a new store per run, as KUBIRUN_STORE
        prepare(n)
        kubirun_cold.env = {**os.environ, "KUBIRUN_STORE": str(outputs / str(n) / "store"),
                            "KUBIRUN_PROGRESS": "0"}

    kubirun_cold.prepare = prepare_store
    candidates.append(kubirun_cold)
    return candidates


def paired_ratio(candidates: list[Candidate], name: str, ref: str) -> float | None:
    """The median over rounds of ``name``'s run over ``ref``'s in the same
    round (both ran within seconds of each other, under the same load)."""
    by_name = {c.name: c.samples for c in candidates}
    if ref not in by_name or not by_name[ref]:
        return None
    return statistics.median(a / b for a, b in zip(by_name[name], by_name[ref]))


def warm_candidates(tmp: Path, busybox: Path) -> list[Candidate]:
    kubirun = kubirun_command()
    store = tmp / "warm-store"
    env = {**os.environ, "KUBIRUN_STORE": str(store), "KUBIRUN_PROGRESS": "0"}
    _check(["env", f"KUBIRUN_STORE={store}", kubirun, "images", "import", str(busybox)],
           "importing the busybox image")
    rootfs = tmp / "busybox-root"
    rootfs.mkdir()
    _check(["tar", "--numeric-owner", "-xzf", str(busybox), "-C", str(rootfs)], "unpacking busybox")
    return [
        Candidate("stored image", lambda n: [kubirun, "run", "--network", "none", str(busybox), "--",
                                             "/bin/true"], env=env),
        Candidate("directory", lambda n: [kubirun, "run", "--network", "none", str(rootfs), "--",
                                          "/bin/true"], env=env),
    ]


def benchmark(args) -> dict:
    def note(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    busybox = ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-unpack-", dir=args.workdir))
    try:
        image = Path(args.image).resolve() if args.image else build_host_image(tmp)
        info = describe(image)
        note(f"cold image: {info['path']}: {info['compressed_bytes'] / 1e6:.1f} MB gzip, "
             f"{info['uncompressed_bytes'] / 1e6:.1f} MB, {info['entries']} entries; "
             f"unpacked under {tmp.parent}")
        counter = [0]
        cold = cold_candidates(tmp, image)
        alternate(cold, args.warmup_cold, counter, record=False)
        alternate(cold, args.runs_cold, counter, record=True)
        shutil.rmtree(tmp / "out", ignore_errors=True)
        warm = warm_candidates(tmp, busybox)
        alternate(warm, args.warmup, counter, record=False)
        alternate(warm, args.runs, counter, record=True)
    finally:
        remove_tmp(tmp)
    cold_summary = summarise(cold, refs=("gnu tar", "pigz"))
    warm_summary = summarise(warm, refs=("directory",))
    return {
        "image": info, "workdir": str(tmp.parent),
        "cold": {"runs": args.runs_cold, "warmup": args.warmup_cold, "results": cold_summary},
        "warm": {"runs": args.runs, "warmup": args.warmup, "results": warm_summary},
        "cold_over_gnu_tar": cold_summary["kubirun"]["vs_gnu tar"],
        "cold_over_pigz": cold_summary["kubirun"].get("vs_pigz"),
        "warm_over_directory": warm_summary["stored image"]["vs_directory"],
        "same_round": {
            "cold_over_gnu_tar": paired_ratio(cold, "kubirun", "gnu tar"),
            "cold_over_pigz": paired_ratio(cold, "kubirun", "pigz"),
            "warm_over_directory": paired_ratio(warm, "stored image", "directory"),
        },
        "goals": {"cold_over_pigz": COLD_GOAL, "warm_over_directory": WARM_GOAL},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, "warm candidate")
    parser.add_argument("--cold-runs", dest="runs_cold", type=non_negative_int, default=5,
                        help="timed cold unpacks of each candidate (default 5)")
    parser.add_argument("--cold-warmup", dest="warmup_cold", type=non_negative_int, default=1,
                        help="untimed cold unpacks of each candidate (default 1)")
    parser.add_argument("--image", help="a rootfs .tar.gz for the cold runs (default: built"
                                        " from this host's files)")
    parser.add_argument("--workdir", help="where the outputs go (default: $TMPDIR); /dev/shm"
                                          " takes the disk out of the comparison")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.runs_cold < 1:
        parser.error("--runs and --cold-runs must be at least 1")
    if os.geteuid() != 0:
        print("unpack: run as root (owners, devices, mounts)", file=sys.stderr)
        return 1
    try:
        report = benchmark(args)
    except BenchError as e:
        print(f"unpack: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_table(report["cold"]["results"], args.runs_cold, args.warmup_cold,
                       refs=("gnu tar", "pigz"), title="cold unpack"))
    print(format_table(report["warm"]["results"], args.runs, args.warmup,
                       refs=("directory",), title="warm run"))
    same = report["same_round"]
    pigz = report["cold_over_pigz"]
    if pigz:
        print(f"cold: kubirun/pigz = {pigz:.2f}, same-round median {same['cold_over_pigz']:.2f}"
              f" (goal <= {COLD_GOAL}); kubirun/gnu tar = {report['cold_over_gnu_tar']:.2f},"
              f" same-round {same['cold_over_gnu_tar']:.2f}")
    else:
        print(f"cold: kubirun/pigz = n/a (pigz is not installed, goal <= {COLD_GOAL});"
              f" kubirun/gnu tar = {report['cold_over_gnu_tar']:.2f},"
              f" same-round {same['cold_over_gnu_tar']:.2f}")
    print(f"warm: stored/directory = {report['warm_over_directory']:.2f}, same-round median"
          f" {same['warm_over_directory']:.2f} (goal <= {WARM_GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
