"""The OCI bundle's ``config.json``: loading, validation and defaults.

``load_bundle`` turns a bundle directory into a ``Spec`` whose fields are
checked and ready for the lifecycle; every error names the JSON path and
the bad value (``config.json: process.args[0]: expected a string, got 5``).
``default_config`` is what ``kubirun spec`` writes, the same as ``runc
spec``.  Fields this module accepts but kubirun cannot honour yet are
refused here, with the reason, never silently ignored.
"""
from __future__ import annotations

import os

from kubirun import OCI_SPEC_VERSION
from kubirun.base import jsonio
from kubirun.base.errors import KubirunError, SpecError  # noqa: F401 (kubirun.spec.SpecError)
from kubirun.base.jsonshape import (check_text as _check_text, expect as _expect, fail as _fail,
                                    get as _get, strings as _strings, type_name as _type_name,
                                    uint as _uint)
from kubirun.process import ProcessSpec

SUPPORTED_VERSIONS = ("1.0.", "1.1.", "1.2.", "1.3.")
PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}  # PER_LINUX, PER_LINUX32
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_PHASES = ("prestart", "createRuntime", "createContainer", "startContainer",
               "poststart", "poststop")
# The largest uid or gid: (uid_t)-1 is not an id, it tells the kernel to
# leave the id unchanged.
MAX_ID = 0xFFFFFFFE
UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF
INT64_MAX = 0x7FFFFFFFFFFFFFFF  # a Go int, as runc reads timeouts and offsets
HOST_NAME_MAX = 64  # bytes, for hostname and domainname alike
MAX_MAJOR, MAX_MINOR = 0xFFF, 0xFFFFF  # what Linux's 32-bit dev_t holds


class Namespace:
    def __init__(self, type: str, path: str | None) -> None:
        self.type, self.path = type, path

    def __repr__(self) -> str:
        return f"Namespace({self.type!r}, {self.path!r})"


class Hook:
    def __init__(self, path: str, args: list[str], env: list[str], timeout: int | None) -> None:
        self.path, self.args, self.env, self.timeout = path, args, env, timeout

    def to_json(self) -> dict:
        hook: dict = {"path": self.path, "args": self.args, "env": self.env}
        if self.timeout is not None:
            hook["timeout"] = self.timeout
        return hook


class Spec:
    """A validated ``config.json`` of a bundle."""

    def __init__(self, raw: dict, bundle: str) -> None:
        self.raw = raw
        self.bundle = bundle
        self.version: str = ""
        self.root = ""
        self.root_readonly = False
        self.hostname: str | None = None
        self.domainname: str | None = None
        self.process: ProcessSpec | None = None
        self.mounts: list[dict] = []
        self.namespaces: list[Namespace] = []
        self.hooks: dict[str, list[Hook]] = {}
        self.annotations: dict[str, str] = {}
        self.linux: dict = {}
        self.cgroups_path: str | None = None
        self.resources: dict = {}
        self.masked_paths: list[str] = []
        self.readonly_paths: list[str] = []
        self.devices: list[dict] = []
        self.sysctl: dict[str, str] = {}
        self.rootfs_propagation: str | None = None
        self.personality: int | None = None
        self.time_offsets: dict = {}
        self.uid_mappings: list[tuple[int, int, int]] = []
        self.gid_mappings: list[tuple[int, int, int]] = []
        self.seccomp = None  # kubirun.seccomp.Profile, for linux.seccomp

    def namespace(self, type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == type), None)


