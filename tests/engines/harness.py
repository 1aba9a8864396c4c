"""The engine test harness: private podman and containerd set-ups that drive
an OCI runtime binary, and the host clean-up they need.

Everything an engine makes lives under one private directory (the *base*):
configuration, storage, state, sockets, temporary files. What the engines
insist on putting elsewhere is named here and undone at the end:

- cgroups: podman is given ``--cgroup-parent /kubirun-test-podman-PID`` (its
  containers go to ``libpod-ID`` below it, conmon to ``conmon`` below it) and
  ctr ``--cgroup /kubirun-test-ctr-PID/ID``; those trees are thawed, emptied
  and removed in every hierarchy, v1 and the unified one;
- mounts: podman's per-container ``/dev/shm`` tmpfs and containerd's rootfs
  mounts are under the base and unmounted if still there;
- host paths the engines create whatever they are told (see ``HOST_PATHS``):
  removed if they did not exist when the session started;
- processes: conmon, ``podman container cleanup``, containerd and its shims
  all name the base (or the containerd socket) on their command line, and are
  waited for, then killed by PID.

Each engine also runs in a second *view* of the host (tests/runtimes.py's
``CoveredUnified``): a private mount namespace where a tmpfs covers the
unified cgroup2 mount, as engines and nested containers have it; what is
mounted there goes with it.
"""
from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tests.runtimes import CoveredUnified  # the engines' second view of the host

CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE = "localhost/kubirun-busybox:latest"
# Each session gets its own parents, so two sessions on one machine never
# remove each other's cgroups; "kubirun" in the name makes the session-wide
# check in tests/conftest.py see any leftover.
PODMAN_CGROUP_PARENT = f"kubirun-test-podman-{os.getpid()}"
CTR_CGROUP_PARENT = f"kubirun-test-ctr-{os.getpid()}"
CRI_CGROUP_PARENT = f"kubirun-test-cri-{os.getpid()}"
COMMAND_TIMEOUT = 60.0

# Where each runtime keeps its containers' state when not given --root, as
# root. Podman never passes --root (see ENGINE_CALLS.md), so these are where
# a container's state must have gone after ``podman rm``.
DEFAULT_STATE_ROOTS = {"runc": Path("/run/runc"), "kubirun": Path("/run/kubirun")}

# Host paths an engine creates even with every setting pointed elsewhere:
# containers/image's blob-info cache (no setting in podman 4.3), the runtimes'
# default state roots (podman's cleanup process passes no --root), and
# containerd 1.6's shim sockets (/run/containerd/s is a constant in it).
HOST_PATHS = [Path("/var/lib/containers"), Path("/run/containerd"),
              *DEFAULT_STATE_ROOTS.values()]
# Of those, the ones we own whole when we created them; the others are only
# ever rmdir'd (empty directories), so that a runtime's leftover state shows.
HOST_PATHS_OWNED_WHOLE = {Path("/var/lib/containers")}


# --- waiting ---------------------------------------------------------------

def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something true; return that, or
    the last (false) value when ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- processes ---------------------------------------------------------------

def pids_mentioning(marker: str) -> list[int]:
    """Live processes (zombies have no command line) whose command line
    contains ``marker``: the engine processes of this session only, since
    the marker is a path of ours."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def kill_pids(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL each PID (all of them ours) and wait until they are gone;
    return those still alive."""
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(alive(p) for p in pids), timeout)
    return [p for p in pids if alive(p)]


def reap_processes_mentioning(marker: str, grace: float = 10.0) -> list[int]:
    """Give the processes naming ``marker`` ``grace`` seconds to finish on
    their own (conmon and ``podman container cleanup`` run after a container
    exits), then kill the rest; return any that survived."""
    wait_for(lambda: not pids_mentioning(marker), grace)
    return kill_pids(pids_mentioning(marker))


# --- cgroups -----------------------------------------------------------------

