"""kubirun's cgroup manager: the interface, the path rules and the choice of
driver.

``open_cgroup(path, state)`` reads /proc/self/mountinfo and returns a
driver for the host's layout:

- ``v2.V2Cgroup``: pure cgroup v2 (one unified hierarchy);
- ``v1.V1Cgroup``: cgroup v1 only (one hierarchy per controller or group of
  comounted controllers, plus name=systemd);
- ``hybrid.HybridCgroup``: v1 for every controller mounted as v1, and the
  unified hierarchy for the rest (on systemd hosts that is typically only
  hugetlb); like runc, the process joins the unified hierarchy too.

Every driver implements the ``Cgroup`` interface (``cgroup``). The common
parts (making and removing directories, moving pids, walking pids,
killing) live there too; the per-version file formats live in the driver modules, the stats
parsing in ``stats``, the OCI value conversions in ``convert`` and the
device rules in ``devices``.

What a driver may touch: the directories it created (recorded in
``to_state()`` so that another process can remove exactly those) and files
inside them. It never writes to a cgroup it did not create, with one
exception on v2: a controller that a requested limit needs is enabled in a
pre-existing ancestor's cgroup.subtree_control when it is not yet (runc
enables everything there unconditionally; we do it only when needed).

Importing this package is cheap: only ``os``, ``cgroup`` and the base's
errors at module level, the drivers are imported by ``open_cgroup``.
"""
from __future__ import annotations

from kubirun.base.errors import CgroupError
from kubirun.cgroups.cgroup import (DEFAULT_PARENT, DESTROY_TIMEOUT, INVALID, Cgroup,
                                    normalise_path)

__all__ = ["CgroupError", "DEFAULT_PARENT", "DESTROY_TIMEOUT", "INVALID", "Cgroup",
           "normalise_path", "detect_layout", "open_cgroup"]


def detect_layout(mountinfo: str = "/proc/self/mountinfo"):
    """The host's cgroup layout (a ``mountinfo.Layout``)."""
    from .mountinfo import read_layout

    try:
        return read_layout(mountinfo)
    except (OSError, ValueError) as e:
        raise CgroupError(f"cannot find the cgroup filesystems in {mountinfo}: {e}", file=mountinfo) from None


def open_cgroup(path: str, state: dict | None = None, *, layout=None) -> Cgroup:
    """A driver for the cgroup at ``path`` (the OCI linux.cgroupsPath).

    ``state`` is what ``Cgroup.to_state()`` returned earlier, possibly in
    another process: it tells which directories we created. ``layout``
    (a ``mountinfo.Layout``) is for tests; by default it is detected.
    """
    norm = normalise_path(path)
    if layout is None:
        layout = detect_layout()
    if state:
        if state.get("driver") != layout.kind:
            raise CgroupError(f"cgroup {norm}: the state was made by the {state.get('driver')!r} driver, "
                              f"but this host's cgroups are {layout.kind}", path=norm)
        if state.get("path") not in (None, norm):
            raise CgroupError(f"cgroup {norm}: the state is for another cgroup, {state.get('path')}", path=norm)
    if layout.kind == "v2":
        from .v2 import V2Cgroup as driver
    elif layout.kind == "hybrid":
        from .hybrid import HybridCgroup as driver
    else:
        from .v1 import V1Cgroup as driver
    return driver(norm, layout, state)
