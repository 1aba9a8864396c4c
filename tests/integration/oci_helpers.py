"""Fixtures and helpers for the OCI contract tests (tests/integration/test_oci_*.py).

Every test takes ``oci``, parametrized over kubirun and runc (skipped when
runc is not installed): if runc fails a test, the test is wrong.  The test
files import the fixtures from here::

    from tests.integration.oci_helpers import bundle, oci  # noqa: F401

``oci.cmd(*args)`` runs ``RUNTIME --root STATE *args`` and captures its
output; ``oci.create(...)`` and ``oci.run_detached(...)`` send the
runtime's (and so the container's) stdio to files instead, since the
container keeps them open after the command returns.  Every id handed out
by ``oci.new_id()`` is deleted with ``delete --force`` at teardown, and the
teardown then checks that the state root and the bundles' cgroups are gone.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests import runtimes
from tests.conftest import TEST_CGROUP_PARENT

KUBIRUN_BIN = runtimes.KUBIRUN
RUNC_BIN = runtimes.binary("runc")
CGROUP_MOUNT = Path("/sys/fs/cgroup")
TIMEOUT = 30
HOST_SH = "/bin/sh"


def wait_for(predicate, what: str, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cgroup_dirs(path: str) -> list[Path]:
    """The directories of cgroup ``path`` that exist, in every hierarchy."""
    found = []
    rel = path.strip("/")
    pure_v2 = (CGROUP_MOUNT / "cgroup.controllers").exists()  # one hierarchy, at the top
    for hierarchy in [""] if pure_v2 else sorted(os.listdir(CGROUP_MOUNT)):
        d = CGROUP_MOUNT / hierarchy / rel
        if d.is_dir():
            found.append(d)
    return found


def _force_remove_cgroup(path: str) -> None:
    """Teardown only: empty and remove a test container's cgroup that a
    runtime left behind (its processes are ours: killed by PID)."""
    dirs = cgroup_dirs(path)
    for d in dirs:
        if (d / "freezer.state").exists():
            try:
                (d / "freezer.state").write_text("THAWED")
            except OSError:
                pass
        if (d / "cgroup.freeze").exists():
            try:
                (d / "cgroup.freeze").write_text("0")
            except OSError:
                pass
    for d in dirs:
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for d in sorted(dirs, key=lambda p: -len(p.parts)):
        deadline = time.monotonic() + 5
        while d.exists():
            try:
                # nested cgroups first (a runtime may have made some)
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    sub.rmdir()
                d.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


class Runtime:
    """One OCI runtime (run as tests/runtimes.py says) with a state root of
    the test's own: ``Runtime.for_test(name, tmp_path)``."""

    def __init__(self, name: str, root: Path, workdir: Path) -> None:
        self.name = name
        self.binary = runtimes.binary(name)
        self.root = root
        self.workdir = workdir  # for the files this object makes (create's stdio)
        self.ids: list[str] = []
        self.cgroups: list[str] = []
        self.pids: set[int] = set()  # every init pid `state` showed: gone at teardown
        self.bundle_cgroups: dict[Path, str] = {}

    @classmethod
    def for_test(cls, name: str, tmp_path: Path) -> "Runtime":
        return cls(name, runtimes.state_root(name, tmp_path), tmp_path)

    def argv(self, *args: str) -> list[str]:
        return [*runtimes.command(self.name, self.root), *map(str, args)]

    def cmd(self, *args, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(*args), check=False, **kw)

    def new_id(self) -> str:
        container_id = f"t{uuid.uuid4().hex[:12]}"
        self.ids.append(container_id)
        return container_id

    def _with_files(self, args: list[str], tag: str, **kw) -> subprocess.CompletedProcess:
        """Run with stdout/stderr to files (the container may keep them
        open); the result holds what they had when the command returned.
        ``result.out_path`` is the stdout file, for what comes later."""
        out_path = self.workdir / f"{tag}-{uuid.uuid4().hex[:6]}.out"
        err_path = out_path.with_suffix(".err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            result = subprocess.run(self.argv(*args), check=False, stdout=out, stderr=err,
                                    stdin=kw.pop("stdin", subprocess.DEVNULL),
                                    timeout=kw.pop("timeout", TIMEOUT), **kw)
        result.stdout = out_path.read_text()
        result.stderr = err_path.read_text()
        result.out_path = out_path
        return result

    def create(self, container_id: str, bundle: Path, *extra, **kw) -> subprocess.CompletedProcess:
        return self._with_files(["create", "--bundle", str(bundle), *extra, container_id],
                                f"create-{container_id}", **kw)

    def run_detached(self, container_id: str, bundle: Path, *extra, **kw) -> subprocess.CompletedProcess:
        return self._with_files(["run", "-d", "--bundle", str(bundle), *extra, container_id],
                                f"run-{container_id}", **kw)

    def state(self, container_id: str) -> dict:
        result = self.cmd("state", container_id)
        assert result.returncode == 0, f"{self.name} state {container_id}: {result.stderr}"
        state = json.loads(result.stdout)
        if state.get("pid"):
            self.pids.add(state["pid"])
            ALL_PIDS.add(state["pid"])
        return state

    def status(self, container_id: str) -> str:
        return self.state(container_id)["status"]

    def wait_status(self, container_id: str, wanted: str, timeout: float = 10.0) -> dict:
        last = {}

        def reached():
            nonlocal last
            last = self.state(container_id)
            return last["status"] == wanted

        try:
            wait_for(reached, f"{container_id} to be {wanted}", timeout)
        except AssertionError:
            raise AssertionError(f"{self.name}: {container_id} is {last.get('status')!r},"
                                 f" not {wanted!r} after {timeout}s") from None
        return last

    def start_created(self, container_id: str, bundle: Path, *extra, until: str = "running") -> dict:
        """create then start; the state once ``until`` (running, or stopped
        for a short-lived process)."""
        created = self.create(container_id, bundle, *extra)
        assert created.returncode == 0, created.stderr
        started = self.cmd("start", container_id)
        assert started.returncode == 0, started.stderr
        return self.wait_status(container_id, until)

    def cleanup(self) -> list[str]:
        """delete --force every id; what was left behind, as messages."""
        problems = []
        for container_id in self.ids:
            try:
                state = self.cmd("state", container_id)
                if state.returncode == 0 and json.loads(state.stdout).get("pid"):
                    self.pids.add(json.loads(state.stdout)["pid"])
                    ALL_PIDS.add(json.loads(state.stdout)["pid"])
                result = self.cmd("delete", "--force", container_id)
            except subprocess.TimeoutExpired:
                problems.append(f"delete --force {container_id} timed out")
                continue
            if result.returncode != 0:
                problems.append(f"delete --force {container_id}: {result.stderr.strip()}")
        if self.root.exists():
            left = sorted(os.listdir(self.root))
            if left:
                problems.append(f"state left in {self.root}: {left}")
                for name in left:
                    shutil.rmtree(self.root / name, ignore_errors=True)
        try:
            wait_for(lambda: not any(pid_alive(p) for p in self.pids), "the inits to die", timeout=5)
        except AssertionError:
            problems.append(f"processes left running: {[p for p in self.pids if pid_alive(p)]}")
        for path in self.cgroups:
            if cgroup_dirs(path):
                problems.append(f"cgroup {path} left behind")
                _force_remove_cgroup(path)
        return problems


