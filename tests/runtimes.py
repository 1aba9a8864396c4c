"""The one place that knows how to run the runtimes the tests compare:
kubirun always, and each peer (runc, crun) where it is installed.

- ``binary(name)``: where each one's binary is (kubirun: the console
  script of this virtualenv, as users run it);
- ``command(name, root)``: the argv prefix that drives it with its own
  state root, ``NAME --root ROOT``, and whatever wrapper it needs on this
  host: crun refuses a hybrid cgroup host (a cgroup2 mount at
  /sys/fs/cgroup/unified beside the v1 hierarchies), so there it runs in
  a private mount namespace of its own where a tmpfs hides that mount
  (``hide_unified``), a fresh one per call: nothing to clean up, and
  nothing of it reaches the host;
- ``CoveredUnified``: the same view held open by one process, for engines
  (tests/engines) that start runtimes themselves;
- ``params(*peers)``: kubirun, then the peers, as pytest parameters with
  the ``runtimes`` marker (pyproject.toml), so ``pytest -m runtimes`` runs
  the differential tests alone and ``-m "not runtimes"`` leaves them out.

    @pytest.fixture(params=runtimes.params("runc"))
    def oci(request, tmp_path):
        argv = runtimes.command(request.param, tmp_path / "state")

The drivers built on it: tests/integration/oci_helpers.py's ``Runtime``
(the ``oci`` fixture, also used by tests/cgroupv2), tests/conftest.py's
``runtime`` (image-style runs), tests/engines/conftest.py's
``oci_runtime`` (the binary an engine is given).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = ("runc", "crun")
KUBIRUN = Path(sys.executable).parent / "kubirun"
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED_MOUNT = CGROUP_ROOT / "unified"


def binary(name: str) -> str | None:
    """The runtime's binary, or None when it is not installed (runc is
    often in /usr/sbin, which a non-root PATH may lack)."""
    if name == "kubirun":
        return str(KUBIRUN)
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(path, os.X_OK)),
        None)


def unified_is_mounted() -> bool:
    """A hybrid host's cgroup2 mount at /sys/fs/cgroup/unified."""
    return os.path.ismount(UNIFIED_MOUNT)


def hide_unified() -> list[str]:
    """An argv prefix that runs the rest in a private mount namespace
    where a tmpfs covers the unified cgroup2 mount (crun then sees a pure
    v1 host, as runc and kubirun see the v1 hierarchies anyway)."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            f"mount -t tmpfs -o size=4k,mode=0755 kubirun-test-cover {UNIFIED_MOUNT}"
            ' && exec "$@"', "sh"]


def state_root(name: str, tmp_path: Path) -> Path:
    """A test's state root for runtime ``name`` (kubirun's is the one
    tests/conftest.py checks to be empty after each test)."""
    return tmp_path / ("state" if name == "kubirun" else f"{name}-state")


def command(name: str, root: Path | str) -> list[str]:
    """The argv prefix that drives runtime ``name`` with state root
    ``root``: append a subcommand and its arguments."""
    path = binary(name)
    assert path is not None, f"{name} is not installed"
    wrapper = hide_unified() if name == "crun" and unified_is_mounted() else []
    return [*wrapper, path, "--root", str(root)]


def run(name: str, root: Path | str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``command(name, root) + args``, its output captured as text."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run([*command(name, root), *map(str, args)], check=False, **kwargs)


def params(*peers: str) -> list:
    """kubirun, then each of ``peers`` (skipped where not installed), as
    pytest parameters with the ``runtimes`` marker."""
    unknown = set(peers) - set(PEERS)
    assert not unknown, f"unknown peer runtimes: {unknown}"
    found = [pytest.param("kubirun", id="kubirun", marks=pytest.mark.runtimes)]
    for name in peers:
        found.append(pytest.param(name, id=name, marks=[
            pytest.mark.runtimes,
            pytest.mark.skipif(binary(name) is None, reason=f"{name} is not installed")]))
    return found


class CoveredUnified:
    """A private mount namespace in which a tmpfs covers the unified cgroup2
    mount (mountinfo then lists both: the runtime must take the topmost).
    Held by one process of ours (``holder``); engines run in it through
    ``prefix`` (nsenter), their children stay in it.  Nothing mounted there
    reaches the host, and all of it goes when its last process does."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size=64k,mode=0755 kubirun-test-cover {UNIFIED_MOUNT}"
             " && echo covered && exec sleep 100000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.holder.stdout.readline().strip() != "covered":
            self.holder.wait(timeout=10)
            raise RuntimeError(f"cannot cover {UNIFIED_MOUNT}: {self.holder.stderr.read()}")
        self.prefix = ["nsenter", "--target", str(self.holder.pid), "--mount", "--"]

    def fs_type(self, path: Path) -> str:
        """The type of the filesystem at ``path``, as seen in this view."""
        done = subprocess.run([*self.prefix, "stat", "-f", "-c", "%T", str(path)],
                              capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(timeout=10)
        for stream in (self.holder.stdout, self.holder.stderr):
            stream.close()
