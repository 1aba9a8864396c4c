"""The hybrid driver: cgroup v1 hierarchies plus the unified (cgroup2)
hierarchy that systemd mounts at /sys/fs/cgroup/unified.

Every controller mounted as v1 is used as v1 (this module adds nothing
there). The unified hierarchy holds only the controllers no v1 hierarchy
took (on a typical systemd host: hugetlb, sometimes rdma and misc); those,
and the OCI "unified" keys, are written there with the v2 formats. Like
runc, the cgroup directory is made in the unified hierarchy too and the
container's processes join it (as root; rootless only for a limit there),
so that the unified view (systemd's, the ``0::`` line of /proc/PID/cgroup)
sees the container.  They are born there (see ``creation.Birthplace``):
moving in through cgroup.procs would cost an RCU grace period each.
"""
from __future__ import annotations

from kubirun.base.errors import CgroupError

from . import fs
from .cgroup import INVALID
from . import resources as oci
from .v1 import V1Cgroup, write_hugetlb
from .v2 import (
    ensure_controllers,
    freeze_dir,
    frozen_file_dir,
    is_frozen_dir,
    set_unified,
    thaw_dir,
    unified_needs,
)

# v1 controllers that may live in the unified hierarchy instead, with file
# formats we know there (rdma.max is the same in both).
UNIFIED_FALLBACK = ("hugetlb", "rdma")


class HybridCgroup(V1Cgroup):
    kind = "hybrid"

    def __init__(self, path: str, layout, state: dict | None = None) -> None:
        super().__init__(path, layout, state)
        self.unified_mount = layout.unified
        self.unified_dir = layout.unified + path

    def _roots(self) -> list[str]:
        return super()._roots() + [self.unified_mount]

    def _setup_dir(self, root: str, dirpath: str, new: bool) -> None:
        # The unified hierarchy's parents delegate nothing up front (as
        # runc's hybrid manager): a controller a limit needs there is
        # enabled when asked for (ensure_controllers).  A write of
        # cgroup.subtree_control costs ~4 ms on this kind of host, and a
        # parent made for one container is made again for the next.
        if root != self.unified_mount:
            super()._setup_dir(root, dirpath, new)

    def dir_of(self, controller: str) -> str | None:
        d = super().dir_of(controller)
        if d is None and controller in UNIFIED_FALLBACK:
            return self.unified_dir
        return d

    def _unified_available(self) -> list[str]:
        text = fs.read_optional(self.path, self.unified_mount, "cgroup.controllers")
        return (text or "").split()

    # --- resources ------------------------------------------------------

    def _unified_needs(self, resources: dict) -> dict[str, str]:
        needed = {c: what for c, what in oci.needs(resources).items()
                  if c not in self.mounts and c in UNIFIED_FALLBACK}
        needed.update(unified_needs(resources.get("unified") or {}))
        return needed

    def _missing(self, needed: dict[str, str]) -> list[str]:
        available = self._unified_available()
        return [f"{what} needs the {c} controller, which is neither mounted as v1 nor available in "
                f"{self.unified_mount}" for c, what in needed.items()
                if c not in self.mounts and not (c in UNIFIED_FALLBACK and c in available)]

    def _apply_v1(self, resources: dict) -> list[str]:
        # The unified part first: enabling its controllers is what can fail.
        try:
            ensure_controllers(self.path, self.unified_mount, self._unified_needs(resources),
                               self._enabled)
        except CgroupError as err:
            if not resources.get("unified"):
                raise
            raise CgroupError(INVALID + str(err), path=err.path, file=err.file,
                              errno=err.errno) from None
        warnings = super()._apply_v1(resources)
        if resources.get("unified"):
            set_unified(self.path, self.unified_dir, resources["unified"])
        return warnings

    def _unified_refusal(self, resources: dict) -> list[str]:
        return []  # written to the unified hierarchy

    def _set_hugetlb(self, limits: list) -> None:
        if "hugetlb" in self.mounts:
            super()._set_hugetlb(limits)
        else:
            write_hugetlb(self.path, self.unified_dir, limits, ".max")

    # --- freezer: v1's, or the unified one if no v1 freezer is mounted ----

    def can_freeze(self) -> bool:
        return super().can_freeze() or fs.exists(self.unified_dir, "cgroup.freeze")

    def freeze(self) -> None:
        if super().can_freeze():
            super().freeze()
        else:
            freeze_dir(self.path, self.unified_dir)

    def thaw(self) -> None:
        if super().can_freeze():
            super().thaw()
        else:
            thaw_dir(self.path, self.unified_dir)

    def frozen_file(self) -> str | None:
        # a frozen unified cgroup stops its processes whatever v1's freezer says
        return super().frozen_file() or frozen_file_dir(self.path, self.unified_dir)

    def is_frozen(self) -> bool:
        if super().can_freeze():
            return super().is_frozen()
        return is_frozen_dir(self.path, self.unified_dir)

    # --- reading ------------------------------------------------------------

    def stats(self) -> dict:
        s = super().stats()
        if "hugetlb" not in self.mounts:
            from .stats import v2_hugetlb

            s["hugetlb"] = v2_hugetlb(self.unified_dir)
        return s