ALL_PIDS: set[int] = set()


@pytest.fixture(scope="session")
def _all_reaped():
    """At the end of the session, wait until every container init is gone
    from /proc: dead inits of detached containers are reparented to the
    machine's init, which may reap them a second or so later, and the
    session's host check counts a zombie's namespaces as leaked."""
    yield
    try:
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") and not pid_alive(p) for p in ALL_PIDS),
                 "dead container inits to be reaped", timeout=15, interval=0.1)
    except AssertionError:
        pass  # the session check reports what is left


@pytest.fixture(params=runtimes.params("runc"))
def oci(request, tmp_path, _all_reaped) -> Runtime:
    runtime = Runtime.for_test(request.param, tmp_path)
    yield runtime
    problems = runtime.cleanup()
    assert not problems, f"{runtime.name} left things behind: {problems}"


# --- bundles ---------------------------------------------------------------

_BASE_CONFIG: dict | None = None


def base_config(tmp_path_factory=None) -> dict:
    """The default config of `runc spec` (or `kubirun spec` without runc),
    made once: every bundle of every runtime starts from the same one."""
    global _BASE_CONFIG
    if _BASE_CONFIG is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="oci-spec-") as d:
            binary = RUNC_BIN or str(KUBIRUN_BIN)
            subprocess.run([binary, "spec", "--bundle", d], check=True, capture_output=True,
                           timeout=TIMEOUT)
            _BASE_CONFIG = json.loads(Path(d, "config.json").read_text())
    return json.loads(json.dumps(_BASE_CONFIG))


TMPFS_TMP = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=16m"]}
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]


@pytest.fixture
def bundle(tmp_path, busybox_dir, oci):
    """A factory: ``bundle(args, edit=None)`` makes a bundle directory whose
    config.json runs ``args`` in the shared busybox root (read-only, with a
    tmpfs on /tmp for writes), without a terminal, in a cgroup under the
    session's test parent.  ``edit(config)`` may change the config last."""
    count = 0

    def make(args=("sleep", "100"), edit=None, name: str | None = None) -> Path:
        nonlocal count
        count += 1
        directory = tmp_path / (name or f"bundle{count}")
        directory.mkdir()
        config = base_config()
        config["root"] = {"path": str(busybox_dir), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["process"]["env"] = list(DEFAULT_ENV)
        config["hostname"] = "oci-test"
        config["mounts"].append(dict(TMPFS_TMP))
        cgroup = f"{TEST_CGROUP_PARENT}/oci-{uuid.uuid4().hex[:12]}"
        config["linux"]["cgroupsPath"] = cgroup
        if edit is not None:
            edit(config)
        cgroup = config.get("linux", {}).get("cgroupsPath") or cgroup
        oci.cgroups.append(cgroup)
        oci.bundle_cgroups[directory] = cgroup
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        return directory

    return make


def read_config(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "config.json").read_text())


def assert_nothing_left(oci: Runtime, container_id: str, bundle_dir: Path) -> None:
    """After a failed create/run: no state, no state directory, no cgroup."""
    result = oci.cmd("state", container_id)
    assert result.returncode != 0, f"{oci.name}: state of {container_id} still answers: {result.stdout}"
    assert not (oci.root / container_id).exists(), f"{oci.name} left {oci.root / container_id}"
    # runc removes the cgroup asynchronously on some paths: allow a moment
    path = oci.bundle_cgroups[bundle_dir]
    try:
        wait_for(lambda: not cgroup_dirs(path), f"cgroup {path} to go", timeout=3)
    except AssertionError:
        raise AssertionError(f"{oci.name} left cgroup {path}: {cgroup_dirs(path)}") from None


@pytest.fixture(scope="module")
def reachable_root(busybox_dir):
    """The busybox root where a user namespace's mapped root (host uid
    100000) can reach it: pytest's own temporary directories are 0700."""
    import tempfile

    top = tempfile.mkdtemp(prefix="kubirun-userns-", dir="/tmp")
    os.chmod(top, 0o755)
    root = os.path.join(top, "rootfs")
    shutil.copytree(busybox_dir, root, symlinks=True)
    yield root
    shutil.rmtree(top)