def load_bundle(bundle: str) -> Spec:
    """Read and validate ``BUNDLE/config.json``."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SpecError(f"bundle {bundle}: no config.json (not an OCI bundle)") from None
    except OSError as err:
        raise SpecError(f"cannot read {path}: {err.strerror}") from None
    try:
        raw = jsonio.loads(data)
    except (jsonio.JSONError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: malformed JSON: {err}") from None
    return parse(raw, bundle)


# --- validation helpers: each names the JSON path of what it checks -------
# (the general ones are kubirun.base.jsonshape's, imported above)

def _id(obj: dict, key: str, where: str, default: int | None = None) -> int | None:
    """A uid or gid: 0 to 4294967294."""
    return _uint(obj, key, where, default, MAX_ID)


def parse(raw: object, bundle: str) -> Spec:
    _expect(raw, dict, "(top level)")
    spec = Spec(raw, bundle)
    version = raw.get("ociVersion")
    if not isinstance(version, str) or not version.startswith(SUPPORTED_VERSIONS):
        raise _fail("ociVersion", f"unsupported version {jsonio.dumps(version)}"
                    f" (kubirun supports 1.0.0 to 1.3.x)")
    spec.version = version

    root = _get(raw, "root", dict, "")
    if root is None:
        raise _fail("root", "missing (the root filesystem's path is required)")
    root_path = _get(root, "path", str, "root")
    if not root_path:
        raise _fail("root.path", "missing or empty")
    spec.root = os.path.normpath(os.path.join(bundle, root_path))
    if not os.path.isdir(spec.root):
        raise _fail("root.path", f"{root_path!r} is not a directory ({spec.root})")
    spec.root_readonly = bool(_get(root, "readonly", bool, "root", False))

    spec.hostname = _get(raw, "hostname", str, "")
    spec.domainname = _get(raw, "domainname", str, "")
    if "process" in raw and raw["process"] is not None:
        spec.process = parse_process(_expect(raw["process"], dict, "process"), "process")
    spec.mounts = [_source_in_bundle(_parse_mount(m, f"mounts[{i}]"), bundle)
                   for i, m in enumerate(_get(raw, "mounts", list, "", []))]
    spec.hooks = _parse_hooks(_get(raw, "hooks", dict, "", {}))
    annotations = _get(raw, "annotations", dict, "", {})
    for key, value in annotations.items():
        _expect(value, str, f"annotations.{key}")
    spec.annotations = dict(annotations)
    _parse_linux(spec, _get(raw, "linux", dict, "", {}))
    return spec


def parse_process(proc: dict, where: str) -> ProcessSpec:
    """A ``process`` object (of config.json, or of ``exec --process``)."""
    args = _strings(proc, "args", where)
    if not args and not proc.get("commandLine"):
        raise _fail(f"{where}.args", "missing or empty: the container needs a program to run")
    cwd = _get(proc, "cwd", str, where, "/")
    if not cwd.startswith("/"):
        raise _fail(f"{where}.cwd", f"must be an absolute path, got {cwd!r}")
    env = _strings(proc, "env", where)
    for i, item in enumerate(env):
        if "=" not in item or item.startswith("="):
            raise _fail(f"{where}.env[{i}]", f"expected KEY=VALUE, got {item!r}")
    user = _get(proc, "user", dict, where, {})
    uid = _id(user, "uid", f"{where}.user", 0)
    gid = _id(user, "gid", f"{where}.user", 0)
    extra = _get(user, "additionalGids", list, f"{where}.user", [])
    for i, g in enumerate(extra):
        if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g <= MAX_ID:
            raise _fail(f"{where}.user.additionalGids[{i}]",
                        f"expected a group id (0 to {MAX_ID}), got {jsonio.dumps(g)[:60]}")
    if user.get("username"):
        raise _fail(f"{where}.user.username", "is for Windows containers")
    spec = ProcessSpec(
        args=args,
        env=env,
        cwd=cwd,
        terminal=bool(_get(proc, "terminal", bool, where, False)),
    )
    spec.oci = True
    spec.uid, spec.gid, spec.additional_gids = uid, gid, tuple(extra)
    umask = _uint(user, "umask", f"{where}.user", maximum=UINT32_MAX)
    # A uint32 as runc takes it; the kernel keeps the permission bits.
    spec.umask = None if umask is None else umask & 0o777
    spec.no_new_privileges = bool(_get(proc, "noNewPrivileges", bool, where, False))
    spec.capabilities = _parse_capabilities(_get(proc, "capabilities", dict, where, None), where)
    spec.rlimits = _parse_rlimits(_get(proc, "rlimits", list, where, []), where)
    spec.oom_score_adj = _get(proc, "oomScoreAdj", int, where)
    if spec.oom_score_adj is not None and not -1000 <= spec.oom_score_adj <= 1000:
        raise _fail(f"{where}.oomScoreAdj", f"must be in -1000..1000, got {spec.oom_score_adj}")
    for field in ("apparmorProfile", "selinuxLabel"):
        if proc.get(field):
            raise _fail(f"{where}.{field}", f"{proc[field]!r} requested, but kubirun has no"
                        f" {'AppArmor' if field[0] == 'a' else 'SELinux'} support on this host")
    console = _get(proc, "consoleSize", dict, where)
    # a struct winsize's unsigned shorts
    spec.console_size = (_uint(console, "height", f"{where}.consoleSize", 0, 0xFFFF),
                         _uint(console, "width", f"{where}.consoleSize", 0, 0xFFFF)) if console else None
    return spec


CAPABILITY_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def _parse_capabilities(caps: dict | None, where: str) -> dict[str, list[str]] | None:
    if caps is None:
        return None
    from kubirun.capabilities import CAPABILITIES

    result = {}
    for name in CAPABILITY_SETS:
        items = _strings(caps, name, f"{where}.capabilities")
        for i, cap in enumerate(items):
            if cap.upper() not in CAPABILITIES:
                raise _fail(f"{where}.capabilities.{name}[{i}]", f"unknown capability {cap!r}")
        result[name] = [c.upper() for c in items]
    return result


def _typed_once(item: object, here: str, known, seen: set, what: str) -> str:
    """An object's ``type``: one of ``known``, not seen before in its list."""
    _expect(item, dict, here)
    kind = _get(item, "type", str, here)
    if kind not in known:
        raise _fail(f"{here}.type", f"unknown {what} {kind!r}")
    if kind in seen:
        raise _fail(f"{here}.type", f"{what} {kind!r} listed twice")
    seen.add(kind)
    return kind


