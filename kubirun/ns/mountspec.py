"""From config.json to a mount plan: OCI ``mounts[]``, ``linux.devices`` and
the default devices become the steps ``mounts.apply`` carries out.

Pure translation, no system calls except ``stat`` of bind sources (a bind
of a file needs a file to land on): what a spec asks for can be read and
tested without root.  Option names and their meaning follow runc's table.
"""
from __future__ import annotations

import os
import stat

from kubirun._native import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    MS_STRICTATIME,
)
from kubirun.base.errors import KubirunError
from kubirun.ns.mounts import DEFAULT_DEVICES, Device, Mount, Step, Symlink

MS_SYNCHRONOUS, MS_MANDLOCK, MS_DIRSYNC = 0x10, 0x40, 0x80
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
MS_UNBINDABLE, MS_SHARED = 0x20000, 0x100000

# option -> (clear, set) flags
FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (0, MS_RDONLY), "rw": (MS_RDONLY, 0),
    "nosuid": (0, MS_NOSUID), "suid": (MS_NOSUID, 0),
    "nodev": (0, MS_NODEV), "dev": (MS_NODEV, 0),
    "noexec": (0, MS_NOEXEC), "exec": (MS_NOEXEC, 0),
    "sync": (0, MS_SYNCHRONOUS), "async": (MS_SYNCHRONOUS, 0),
    "dirsync": (0, MS_DIRSYNC), "mand": (0, MS_MANDLOCK), "nomand": (MS_MANDLOCK, 0),
    "noatime": (0, MS_NOATIME), "atime": (MS_NOATIME, 0),
    "nodiratime": (0, MS_NODIRATIME), "diratime": (MS_NODIRATIME, 0),
    "relatime": (0, MS_RELATIME), "norelatime": (MS_RELATIME, 0),
    "strictatime": (0, MS_STRICTATIME), "nostrictatime": (MS_STRICTATIME, 0),
    "bind": (0, MS_BIND), "rbind": (0, MS_BIND | MS_REC),
    "defaults": (0, 0), "remount": (0, 0),
}
PROPAGATION_OPTIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# Not a mount(2) flag: "rro" (every mount of the tree read-only, through
# mount_setattr), carried in the flags word above the kernel's bits.
RECURSIVE_READ_ONLY = 1 << 40

# Options runc accepts that change nothing here.
IGNORED_OPTIONS = ("tmpcopyup", "nocopyup", "copyup", "notmpcopyup", "z", "Z", "U")

# These mount points must be real directories of the image, never symlinks
# (an image whose /proc is a symlink to / would get procfs on its root).
STRICT_TARGETS = ("/proc", "/sys", "/dev")

DEV_SYMLINKS = (
    Symlink("/dev/fd", "/proc/self/fd"),
    Symlink("/dev/stdin", "/proc/self/fd/0"),
    Symlink("/dev/stdout", "/proc/self/fd/1"),
    Symlink("/dev/stderr", "/proc/self/fd/2"),
)


def parse_options(options: list[str], where: str) -> tuple[int, int, str | None]:
    """-> (mount flags, propagation flags, data string)."""
    flags = propagation = 0
    data = []
    for option in options:
        if option in FLAG_OPTIONS:
            clear, set_ = FLAG_OPTIONS[option]
            flags = (flags & ~clear) | set_
        elif option in PROPAGATION_OPTIONS:
            propagation |= PROPAGATION_OPTIONS[option]
        elif option in IGNORED_OPTIONS:
            continue
        elif option == "rro":
            flags |= RECURSIVE_READ_ONLY
        elif option == "rrw":
            flags &= ~RECURSIVE_READ_ONLY
        elif option in ("idmap", "ridmap") or option.startswith(("X-", "x-")):
            if option.startswith(("X-", "x-")):
                continue  # for humans and tools, not for mount(2)
            raise KubirunError(f"config.json: {where}: mount option {option!r} is not supported yet")
        else:
            data.append(option)
    return flags, propagation, ",".join(data) or None


