"""Where the cgroup hierarchies are: /proc/self/mountinfo to a Layout.

This module owns the parsing of mountinfo lines and the decision between
the three layouts a host can have:

- ``v2``: one cgroup2 mount and no v1 hierarchy with a controller;
- ``v1``: v1 hierarchies only;
- ``hybrid``: v1 hierarchies plus a cgroup2 mount (systemd puts it at
  /sys/fs/cgroup/unified), which then only holds the controllers that no v1
  hierarchy has taken.

Only the mounts a path reaches count: mountinfo also lists those that a
later mount covers (a tmpfs on /sys/fs/cgroup/unified), which are not
there for anyone who opens the path.

Nothing here reads a cgroup file: it only maps names to mount points.
"""
from __future__ import annotations

from kubirun.base.mountinfo import parse_line

# v1 controllers the kernel may offer (cgroup_subsys.h). A v1 mount's super
# options mix them with plain options (rw, noprefix, clone_children, xattr,
# release_agent=...), so we only keep names we know plus "name=...".
KNOWN_V1_CONTROLLERS = frozenset((
    "cpuset", "cpu", "cpuacct", "io", "blkio", "memory", "devices", "freezer",
    "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    "debug",
))


class CgroupMount:
    """One cgroup or cgroup2 mount: where, which part of the hierarchy
    (root), and which controllers (v1 only; "name=systemd" counts)."""

    __slots__ = ("controllers", "fstype", "mountpoint", "root")

    def __init__(self, mountpoint: str, root: str, fstype: str, controllers: list[str]) -> None:
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"CgroupMount({self.mountpoint!r}, {self.root!r}, {self.fstype!r}, {self.controllers!r})"


def parse_mountinfo(text: str, known: frozenset[str] | set[str] = KNOWN_V1_CONTROLLERS) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts in mountinfo ``text`` that a path can
    reach, in file order.

    A line is: id parent major:minor root mountpoint options [optional...]
    - fstype source superoptions. The optional fields vary in number, hence
    the search for the lone "-".

    mountinfo also lists mounts that later mounts cover (a tmpfs mounted
    on /sys/fs/cgroup/unified hides the cgroup2 mount there, but both
    lines remain); those are left out, as runc and crun, which look at what
    the path holds, never see them.
    """
    mounts = []
    tree: dict[str, tuple[str, str]] = {}  # id -> (parent id, mount point)
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        tree[parsed.id] = (parsed.parent, parsed.mountpoint)
        if parsed.fstype not in ("cgroup", "cgroup2"):
            continue
        controllers = []
        if parsed.fstype == "cgroup":
            for opt in parsed.superoptions.split(","):
                if opt in known or opt.startswith("name="):
                    controllers.append(opt)
        mount = CgroupMount(parsed.mountpoint, parsed.root, parsed.fstype, controllers)
        mounts.append((parsed.id, mount))
    if not mounts:
        return []
    reachable = _reachable(tree)
    return [mount for mount_id, mount in mounts if reachable(mount_id)]


def _reachable(tree: dict[str, tuple[str, str]]):
    """A predicate: is the mount with this id the one its mount point
    reaches? ``tree`` maps ids to (parent id, mount point), in file order.

    A path is resolved as the kernel walks it, from the root mount (whose
    parent is not listed), one component at a time: at each, the walk moves
    onto the mount on the current one there, and onto any stacked on that
    (of two on one parent at one path, the later in the file is on top).
    Unescaping (base.mountinfo) adds no "/": the walk is the same."""
    on: dict[tuple[str, str], str] = {}
    for mount_id, (parent, point) in tree.items():
        on[(parent, point)] = mount_id
    roots = [i for i, (parent, point) in tree.items() if point == "/" and (parent not in tree or parent == i)]
    if not roots:  # an excerpt without "/": start from the one parent it does not list
        roots = list({parent for parent, _ in tree.values() if parent not in tree})
    if len(roots) != 1:
        return lambda mount_id: True  # not a tree we understand: trust every line

    def reachable(mount_id: str) -> bool:
        point = tree[mount_id][1]
        current = roots[0]
        prefix = ""
        for component in point.split("/")[1:]:
            if not component:
                continue
            prefix += "/" + component
            for _ in range(len(tree)):  # bounded: a malformed file may loop
                above = on.get((current, prefix))
                if above is None or above == current:
                    break
                current = above
        return current == mount_id

    return reachable


class Layout:
    """The cgroup layout of a host.

    kind: "v1", "v2" or "hybrid".
    v1: controller (or "name=systemd") -> mount point of its v1 hierarchy;
        controllers mounted together (cpu,cpuacct) share a mount point.
    unified: the cgroup2 mount point, or None.
    """

    __slots__ = ("kind", "unified", "v1")

    def __init__(self, kind: str, v1: dict[str, str], unified: str | None) -> None:
        self.kind = kind
        self.v1 = v1
        self.unified = unified

    def __repr__(self) -> str:
        return f"Layout({self.kind!r}, {self.v1!r}, {self.unified!r})"

    def hierarchies(self) -> list[str]:
        """The distinct v1 mount points, in the order first seen."""
        seen: list[str] = []
        for mountpoint in self.v1.values():
            if mountpoint not in seen:
                seen.append(mountpoint)
        return seen


def layout_from_mounts(mounts: list[CgroupMount]) -> Layout:
    """Decide the layout. Raises ValueError when no cgroup fs is mounted."""
    v1: dict[str, str] = {}
    v1_root: dict[str, str] = {}
    unified = None
    unified_root = ""
    for m in mounts:
        if m.fstype == "cgroup2":
            # Several cgroup2 mounts are the same hierarchy; prefer the one
            # that shows all of it (root "/") and, among those, the first.
            if unified is None or (m.root == "/" and unified_root != "/"):
                unified, unified_root = m.mountpoint, m.root
            continue
        for c in m.controllers:
            # A hierarchy bind-mounted twice: keep the mount of its root.
            if c not in v1 or (m.root == "/" and v1_root[c] != "/"):
                v1[c] = m.mountpoint
                v1_root[c] = m.root
    has_v1 = any(not c.startswith("name=") for c in v1)
    if has_v1 and unified is not None:
        kind = "hybrid"
    elif has_v1:
        kind = "v1"
    elif unified is not None:
        kind = "v2"
        # A named v1 hierarchy (name=systemd) next to a full cgroup2 mount
        # holds no controller: nothing to join for resource control.
        v1 = {}
    else:
        raise ValueError("no cgroup filesystem is mounted")
    return Layout(kind, v1, unified)


def read_layout(path: str = "/proc/self/mountinfo") -> Layout:
    with open(path) as f:
        return layout_from_mounts(parse_mountinfo(f.read()))