def _parse_rlimits(items: list, where: str) -> list[tuple[str, int, int]]:
    from kubirun.rlimits import RLIMITS

    result = []
    seen = set()
    for i, item in enumerate(items):
        here = f"{where}.rlimits[{i}]"
        kind = _typed_once(item, here, RLIMITS, seen, "rlimit")
        hard, soft = _uint(item, "hard", here, maximum=UINT64_MAX), \
            _uint(item, "soft", here, maximum=UINT64_MAX)
        if hard is None or soft is None:
            raise _fail(here, "needs both soft and hard")
        if soft > hard:
            raise _fail(here, f"soft limit {soft} is above the hard limit {hard}")
        result.append((kind, soft, hard))
    return result


def _parse_mount(mount: object, where: str) -> dict:
    _expect(mount, dict, where)
    destination = _get(mount, "destination", str, where)
    if not destination:
        raise _fail(f"{where}.destination", "missing or empty")
    if not destination.startswith("/"):
        raise _fail(f"{where}.destination", f"must be an absolute path, got {destination!r}")
    if ".." in destination.split("/"):
        raise _fail(f"{where}.destination", f"must not contain '..', got {destination!r}")
    _get(mount, "type", str, where)
    _get(mount, "source", str, where)
    _strings(mount, "options", where)
    if mount.get("uidMappings") or mount.get("gidMappings"):
        raise _fail(f"{where}.uidMappings", "id-mapped mounts are not supported yet")
    return mount


def _source_in_bundle(mount: dict, bundle: str) -> dict:
    """A bind mount's relative source is the bundle's (``"source": "."``
    is the bundle directory), as runc has it."""
    source = mount.get("source")
    is_bind = mount.get("type") == "bind" or {"bind", "rbind"} & set(mount.get("options") or [])
    if is_bind and source and not source.startswith("/"):
        return dict(mount, source=os.path.normpath(os.path.join(os.path.abspath(bundle), source)))
    return mount