def cgroup_tops(name: str) -> list[Path]:
    """``name`` in every hierarchy: /sys/fs/cgroup/<controller>/name on a v1
    or hybrid host (the unified mount included), /sys/fs/cgroup/name on a
    pure v2 host."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        candidates = [CGROUP_ROOT / name]
    else:
        candidates = [CGROUP_ROOT / h / name for h in sorted(os.listdir(CGROUP_ROOT))]
    return [c for c in candidates if c.is_dir()]


def _dirs_deepest_first(top: Path) -> list[Path]:
    """``top`` and every directory below it, deepest first (the order rmdir
    needs)."""
    return [Path(base) for base, _, _ in os.walk(top, topdown=False)]


def names_under(top: Path) -> list[Path]:
    """Every file and directory below ``top``, read while others may be
    removing them: containerd collects a removed pod's snapshots in the
    background, and ``Path.rglob`` raises when a directory it listed is
    gone before it enters it (os.walk skips it, which is what a search for
    leftovers wants)."""
    return [Path(base, n) for base, dirs, files in os.walk(top) for n in dirs + files]


def cgroup_procs(name: str) -> set[int]:
    """Every process in the tree ``name``, in any hierarchy."""
    pids = set()
    for top in cgroup_tops(name):
        for d in _dirs_deepest_first(top):
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
    return pids


def _thaw(name: str) -> None:
    """A frozen process cannot die: thaw the tree first (v1 freezer and the
    v2 cgroup.freeze alike)."""
    for top in cgroup_tops(name):
        for d in _dirs_deepest_first(top):
            for knob, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                try:
                    (d / knob).write_text(value)
                except OSError:
                    pass


def _rmdir_tree(top: Path) -> list[str]:
    """rmdir ``top`` and its subdirectories; return the failures."""
    left = []
    for d in _dirs_deepest_first(top):
        try:
            d.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            left.append(f"{d}: {e.strerror}")
    return left


def remove_cgroup_tree(name: str) -> list[str]:
    """Empty and remove the tree ``name`` (ours) in every hierarchy; return
    the directories that could not be removed."""
    if cgroup_procs(name):
        _thaw(name)
        kill_pids(cgroup_procs(name))

    def failures() -> list[str]:
        return [failure for top in cgroup_tops(name) for failure in _rmdir_tree(top)]

    # A cgroup whose last process has just died can stay busy for a moment.
    wait_for(lambda: not failures(), timeout=3)
    return failures()


def cgroups_named(name: str) -> list[Path]:
    """Every cgroup directory called ``name`` below our trees."""
    found = []
    for parent in (PODMAN_CGROUP_PARENT, CTR_CGROUP_PARENT, CRI_CGROUP_PARENT):
        for top in cgroup_tops(parent):
            found += [d for d in _dirs_deepest_first(top) if d.name == name]
    return found


# --- mounts ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base``, in mount order."""
    prefix = str(base).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == str(base) or point.startswith(prefix):
                points.append(point)
    return points