def plan_mounts(mounts: list[dict], cgroup_binds: list[tuple[str, str]]) -> list[Step]:
    """The steps for ``mounts[]``; ``cgroup_binds`` are (name, host dir)
    pairs making up ``/sys/fs/cgroup`` for a ``cgroup`` mount."""
    steps: list[Step] = []
    for i, mount in enumerate(mounts):
        where = f"mounts[{i}]"
        target = os.path.normpath(mount["destination"])
        fstype = mount.get("type") or None
        source = mount.get("source") or fstype or "none"
        flags, propagation, data = parse_options(mount.get("options") or [], where)
        if fstype == "bind":
            flags |= MS_BIND
        strict = target in STRICT_TARGETS
        recursive_ro = bool(flags & RECURSIVE_READ_ONLY)
        flags &= ~RECURSIVE_READ_ONLY
        if flags & MS_BIND:
            steps.append(_bind(source, target, flags, propagation, strict, where))
            steps[-1].recursive_read_only = recursive_ro
        elif fstype in ("cgroup", "cgroup2"):
            steps.extend(_cgroup_mounts(target, flags, cgroup_binds))
        else:
            steps.append(Mount(source, target, fstype, flags, data, propagation=propagation,
                               follow_symlinks=not strict))
            steps[-1].recursive_read_only = recursive_ro
    return steps


def _bind(source: str, target: str, flags: int, propagation: int, strict: bool, where: str) -> Mount:
    if not source.startswith("/"):
        raise KubirunError(f"config.json: {where}.source: a bind mount needs an absolute source,"
                           f" got {source!r}")
    try:
        is_file = not stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as err:
        raise KubirunError(f"config.json: {where}.source: cannot bind {source}: {err.strerror}") from None
    # The first call binds; ro, nosuid... only take with a second (remount).
    return Mount(source, target, None, flags & (MS_BIND | MS_REC),
                 remount_flags=flags & ~(MS_BIND | MS_REC), propagation=propagation,
                 target_is_file=is_file, follow_symlinks=not strict)


def _cgroup_mounts(target: str, flags: int, binds: list[tuple[str, str]]) -> list[Step]:
    """``/sys/fs/cgroup``: a tmpfs holding a bind of the container's own
    cgroup directory of every hierarchy, read-only when asked (as runc does
    on cgroup v1; on v2 ``binds`` is the single unified directory)."""
    ro = flags & MS_RDONLY
    base = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if len(binds) == 1 and binds[0][0] == "":
        return [Mount(binds[0][1], target, None, MS_BIND | MS_REC,
                      remount_flags=base | ro, follow_symlinks=True)]
    steps: list[Step] = [Mount("tmpfs", target, "tmpfs", base, "mode=755", follow_symlinks=True)]
    for name, host_dir in binds:
        steps.append(Mount(host_dir, f"{target}/{name}", None, MS_BIND | MS_REC,
                           remount_flags=base | ro, follow_symlinks=True))
    if ro:
        steps.append(Mount(None, target, None, MS_REMOUNT, remount_flags=base | MS_RDONLY,
                           follow_symlinks=True))
    return steps


def dev_read_only_last(steps: list[Step]) -> list[Step]:
    """A read-only ``/dev`` (a tmpfs with ``ro``) is mounted writable, so
    that its devices, links and the mounts below it can be made, and made
    read-only last, as runc does: the step for that, to come after all
    others of ``/dev`` (``steps``' /dev mount loses its MS_RDONLY here)."""
    last: list[Step] = []
    for step in steps:
        if isinstance(step, Mount) and step.target == "/dev" and step.flags & MS_RDONLY \
                and not step.flags & (MS_BIND | MS_REMOUNT):
            step.flags &= ~MS_RDONLY
            last.append(Mount(None, "/dev", None, MS_REMOUNT,
                              remount_flags=MS_BIND | MS_RDONLY | (step.flags & (
                                  MS_NOSUID | MS_NODEV | MS_NOEXEC)),
                              follow_symlinks=False))
    return last


def plan_devices(devices: list[dict], bind: bool = False) -> list[Step]:
    """Default devices and ``/dev`` links, then the spec's ``linux.devices``;
    with ``bind`` (in a user namespace, where mknod is refused) each device
    is the host's node bound in place.  As runc, whether /dev is a tmpfs of
    the config or the image's own directory (a config with no /dev mount):
    every container has /dev/null, /dev/zero..."""
    steps: list[Step] = []
    steps.extend(_bound(d.path) for d in DEFAULT_DEVICES) if bind else steps.extend(DEFAULT_DEVICES)
    steps.extend(DEV_SYMLINKS)
    steps.append(Symlink("/dev/ptmx", "pts/ptmx"))
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for dev in devices:
        if bind:
            steps.append(_bound(dev["path"]))
            continue
        mode = dev.get("fileMode")
        steps.append(Device(dev["path"], dev.get("major", 0), dev.get("minor", 0),
                            0o666 if mode is None else mode & 0o7777, kinds[dev["type"]],
                            dev.get("uid"), dev.get("gid")))
    return steps


def _bound(path: str) -> Mount:
    """The host's device node at ``path``, bound over an empty file."""
    return Mount(path, path, None, MS_BIND, target_is_file=True, follow_symlinks=False)