def _parse_hooks(hooks: dict) -> dict[str, list[Hook]]:
    result = {}
    for phase, items in hooks.items():
        if phase not in HOOK_PHASES:
            raise _fail(f"hooks.{phase}", f"unknown hook phase (known: {', '.join(HOOK_PHASES)})")
        parsed = []
        for i, item in enumerate(_expect(items, list, f"hooks.{phase}") or []):
            here = f"hooks.{phase}[{i}]"
            _expect(item, dict, here)
            path = _get(item, "path", str, here)
            if not path or not path.startswith("/"):
                raise _fail(f"{here}.path", f"must be an absolute path, got {path!r}")
            timeout = _get(item, "timeout", int, here)
            if timeout is not None and not 0 < timeout <= INT64_MAX:
                raise _fail(f"{here}.timeout", f"must be 1 to {INT64_MAX} seconds, got {timeout}")
            env = _strings(item, "env", here)
            for j, entry in enumerate(env):
                if not entry.partition("=")[0]:  # (no name: it cannot be passed on)
                    raise _fail(f"{here}.env[{j}]", f"expected KEY=VALUE, got {entry!r}")
            args = _strings(item, "args", here)
            if args and not args[0]:
                raise _fail(f"{here}.args[0]", "must not be empty (it is the hook's argv[0])")
            parsed.append(Hook(path, args or [path], env, timeout))
        result[phase] = parsed
    return result


def _check_rootless_mappings(spec: Spec) -> None:
    """Without privileges a process may map its own uid and gid, one id
    each; ranges of its /etc/subuid and /etc/subgid entries go through
    newuidmap/newgidmap (kubirun.ns.idmap checks what those would allow)."""
    from kubirun.ns import idmap

    for key, kind, mappings in (("uidMappings", "uid", spec.uid_mappings),
                                ("gidMappings", "gid", spec.gid_mappings)):
        try:
            idmap.check(kind, mappings)
        except idmap.IdMapError as err:
            where = f"linux.{key}" if err.index is None else f"linux.{key}[{err.index}]"
            raise _fail(where, str(err)) from None


def _parse_time_offsets(linux: dict) -> dict:
    """linux.timeOffsets: {"monotonic"|"boottime": {"secs": N, "nanosecs": N}}."""
    offsets = _get(linux, "timeOffsets", dict, "linux", {})
    result = {}
    for clock, value in offsets.items():
        here = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise _fail(here, "only monotonic and boottime clocks have offsets")
        _expect(value, dict, here)
        secs = _get(value, "secs", int, here, 0)
        if not -INT64_MAX - 1 <= secs <= INT64_MAX:
            raise _fail(f"{here}.secs", f"must fit in 64 bits, got {secs}")
        nanosecs = _uint(value, "nanosecs", here, 0)
        if nanosecs >= 1_000_000_000:
            raise _fail(f"{here}.nanosecs", f"must be below 1e9, got {nanosecs}")
        result[clock] = {"secs": secs, "nanosecs": nanosecs}
    return result


def _parse_mappings(linux: dict, key: str) -> list[tuple[int, int, int]]:
    """uidMappings/gidMappings: (containerID, hostID, size) triples."""
    result = []
    for i, item in enumerate(_get(linux, key, list, "linux", [])):
        here = f"linux.{key}[{i}]"
        _expect(item, dict, here)
        triple = tuple(_uint(item, name, here, maximum=UINT32_MAX)
                       for name in ("containerID", "hostID", "size"))
        if None in triple or triple[2] == 0:
            raise _fail(here, "needs containerID, hostID and a non-zero size")
        for name, first in zip(("containerID", "hostID"), triple):
            # The kernel refuses a range that wraps past the last id.
            if first + triple[2] > UINT32_MAX:
                raise _fail(here, f"{name} + size must be at most {UINT32_MAX},"
                            f" got {first} + {triple[2]}")
        result.append(triple)
    return result