def unmount_under(base: Path) -> list[str]:
    """Unmount everything below ``base``, last mounted first; a busy mount is
    detached. Uses umount2(2) directly: util-linux's umount would create
    /run/mount/utab on the host. Return the mount points still there."""
    for point in reversed(mounts_under(base)):
        path = point.encode()
        if _libc.umount2(path, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _libc.umount2(path, _MNT_DETACH)
    return mounts_under(base)


# --- host paths ----------------------------------------------------------------

class HostPaths:
    """Remembers which of ``HOST_PATHS`` were absent, to remove them again."""

    def __init__(self, paths: Sequence[Path] = HOST_PATHS) -> None:
        self.absent = [p for p in paths if not os.path.lexists(p)]

    def restore(self) -> list[str]:
        """Remove what appeared since; return what could not be removed
        (a runtime's state left in its root, for instance)."""
        left = []
        for path in self.absent:
            if not path.exists():
                continue
            if path in HOST_PATHS_OWNED_WHOLE:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for d in _dirs_deepest_first(path):  # deepest first; rmdir only
                    try:
                        d.rmdir()
                    except OSError:
                        pass
            if path.exists():
                left.append(f"{path}: {sorted(os.listdir(path))}")
        return left


# --- views of the host --------------------------------------------------------

VIEWS = ("host", "unified-covered")


# --- the runtime under test ------------------------------------------------------

TRACE_WRAPPER = """#!/bin/sh
# Log how the engine calls the runtime, then run it. Absolute paths only:
# engines call some commands with no PATH at all. One record, one write:
# engines call runtimes concurrently.
argv=''
for a in "$@"; do argv="$argv $a"; done
record="--- ppid=$PPID ($(/bin/cat /proc/$PPID/comm)) cwd=$(pwd)
argv:$argv
PATH=${{PATH-<unset>}}
fds: $(cd /proc/$$/fd && for fd in *; do printf '%s=%s ' "$fd" "$(/bin/readlink "$fd")"; done)
env: $(/usr/bin/env | /usr/bin/cut -d= -f1 | /usr/bin/sort | /usr/bin/tr '\\n' ' ')"
printf '%s\\n' "$record" >> {log}
exec {real} "$@"
"""


def trace_wrapper(real: str, log: Path, directory: Path) -> str:
    """A script with the runtime's own name (engines derive behaviour from
    the name) that logs each call to ``log`` and then execs ``real``."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / Path(real).name
    wrapper.write_text(TRACE_WRAPPER.format(log=shlex.quote(str(log)), real=shlex.quote(real)))
    wrapper.chmod(0o755)
    return str(wrapper)


def runtime_name(runtime: str) -> str:
    """"runc" or "kubirun": the basename, as podman takes it."""
    return Path(runtime).name


def engine_environment() -> dict[str, str]:
    """The environment to start an engine with: ours, less what a real
    engine would not have (the test run's KUBIRUN_* and PYTEST_* settings,
    a KUBIRUN_STORE of some earlier test) or what would send podman to a
    remote service."""
    drop = ("KUBIRUN_", "PYTEST_", "CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINERS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


# --- podman ---------------------------------------------------------------------

def _ulimits() -> list[str]:
    """Podman asks for RLIMIT_NOFILE 1048576 (and its own processes run with
    RLIMIT_NPROC 32768); without CAP_SYS_RESOURCE (as in this sandbox) the
    runtime cannot raise a hard limit, and create fails with EPERM. Ask for
    what we have instead."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


class PodmanSetup:
    """A podman of our own: private containers.conf, storage.conf and
    registries.conf (through the CONTAINERS_* variables), all state under
    ``base``, the busybox image imported once."""

    def __init__(self, base: Path, view: CoveredUnified | None = None) -> None:
        self.base = base
        self.view = view
        self.prefix = view.prefix if view else []  # podman and its children run in the view
        self.tmp = base / "tmp"
        for d in ("tmp", "libpod-tmp", "net", "volumes", "storage", "run"):
            (base / d).mkdir(parents=True, exist_ok=True)
        self.env = self._write_config()

    def _write_config(self) -> dict[str, str]:
        b = self.base
        # runtime_supports_json: with a name on this list podman passes
        # --log FILE --log-format=json and reads errors from FILE; otherwise
        # it reads stderr. kubirun is meant as a drop-in runc: treat it alike.
        (b / "containers.conf").write_text(f"""\
[containers]
netns = "none"
cgroupns = "private"
log_driver = "k8s-file"
default_ulimits = {_toml_list(_ulimits())}

[network]
network_backend = "cni"
network_config_dir = "{b}/net"
default_network = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{b}/events.log"
lock_type = "file"
tmp_dir = "{b}/libpod-tmp"
static_dir = "{b}/storage/libpod"
volume_path = "{b}/volumes"
image_copy_tmp_dir = "{b}/tmp"
# conmon makes its console sockets (-t) in $TMPDIR, /tmp by default, and
# leaves them there when the runtime fails.
conmon_env_vars = ["TMPDIR={b}/tmp"]
runtime_supports_json = ["crun", "runc", "kata", "runsc", "krun", "kubirun"]
""")
        # vfs: the image is 2 MB, so a copy per container is cheap, and unlike
        # overlay it leaves no private bind mount of the graph root behind.
        (b / "storage.conf").write_text(f"""\
[storage]
driver = "vfs"
graphroot = "{b}/storage"
runroot = "{b}/run"
""")
        (b / "registries.conf").write_text("unqualified-search-registries = []\n")
        env = engine_environment()
        env.update(CONTAINERS_CONF=str(b / "containers.conf"),
                   CONTAINERS_STORAGE_CONF=str(b / "storage.conf"),
                   CONTAINERS_REGISTRIES_CONF=str(b / "registries.conf"),
                   TMPDIR=str(self.tmp))
        return env

    def podman(self, *args: str, timeout: float = COMMAND_TIMEOUT,
               runtime: str | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        """``podman [--runtime RUNTIME] ARGS`` with our configuration."""
        cmd = [*self.prefix, "podman", *(["--runtime", runtime] if runtime else []), *args]
        return subprocess.run(cmd, check=False, env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def import_image(self, tarball: Path) -> None:
        done = self.podman("import", str(tarball), IMAGE, timeout=120)
        assert done.returncode == 0, f"podman import failed: {done.stderr}"

    def teardown(self) -> list[str]:
        """Remove every container, wait for conmon and the cleanup processes,
        then undo what is left; return the problems found."""
        problems = []
        done = self.podman("rm", "--all", "--force", "--time", "0")
        if done.returncode != 0:
            problems.append(f"podman rm --all: {done.stderr.strip()}")
        survivors = reap_processes_mentioning(str(self.base))
        problems += [f"process {p} survived SIGKILL" for p in survivors]
        problems += [f"still mounted: {m}" for m in unmount_under(self.base)]
        problems += remove_cgroup_tree(PODMAN_CGROUP_PARENT)
        return problems


class Podman:
    """One test's podman, driving one runtime."""

    def __init__(self, setup: PodmanSetup, runtime: str) -> None:
        self.setup = setup
        self.runtime = runtime
        self.name = runtime_name(runtime)

    def __call__(self, *args: str, timeout: float = COMMAND_TIMEOUT,
                 input: str | None = None) -> subprocess.CompletedProcess:
        """``podman --runtime RUNTIME ARGS``: the runtime is named on every
        call; podman hands it on to the cleanup process it has conmon run."""
        return self.setup.podman(*args, timeout=timeout, runtime=self.runtime, input=input)

    def run(self, *command: str, options: Sequence[str] = (), rm: bool = True,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """``podman run [--rm] OPTIONS IMAGE COMMAND`` in our cgroup parent."""
        return self("run", *(["--rm"] if rm else []), "--cgroup-parent", f"/{PODMAN_CGROUP_PARENT}",
                    *options, IMAGE, *command, timeout=timeout)

    def start(self, name: str, *command: str, options: Sequence[str] = ()) -> str:
        """A detached container running ``command``; return its id."""
        done = self.run(*command, options=["-d", "--name", name, *options], rm=False)
        assert done.returncode == 0, f"podman run -d failed: {done.stderr}"
        return done.stdout.strip()

    def inspect(self, name: str, template: str) -> str:
        """``podman inspect --format TEMPLATE NAME``."""
        done = self("inspect", "--format", template, name)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def status(self, name: str) -> str:
        return self.inspect(name, "{{.State.Status}}")

    def pid(self, name: str) -> int:
        return int(self.inspect(name, "{{.State.Pid}}"))

    def container_ids(self) -> list[str]:
        done = self("ps", "--all", "--quiet", "--no-trunc")
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    def remove_all(self) -> None:
        """Between tests: no container of one test is seen by the next."""
        self("rm", "--all", "--force", "--time", "0")


# --- containerd -------------------------------------------------------------------

def oci_archive(rootfs_tarball: Path, destination: Path, name: str = IMAGE,
                cmd: Sequence[str] = ("/bin/sh",)) -> Path:
    """An OCI image layout tarball (oci-layout, index.json, blobs) with the
    gzip rootfs tarball as its one layer, importable by ``ctr images import``."""
    layer = rootfs_tarball.read_bytes()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": list(cmd)},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]},
    }).encode()

    def descriptor(media_type: str, data: bytes) -> dict:
        return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                "size": len(data)}

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        **descriptor("application/vnd.oci.image.manifest.v1+json", manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        # ctr takes the image name from this annotation.
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2]},
    }]}).encode()

    def add(tar: tarfile.TarFile, path: str, data: bytes) -> None:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(destination, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
        for blob in (config, layer, manifest):
            add(tar, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
    return destination


# The CRI's pod sandbox image ("pause"): the busybox root, sleeping.
PAUSE_IMAGE = "localhost/kubirun-pause:latest"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace of the CRI's containers


class Containerd:
    """A containerd daemon of our own: root, state, sockets and the runtimes'
    state under ``base``. Started by ``start``.  The CRI plugin is off, or,
    with ``cri_runtimes`` ({handler: runtime binary}), on: each handler a
    runc v2 shim driving that binary with its state under ``base``, pods on
    the host's network (no CNI), the stream server on loopback."""

    def __init__(self, base: Path, view: CoveredUnified | None = None,
                 cri_runtimes: dict[str, str] | None = None) -> None:
        self.base = base
        self.view = view
        self.cri_runtimes = cri_runtimes
        self.address = str(base / "containerd.sock")
        self.tmp = base / "tmp"
        self.fifo_dir = base / "fifo"
        for d in (self.tmp, self.fifo_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.log_path = base / "containerd.log"
        self.config = base / "config.toml"
        disabled = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
        if not cri_runtimes:
            disabled.insert(0, "io.containerd.grpc.v1.cri")
        self.config.write_text(f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = {_toml_list(disabled)}
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
""" + (self._cri_config() if cri_runtimes else ""))
        self.env = {**engine_environment(), "TMPDIR": str(self.tmp)}
        self.process: subprocess.Popen | None = None

    def runtime_root(self, handler: str) -> Path:
        """Where the runtime of CRI handler ``handler`` keeps its state."""
        return self.base / "runtime-root" / handler

    def _cri_config(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        for d in ("cni/bin", "cni/conf"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        text = f"""\
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
[{cri}.cni]
  bin_dir = "{self.base}/cni/bin"
  conf_dir = "{self.base}/cni/conf"
[{cri}.containerd]
  default_runtime_name = "{next(iter(self.cri_runtimes))}"
"""
        for handler, binary in self.cri_runtimes.items():
            text += f"""\
[{cri}.containerd.runtimes.{handler}]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.{handler}.options]
  BinaryName = "{binary}"
  Root = "{self.runtime_root(handler)}"
  SystemdCgroup = false
"""
        return text

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # The daemon in the view: its shims, and so the runtimes, too.
            prefix = self.view.prefix if self.view else []
            self.process = subprocess.Popen([*prefix, "containerd", "--config", str(self.config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env=self.env)
        up = wait_for(lambda: self.process.poll() is not None
                      or self.ctr("version", timeout=5).returncode == 0, timeout=30, interval=0.1)
        if not up or self.process.poll() is not None:
            raise RuntimeError(f"containerd did not start: {self.log_path.read_text()[-2000:]}")

    def ctr(self, *args: str, timeout: float = COMMAND_TIMEOUT,
            namespace: str = "default") -> subprocess.CompletedProcess:
        """``ctr --address SOCKET --namespace NAMESPACE ARGS``."""
        return subprocess.run(["ctr", "--address", self.address, "--namespace", namespace, *args],
                              check=False, env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def import_image(self, rootfs_tarball: Path) -> None:
        archive = oci_archive(rootfs_tarball, self.base / "busybox-oci.tar")
        namespace = CRI_NAMESPACE if self.cri_runtimes else "default"
        done = self.ctr("images", "import", str(archive), timeout=120, namespace=namespace)
        assert done.returncode == 0, f"ctr images import failed: {done.stderr}"
        if self.cri_runtimes:
            pause = oci_archive(rootfs_tarball, self.base / "pause-oci.tar", PAUSE_IMAGE,
                                cmd=("sleep", "1000000"))
            done = self.ctr("images", "import", str(pause), timeout=120, namespace=CRI_NAMESPACE)
            assert done.returncode == 0, f"ctr images import failed: {done.stderr}"

    def remove_everything(self) -> None:
        """Kill and delete every task, then delete every container (of the
        CRI's namespace too)."""
        for ns in ("default", CRI_NAMESPACE):
            for task in self.ctr("tasks", "list", "--quiet", namespace=ns).stdout.split():
                self.ctr("tasks", "resume", task, namespace=ns)  # a paused task cannot die
                self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, namespace=ns)
                wait_for(lambda t=task, n=ns: self.ctr("tasks", "delete", t, namespace=n).returncode == 0,
                         timeout=5)
            for container in self.ctr("containers", "list", "--quiet", namespace=ns).stdout.split():
                self.ctr("containers", "delete", container, namespace=ns)

    def teardown(self) -> list[str]:
        """Delete everything, stop the daemon (by its PID), kill any shim
        left (they name our socket), then undo what is left."""
        problems = []
        if self.process is not None and self.process.poll() is None:
            self.remove_everything()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        problems += [f"process {p} survived SIGKILL" for p in reap_processes_mentioning(self.address, 5)]
        problems += [f"still mounted: {m}" for m in unmount_under(self.base)]
        problems += remove_cgroup_tree(CTR_CGROUP_PARENT)
        problems += remove_cgroup_tree(CRI_CGROUP_PARENT)
        return problems


class Ctr:
    """One test's ctr, running containers with one runtime binary."""

    def __init__(self, daemon: Containerd, runtime: str) -> None:
        self.daemon = daemon
        self.runtime = runtime
        self.name = runtime_name(runtime)
        # Passed as --runc-root: the shim gives it to the runtime as --root
        # ROOT/NAMESPACE, instead of /run/containerd/runc/NAMESPACE.
        self.state_root = daemon.base / "runtime-root" / self.name
        self.ids: list[str] = []

    def __call__(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return self.daemon.ctr(*args, timeout=timeout)

    def run(self, cid: str, *command: str, detach: bool = False, options: Sequence[str] = (),
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """``ctr run`` with the runtime under test (through the runc v2 shim),
        in our cgroup parent: ``--rm`` in the foreground, or ``-d``."""
        self.ids.append(cid)
        return self("run", "-d" if detach else "--rm", "--runtime", "io.containerd.runc.v2",
                    "--runc-binary", self.runtime, "--runc-root", str(self.state_root),
                    "--cgroup", f"/{CTR_CGROUP_PARENT}/{cid}", "--fifo-dir", str(self.daemon.fifo_dir),
                    *options, IMAGE, cid, *command, timeout=timeout)

    def start(self, cid: str, *command: str, log: Path | None = None) -> int:
        """A detached task running ``command``, its output to ``log`` (or
        nowhere); return its PID."""
        io_options = ["--log-uri", f"file://{log}"] if log else ["--null-io"]
        done = self.run(cid, *command, detach=True, options=io_options)
        assert done.returncode == 0, f"ctr run -d failed: {done.stderr}"
        return self.task(cid)[0]

    def exec(self, cid: str, exec_id: str, *command: str) -> subprocess.CompletedProcess:
        return self("tasks", "exec", "--exec-id", exec_id, "--fifo-dir", str(self.daemon.fifo_dir),
                    cid, *command)

    def task(self, cid: str) -> tuple[int, str] | None:
        """(PID, STATUS) of the task from ``ctr tasks list``, or None."""
        done = self("tasks", "list")
        for line in done.stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return int(fields[1]), fields[2]
        return None

    def status(self, cid: str) -> str | None:
        task = self.task(cid)
        return task[1] if task else None

    def containers(self) -> list[str]:
        return self("containers", "list", "--quiet").stdout.split()

    def remove(self, cid: str) -> None:
        """Kill, delete the task, delete the container; ignore what is gone."""
        if self.task(cid):
            self("tasks", "resume", cid)
            self("tasks", "kill", "--all", "--signal", "SIGKILL", cid)
            wait_for(lambda: self("tasks", "delete", cid).returncode == 0 or not self.task(cid), 5)
        if cid in self.containers():
            self("containers", "delete", cid)

    def remove_all(self) -> None:
        for cid in self.ids:
            self.remove(cid)
