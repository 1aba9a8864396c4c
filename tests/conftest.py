"""Shared fixtures: the demo image, a private store, runtimes to compare,
and a session-wide check that the host is left exactly as it was found."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests import runtimes

REPO = Path(__file__).resolve().parent.parent
KUBIRUN = [sys.executable, "-m", "kubirun"]
KUBIRUN_SCRIPT = runtimes.KUBIRUN  # the installed console script, as users run it
BUSYBOX_IMAGE = REPO / "rootfs" / "busybox.tar.gz"


# --- the host must be left as it was -------------------------------------
#
# Other workloads may run containers on this machine meanwhile (podman,
# runc, another kubirun): the session judges only what the suite itself
# makes.  Its own mounts are under its directories (pytest's base temporary
# directory, the checkout), its cgroups carry its prefix and PID, its links
# its prefixes, its processes its cgroups or its marker in their environment;
# and only what it added counts (what others removed meanwhile is theirs).

SUITE_PREFIX = "kubirun-test"  # in every cgroup name the suite makes
SUITE_LINKS = ("kubi", "kb")  # bridges and veths the suite's runs could make
SESSION_MARKER = f"KUBIRUN_TEST_SESSION={os.getpid()}"
OWNED_PATHS: list[str] = [str(REPO)]  # and pytest's base temp, once the session knows it


def _owned_path(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in OWNED_PATHS)


def _mount_table() -> list[tuple[str, ...]]:
    """The mounts under the suite's own directories."""
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if not _owned_path(fields[4]):
                continue
            # mount point, options, fs type, source: ids may be reused, so skip them
            rows.append((fields[4], fields[5], fields[sep + 1], fields[sep + 2]))
    return sorted(rows)


def _ours(cgroup_name: str) -> bool:
    """A cgroup directory name this session makes: kubirun-test-PID,
    kubirun-test-podman-PID..., or runc's shared kubirun-test-runc."""
    return cgroup_name.startswith(SUITE_PREFIX) and (
        cgroup_name.endswith(f"-{os.getpid()}") or cgroup_name == f"{SUITE_PREFIX}-runc")


def _our_cgroups() -> set[str]:
    found = set()
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if _ours(d):
                found.add(os.path.join(base, d))
    return found


def _dev_null() -> tuple[int, int, int, int]:
    st = os.stat("/dev/null")
    return (st.st_mode, st.st_uid, st.st_gid, st.st_rdev)


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # gone


def _is_ours(pid: str) -> bool:
    """Did the suite make this process: in one of its cgroups, or started
    with its marker in the environment?"""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            if any(_ours(part) for line in f for part in line.strip().split("/")):
                return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            return SESSION_MARKER.encode() in f.read().split(b"\0")
    except OSError:
        return False


def _namespaces_in_use(only_ours: bool = False) -> dict[str, set[str]]:
    """Every pid/mnt/net namespace some process is in (some process of the
    suite's)."""
    seen: dict[str, set[str]] = {"pid": set(), "mnt": set(), "net": set()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or _is_zombie(pid):
            continue  # a zombie waits for PID 1 to reap it (slowly here): not running
        if only_ours and not _is_ours(pid):
            continue
        for kind in seen:
            try:
                seen[kind].add(os.readlink(f"/proc/{pid}/ns/{kind}"))
            except OSError:
                pass
    return seen


def _suite_links() -> set[str]:
    return {name for name in os.listdir("/sys/class/net") if name.startswith(SUITE_LINKS)}


def _host_snapshot() -> dict:
    return {"mounts": set(_mount_table()), "cgroups": _our_cgroups(), "links": _suite_links()}


TEST_CGROUP_PARENT = f"/{SUITE_PREFIX}-{os.getpid()}"


def remove_cgroup_parent(path: str) -> None:
    """rmdir ``path`` in every hierarchy (it must be empty by now: a
    container's cgroup left inside makes the session check fail)."""
    hierarchies = [""] if os.path.exists("/sys/fs/cgroup/cgroup.controllers") \
        else os.listdir("/sys/fs/cgroup")  # pure v2: one hierarchy, at the top
    for hierarchy in hierarchies:
        try:
            os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, path.strip("/")))
        except OSError:
            pass


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found(tmp_path_factory):
    OWNED_PATHS.append(str(tmp_path_factory.getbasetemp()))
    name, _, value = SESSION_MARKER.partition("=")
    os.environ[name] = value  # every process the suite starts carries it
    before = _host_snapshot()
    dev_null = _dev_null()
    namespaces_before = _namespaces_in_use()
    # Containers made by tests get their cgroups under a parent of the
    # session's, removed at the end (kubirun leaves its shared parent).
    os.environ["KUBIRUN_CGROUP_PARENT"] = TEST_CGROUP_PARENT
    yield
    remove_cgroup_parent(TEST_CGROUP_PARENT)
    after = _host_snapshot()
    for key in before:
        added = sorted(after[key] - before[key])
        assert not added, f"the test session left {key} behind: {added}"
    assert _dev_null() == dev_null, "the test session changed /dev/null's owner, mode or device"
    leaked = {kind: ids - namespaces_before[kind]
              for kind, ids in _namespaces_in_use(only_ours=True).items()}
    assert not any(leaked.values()), f"processes left running in namespaces made by tests: {leaked}"


