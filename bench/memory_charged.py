"""Memory charged to a container by its runtime: ``create`` + ``start`` of
/bin/true, then the peak of the container's memory cgroup before ``delete``
(v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``).

What a runtime's own process touches after joining the container's memory
cgroup is charged to the container: runc's init is Go and joins early
(issue 5 measured 3.6-5.4 MB), crun's C init 0.3-0.8 MB.  kubirun's init
joins the memory hierarchy last, just before ``execve``.  Goal: <= 1 MB,
and ``kubirun run --memory 2m IMAGE -- true`` succeeds (tests check that).

Same bundle, same cgroup parent (/kubirun-bench-oci, as oci_run.py; removed
at the end), alternating runtimes, medians over ``--runs``.

Usage: python3 bench/memory_charged.py [--runs N] [--json]   (as root)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oci_run import CGROUP_PARENT, REFS, Bundle, cleaned_up, cgroup_mounts
from start_latency import ensure_image, kubirun_command, unpack_rootfs


def peak_file(container_id: str, parent: str = CGROUP_PARENT) -> Path | None:
    """The container's memory peak file in this host's memory hierarchy
    (its cgroup PARENT/CONTAINER_ID)."""
    for mount in cgroup_mounts():
        base = Path(mount) / parent.strip("/") / container_id
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            if (base / name).exists():
                return base / name
    return None


def charged_once(runtime: str, command: str, bundle: Bundle, tmp: Path, n: int) -> int | str:
    """Bytes charged for one container of ``runtime``, or its error line."""
    container_id = f"{runtime}-{n}"
    bundle.use_cgroup(container_id)
    root = ["--root", str(tmp / f"{runtime}-state")]
    # The container inherits create's stdio and keeps it: a file, not a pipe
    # (reading a pipe to its end would wait for the container).
    errors = tmp / f"{container_id}.stderr"
    with open(errors, "w") as err:
        created = subprocess.run([command, *root, "create", "--bundle", str(bundle.path),
                                  container_id], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    if created.returncode:
        subprocess.run([command, *root, "delete", "--force", container_id], timeout=30)
        return (errors.read_text().strip().splitlines() or ["create failed"])[-1]
    try:
        subprocess.run([command, *root, "start", container_id], check=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = subprocess.run([command, *root, "state", container_id], capture_output=True,
                                   text=True, timeout=30)
            if json.loads(state.stdout or "{}").get("status") == "stopped":
                break
            time.sleep(0.02)
        path = peak_file(container_id, bundle.cgroup_parent)
        return int(path.read_text()) if path else "no memory peak file for the container"
    finally:
        subprocess.run([command, *root, "delete", "--force", container_id], timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kubirun-bench-mem-"))
    results: dict[str, list[int]] = {}
    errors: dict[str, str] = {}
    try:
        kubirun = kubirun_command()
        bundle = Bundle(unpack_rootfs(ensure_image(), tmp), tmp, kubirun)
        runtimes = [("kubirun", kubirun)] + [(r, r) for r in REFS if shutil.which(r)]
        for n in range(args.runs):
            for name, command in runtimes[n % len(runtimes):] + runtimes[:n % len(runtimes)]:
                if name in errors:
                    continue
                value = charged_once(name, command, bundle, tmp, n)
                if isinstance(value, str):
                    errors[name] = value
                else:
                    results.setdefault(name, []).append(value)
    finally:
        cleaned_up(tmp, lambda m: print(m, file=sys.stderr))
    report = {name: {"median_bytes": statistics.median(v), "min": min(v), "max": max(v),
                     "runs": len(v)} for name, v in results.items()}
    report["unavailable"] = errors
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"memory charged to a container running /bin/true ({args.runs} runs each, bytes)")
    print(f"{'runtime':10} {'median':>10} {'min':>10} {'max':>10}")
    for name, r in report.items():
        if name != "unavailable":
            print(f"{name:10} {r['median_bytes']:>10.0f} {r['min']:>10} {r['max']:>10}")
    for name, why in errors.items():
        print(f"{name}: unavailable ({why})")
    kubirun_peak = report.get("kubirun", {}).get("median_bytes")
    if kubirun_peak is not None:
        verdict = "met" if kubirun_peak <= 1 << 20 else "NOT met"
        print(f"kubirun: {kubirun_peak / (1 << 20):.2f} MiB (goal <= 1 MiB: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
