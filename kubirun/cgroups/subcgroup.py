"""``exec --cgroup``: runc's sub-cgroup arguments, and the directories an
exec'd process joins instead of the container's own.

runc 1.1's forms, all relative to the container's cgroup:

- ``PATH`` (given once): every hierarchy, the unified one of a hybrid host
  included (on cgroup v2 the only form that can work);
- ``CONTROLLER[,CONTROLLER...]:PATH`` (repeatable): only those controllers'
  hierarchies; the others, and a hybrid host's unified hierarchy, stay at
  the container's cgroup.  An empty controller name means every hierarchy,
  as in runc.

The sub-cgroup must exist already: it is the caller's (runc does not make
it either).  Nothing here writes a cgroup file.
"""
from __future__ import annotations

import posixpath

from . import CgroupError

# runc's key for the unified hierarchy (cgroup v2, or a hybrid host's).
UNIFIED = ""


def parse(args: list[str]) -> dict[str, str]:
    """``--cgroup`` values to {controller: subpath}; ``UNIFIED`` stands for
    "every hierarchy" when it is a key."""
    paths: dict[str, str] = {}
    for arg in args:
        parts = arg.split(":")
        if len(parts) > 2:
            raise CgroupError(f"invalid --cgroup argument: {arg}")
        if len(parts) == 1:
            if len(args) != 1:
                raise CgroupError(f"invalid --cgroup argument: {arg} (missing <controller>: prefix)")
            paths[UNIFIED] = arg
            continue
        for controller in parts[0].split(","):
            paths[controller] = parts[1]
    return paths


def hierarchy_keys(directory: str, cgroup_path: str, layout) -> list[str]:
    """The controllers (runc's keys) of the hierarchy that ``directory``,
    the cgroup ``cgroup_path``'s directory there, belongs to."""
    mount = directory[:len(directory) - len(cgroup_path)] if directory.endswith(cgroup_path) else None
    if mount is not None and mount == layout.unified:
        return [UNIFIED]
    return [c for c, m in layout.v1.items() if m == mount]


def check_controllers(paths: dict[str, str], known: set[str]) -> None:
    """Refuse a controller none of the container's hierarchies has (as
    runc does), naming those it has."""
    if UNIFIED in paths:
        return
    for controller in paths:
        if controller not in known:
            have = ", ".join(sorted(k for k in known if k)) or "none"
            raise CgroupError(f"--cgroup: unknown controller {controller!r}"
                              f" (this container's: {have})")


def redirect(directory: str, keys: list[str], paths: dict[str, str]) -> str:
    """The directory to join instead of ``directory`` (the container's
    cgroup in the hierarchy of controllers ``keys``): itself, or a
    sub-cgroup of it, which must exist and may not climb out of it."""
    sub = paths.get(UNIFIED)
    if sub is None:
        sub = next((paths[k] for k in keys if k in paths), None)
    if not sub:
        return directory
    target = posixpath.normpath(directory + "/" + sub)
    if target != directory and not target.startswith(directory + "/"):
        raise CgroupError(f"--cgroup {sub}: leaves the container's cgroup {directory}", path=directory)
    if not posixpath.isdir(target):
        raise CgroupError(f"cannot join cgroup {target}: no such file or directory"
                          " (exec --cgroup joins an existing sub-cgroup)", path=target)
    return target