# --- images and store ----------------------------------------------------

@pytest.fixture(scope="session")
def busybox_tarball() -> Path:
    if not BUSYBOX_IMAGE.exists():
        subprocess.run(["make", "-C", str(REPO / "rootfs")], check=True, capture_output=True)
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def busybox_dir(busybox_tarball, tmp_path_factory) -> Path:
    """The demo image unpacked once (with GNU tar) for runs in place."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xzf", str(busybox_tarball), "-C", str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def probe_root(busybox_dir, tmp_path_factory) -> Path:
    """The demo image with /bin/syscall_probe (tests/syscall_probe.c, static):
    a root in which a test makes a system call by number."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("probe") / "rootfs"
    subprocess.run(["cp", "-a", str(busybox_dir), str(root)], check=True)
    result = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(root / "bin" / "syscall_probe"),
                             str(REPO / "tests" / "syscall_probe.c")], capture_output=True, text=True)
    assert result.returncode == 0, f"cannot build the syscall probe: {result.stderr}"
    return root


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch) -> Path:
    """Every test gets its own KUBIRUN_STORE and state root (KUBIRUN_ROOT),
    both checked empty afterwards."""
    store = tmp_path / "store"
    state_root = tmp_path / "state"
    monkeypatch.setenv("KUBIRUN_STORE", str(store))
    monkeypatch.setenv("KUBIRUN_ROOT", str(state_root))
    # Never the default bridge: a host with a kubi0 bridge in its root
    # namespace would get veths from tests (network tests ask explicitly,
    # inside namespaces of their own).
    monkeypatch.setenv("KUBIRUN_NETWORK", "none")
    yield store
    containers = store / "containers"
    if containers.exists():
        assert os.listdir(containers) == [], "a container directory was left behind"
    if state_root.exists():
        assert os.listdir(state_root) == [], "a container's state was left behind"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A sentinel directory next to a root, that hostile images aim at: it
    must stay empty."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def host_file(tmp_path) -> Path:
    """A file standing for the host's: it must keep its content and links."""
    path = tmp_path / "host-file"
    path.write_bytes(b"host data\n")
    os.chmod(path, 0o600)
    return path


def snapshot(top: Path, skip: Path) -> dict[str, tuple]:
    """Everything under ``top`` but ``skip``: names, types, sizes, contents, links."""
    seen = {}
    for base, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(base, d) != str(skip)]
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            content = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
            seen[os.path.relpath(path, top)] = (st.st_mode, st.st_nlink, st.st_uid, st.st_size,
                                                st.st_mtime_ns, content)
    return seen


def kubirun(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the kubirun CLI the way users do (the installed console script)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run([str(KUBIRUN_SCRIPT), *args], **kwargs)


# --- runtimes: kubirun and, where installed, runc --------------------------

class KubirunRuntime:
    name = "kubirun"

    def run(self, rootfs: Path, args: list[str], *, hostname: str | None = None,
            env: list[str] = (), cwd: str | None = None, user: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        cli = ["run"]
        if hostname:
            cli += ["--hostname", hostname]
        for item in env:
            cli += ["-e", item]
        if cwd:
            cli += ["-w", cwd]
        if user:
            cli += ["-u", user]
        return kubirun(*cli, str(rootfs), "--", *args, timeout=timeout)


RUNC_CGROUP_PARENT = "kubirun-test-runc"


def _remove_runc_cgroup_parents() -> None:
    """runc removes its container's cgroup, not the parent we named."""
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        try:
            os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, RUNC_CGROUP_PARENT))
        except OSError:
            pass  # absent (or, if runc failed, not empty: the session check reports it)


class RuncRuntime:
    """runc on an equivalent bundle: if runc fails a behaviour test, the test
    is wrong."""

    name = "runc"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def run(self, rootfs: Path, args: list[str], *, hostname: str | None = None,
            env: list[str] = (), cwd: str | None = None, user: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        bundle = self.workdir / uuid.uuid4().hex[:12]
        bundle.mkdir()
        subprocess.run([runtimes.binary("runc"), "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": False}
        process = config["process"]
        process["terminal"] = False
        process["args"] = list(args)
        process["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env]
        process["cwd"] = cwd or "/"
        if user:
            uid, _, gid = user.partition(":")
            process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        config["hostname"] = hostname or bundle.name
        # Left to itself runc nests its cgroups under this process's own
        # (here, a cgroup of the machine's); give it a parent of ours instead.
        config["linux"]["cgroupsPath"] = f"/{RUNC_CGROUP_PARENT}/{bundle.name}"
        (bundle / "config.json").write_text(json.dumps(config))
        try:
            return subprocess.run([*runtimes.command("runc", self.workdir / "state"), "run",
                                   "--bundle", str(bundle), bundle.name],
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
            _remove_runc_cgroup_parents()


@pytest.fixture(params=runtimes.params("runc"))
def runtime(request, tmp_path):
    if request.param == "runc":
        return RuncRuntime(tmp_path)
    return KubirunRuntime()


def make_tar(path: Path, entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
             compression: str = "gz") -> Path:
    """Write a tar archive from TarInfo entries (with data for files)."""
    import io

    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path