def _parse_linux(spec: Spec, linux: dict) -> None:
    spec.linux = linux
    seen = set()
    for i, ns in enumerate(_get(linux, "namespaces", list, "linux", [])):
        here = f"linux.namespaces[{i}]"
        kind = _typed_once(ns, here, NAMESPACE_TYPES, seen, "namespace type")
        path = _get(ns, "path", str, here) or None
        if path is not None and not path.startswith("/"):
            raise _fail(f"{here}.path", f"must be an absolute path, got {path!r}")
        spec.namespaces.append(Namespace(kind, path))
    spec.time_offsets = _parse_time_offsets(linux)
    time_ns = spec.namespace("time")
    if spec.time_offsets and (time_ns is None or time_ns.path):
        raise _fail("linux.timeOffsets", "needs a new time namespace")
    if time_ns is not None and os.geteuid() != 0:
        raise _fail("linux.namespaces", "time namespaces need root (rootless: not supported)")
    spec.uid_mappings = _parse_mappings(linux, "uidMappings")
    spec.gid_mappings = _parse_mappings(linux, "gidMappings")
    user = spec.namespace("user")
    if user is not None and user.path is None:
        if not spec.uid_mappings or not spec.gid_mappings:
            raise _fail("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")
        if os.geteuid() != 0:
            _check_rootless_mappings(spec)
    elif spec.uid_mappings or spec.gid_mappings:
        raise _fail("linux.uidMappings", "id mappings need a new user namespace")
    for field in ("hostname", "domainname"):
        name = getattr(spec, field)
        if name and spec.namespace("uts") is None:
            # (a joined one is fine: the name is set there, as runc does)
            raise _fail(field, f"setting a {field} needs a uts namespace of the container's")
        if name is not None and len(name.encode()) > HOST_NAME_MAX:
            raise _fail(field, f"must be at most {HOST_NAME_MAX} bytes, got {len(name.encode())}")
    if spec.namespace("mount") is None and user is not None:
        # Without a mount namespace the container shares kubirun's (see
        # ns.hostmount), where a user namespace's root may not mount.
        raise _fail("linux.namespaces", "a user namespace needs a mount namespace too")
    spec.cgroups_path = _get(linux, "cgroupsPath", str, "linux") or None
    spec.resources = _get(linux, "resources", dict, "linux", {})
    if spec.resources:
        _check_resources(spec.resources)
    spec.masked_paths = _strings(linux, "maskedPaths", "linux")
    spec.readonly_paths = _strings(linux, "readonlyPaths", "linux")
    spec.devices = _get(linux, "devices", list, "linux", [])
    for i, dev in enumerate(spec.devices):
        here = f"linux.devices[{i}]"
        _expect(dev, dict, here)
        path = _get(dev, "path", str, here)
        if not path or not path.startswith("/dev/"):
            raise _fail(f"{here}.path", f"must be under /dev, got {path!r}")
        if _get(dev, "type", str, here) not in ("c", "b", "u", "p"):
            raise _fail(f"{here}.type", f"expected c, b, u or p, got {dev.get('type')!r}")
        _uint(dev, "major", here, maximum=MAX_MAJOR)
        _uint(dev, "minor", here, maximum=MAX_MINOR)
        _uint(dev, "fileMode", here, maximum=UINT32_MAX)
        _id(dev, "uid", here)
        _id(dev, "gid", here)
    sysctl = _get(linux, "sysctl", dict, "linux", {})
    for key, value in sysctl.items():
        _expect(value, str, f"linux.sysctl.{key}")
        _check_sysctl_is_namespaced(spec, key)
    spec.sysctl = dict(sysctl)
    propagation = _get(linux, "rootfsPropagation", str, "linux")
    if propagation and propagation not in ("private", "rprivate", "slave", "rslave", "shared",
                                           "rshared", "unbindable", "runbindable"):
        raise _fail("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    if propagation and spec.namespace("mount") is None:
        raise _fail("linux.rootfsPropagation", "needs a mount namespace (it would change kubirun's own mounts)")
    spec.rootfs_propagation = propagation or None
    if linux.get("seccomp") is not None:
        from kubirun import seccomp

        spec.seccomp = seccomp.parse(linux["seccomp"], "linux.seccomp")
    personality = _get(linux, "personality", dict, "linux")
    if personality:
        domain = _get(personality, "domain", str, "linux.personality")
        if domain not in PERSONALITIES:
            raise _fail("linux.personality.domain", f"expected LINUX or LINUX32, got {domain!r}")
        if _strings(personality, "flags", "linux.personality"):
            raise _fail("linux.personality.flags", "no personality flags are supported")
        spec.personality = PERSONALITIES[domain]
    for field in ("intelRdt",):
        if linux.get(field):
            raise _fail(f"linux.{field}", "not supported yet by kubirun")
    if linux.get("mountLabel"):
        _ignore_mount_label(linux["mountLabel"])


def _check_resources(resources: dict) -> None:
    """linux.resources, checked as the cgroup manager will read them (types,
    ranges, device rules) before anything is made: a rootless container
    without a cgroup of its own ignores them, but not their mistakes."""
    from kubirun.cgroups.resources import check

    try:
        check(resources)
    except ValueError as err:  # ConversionError, DeviceRuleError
        raise _fail("linux.resources", str(err).removeprefix("resources.")) from None


def _ignore_mount_label(label: object) -> None:
    """``linux.mountLabel`` only labels files; without SELinux there is no
    label to give and no policy that would read it, so it changes nothing
    (crun ignores it too).  A *process* label is a confinement the user
    relies on: that one stays refused (see process parsing)."""
    _expect(label, str, "linux.mountLabel")
    if os.path.exists("/sys/fs/selinux/enforce"):
        raise _fail("linux.mountLabel", "SELinux is enabled on this host, but kubirun cannot label mounts")
    from kubirun.base import log
    log.warning(f"config.json: linux.mountLabel {label!r} ignored: SELinux is not enabled on this host")


# sysctls that belong to the IPC namespace (as runc's validator lists them)
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _check_sysctl_is_namespaced(spec: Spec, key: str) -> None:
    """A sysctl the container's own namespace holds, or an error: anything
    else would change the host."""
    def new(kind: str) -> bool:
        ns = spec.namespace(kind)
        return ns is not None and ns.path is None

    def joined_or_new(kind: str) -> bool:
        return spec.namespace(kind) is not None

    where = f"linux.sysctl.{key}"
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if not joined_or_new("ipc"):
            raise _fail(where, "is an IPC namespace sysctl, but the container shares the host's")
    elif key.startswith("net."):
        if not joined_or_new("network"):
            raise _fail(where, "is a network namespace sysctl, but the container shares the host's")
    elif key in ("kernel.hostname", "kernel.domainname"):
        if not new("uts"):
            raise _fail(where, "needs a new uts namespace")
        raise _fail(where, "set it with hostname/domainname instead")
    else:
        raise _fail(where, "is not namespaced: setting it would change the host")


# --- `kubirun spec` ---------------------------------------------------------

DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_config(rootless: bool = False) -> dict:
    """The config ``runc spec`` writes: ``sh`` on a terminal in ``rootfs``."""
    caps = list(DEFAULT_CAPABILITIES)
    config: dict = {
        "ociVersion": OCI_SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                             "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "kubirun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            # runc 1.1's: no cgroup namespace (image runs add one)
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        # What runc spec --rootless writes: map yourself to root, no new
        # network namespace (a user cannot make veths), /sys bound.
        linux = config["linux"]
        linux.pop("resources")
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]  # as runc
        config["mounts"][-2:] = [
            {"destination": "/sys", "type": "none", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
        for mount in config["mounts"]:
            if mount["type"] == "devpts":  # gid 5 is not mapped
                mount["options"] = [o for o in mount["options"] if o != "gid=5"]
        config["process"]["terminal"] = True
    config["ociVersion"] = lowest_oci_version(config)
    return config


# Fields of config.json and the runtime-spec release that brought them
# (what a bundle may hold); everything else is in 1.0.
NEWER_FIELDS = {
    ("linux", "timeOffsets"): "1.1.0",
    ("linux", "personality"): "1.2.0",
    ("linux", "netDevices"): "1.2.0",
    ("process", "ioPriority"): "1.1.0",
    ("process", "scheduler"): "1.1.0",
    ("process", "execCPUAffinity"): "1.2.0",
    ("domainname",): "1.1.0",
}
BASE_OCI_VERSION = "1.0.2"


def lowest_oci_version(config: dict) -> str:
    """The oldest ``ociVersion`` that expresses ``config``: a bundle is
    for any runtime, and some refuse versions newer than theirs (crun 1.8
    refuses 1.2.0)."""
    version = BASE_OCI_VERSION
    for path, since in NEWER_FIELDS.items():
        node: object = config
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and _version_tuple(since) > _version_tuple(version):
            version = since
    return version


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
