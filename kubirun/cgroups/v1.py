"""The cgroup v1 driver: one directory per hierarchy.

This module owns the v1 file formats for limits (memory.limit_in_bytes,
cpu.cfs_quota_us, blkio.throttle.*, devices.allow ...), the v1 freezer
(freezer.state) and cpuset inheritance. Writes follow runc's fs driver
(libcontainer/cgroups/fs), including its write orders for updates
(memory before/after swap, period before/after quota).

Hierarchies joined: every mounted v1 controller, and name=systemd (as
runc does). cpu and cpuacct may be separate mounts or one; the layout maps
each controller to its mount point, so both cases are the same here.
"""
from __future__ import annotations

import errno
import os
import time

from kubirun.base.errors import CgroupError

from . import fs
from .cgroup import INVALID, Cgroup, joined_v1_mounts
from . import resources as oci
from .convert import (
    ConversionError,
    pids_limit,
    rdma_line,
    swappiness_unset,
)
from .devices import DeviceRuleError, from_list, from_rules, rules_from_oci

# Where to find the pids of the cgroup, best first: the freezer's view is the
# one kill_all and freeze act on.
_PROCS_PREFERENCE = ("freezer", "pids", "memory", "devices", "cpu", "name=systemd")


class V1Cgroup(Cgroup):
    kind = "v1"

    def __init__(self, path: str, layout, state: dict | None = None) -> None:
        super().__init__(path, layout, state)
        # controller -> mount point, for the hierarchies we join
        self.mounts = joined_v1_mounts(layout)

    # --- layout ----------------------------------------------------------

    def _roots(self) -> list[str]:
        seen: list[str] = []
        for mountpoint in self.mounts.values():
            if mountpoint not in seen:
                seen.append(mountpoint)
        return seen

    def dir_of(self, controller: str) -> str | None:
        """The cgroup's directory in ``controller``'s hierarchy, or None if
        that controller is not mounted."""
        mountpoint = self.mounts.get(controller)
        return None if mountpoint is None else mountpoint + self.path

    def _need(self, controller: str, what: str) -> str:
        d = self.dir_of(controller)
        if d is None:
            raise CgroupError(f"cgroup {self.path}: {what} needs the {controller} controller, "
                              f"which is not mounted on this host", path=self.path)
        return d

    def _procs_dir(self) -> str:
        for c in _PROCS_PREFERENCE:
            if c in self.mounts:
                return self.dir_of(c)
        return self.dirs()[0]

    # --- create / add ----------------------------------------------------

    def _setup_dir(self, root: str, dirpath: str, new: bool) -> None:
        # A new v1 cpuset cgroup starts with empty cpus and mems, and a
        # process cannot join it (ENOSPC): copy them from the parent, level by
        # level, as runc does. In directories we made; and in a pre-existing
        # one only where they are still empty: such a cpuset can hold no
        # process, nor give its children any cpu, so nobody configured it.
        # It is a shared parent whose maker was killed between its mkdir and
        # these writes (or is making it now, and writes the same values).
        if root == self.mounts.get("cpuset"):
            prefix = _cpuset_prefix(os.path.dirname(dirpath))
            for name in ("cpus", "mems"):
                mine = fs.read(self.path, dirpath, prefix + name)
                if not mine.strip():
                    parent = _parents_cpuset(self.path, os.path.dirname(dirpath), prefix + name)
                    fs.write(self.path, dirpath, prefix + name, parent or "\n")

    def add(self, pid: int, memory: bool | None = None, include_unified: bool = True) -> None:
        try:
            super().add(pid, memory, include_unified)
        except CgroupError as e:
            if e.errno == errno.ENOSPC and "cpuset" in (e.file or ""):
                raise CgroupError(f"{e} (its cpuset.cpus or cpuset.mems is empty)", path=e.path,
                                  file=e.file, errno=e.errno) from None
            raise

    # --- freezer ----------------------------------------------------------

    def can_freeze(self) -> bool:
        return "freezer" in self.mounts

    def freeze(self) -> None:
        """Write FROZEN until freezer.state reads FROZEN (runc's loop: a v1
        cgroup that keeps forking can stay FREEZING; thawing now and then
        and retrying gets it there)."""
        d = self._need("freezer", "freeze")
        ok = False
        try:
            for i in range(2000):
                if i % 50 == 49:
                    fs.write(self.path, d, "freezer.state", "THAWED")
                    time.sleep(0.01)
                fs.write(self.path, d, "freezer.state", "FROZEN")
                if i % 25 == 24 or i >= 1000:
                    time.sleep(0.001)
                state = fs.read(self.path, d, "freezer.state").strip()
                if state == "FROZEN":
                    ok = True
                    return
                if state != "FREEZING":
                    raise CgroupError(f"cgroup {self.path}: unexpected freezer.state {state!r} while freezing",
                                      path=self.path, file=os.path.join(d, "freezer.state"))
            raise CgroupError(f"cgroup {self.path}: unable to freeze: {d}/freezer.state stays FREEZING",
                              path=self.path, file=os.path.join(d, "freezer.state"))
        finally:
            if not ok:
                # never leave a cgroup half frozen
                try:
                    fs.write(self.path, d, "freezer.state", "THAWED")
                except CgroupError:
                    pass

    def thaw(self) -> None:
        d = self._need("freezer", "thaw")
        fs.write(self.path, d, "freezer.state", "THAWED")

    def frozen_file(self) -> str | None:
        d = self.dir_of("freezer")
        state = fs.read_optional(self.path, d, "freezer.state") if d is not None else None
        if state is not None and state.strip() in ("FROZEN", "FREEZING"):
            return os.path.join(d, "freezer.state")
        return None

    def is_frozen(self) -> bool:
        """Frozen by us (freezer.self_freezing), not merely by an ancestor."""
        d = self.dir_of("freezer")
        if d is None:
            return False
        for _ in range(5000):
            state = fs.read_optional(self.path, d, "freezer.state")
            if state is None:
                return False
            state = state.strip()
            if state == "FREEZING":
                time.sleep(0.001)
                continue
            if state != "FROZEN":
                return False
            own = fs.read_optional(self.path, d, "freezer.self_freezing")
            return own is None or own.strip() == "1"
        return False

    # --- resources ----------------------------------------------------------

    def _missing(self, needed: dict[str, str]) -> list[str]:
        return [f"{what} needs the {c} controller, which is not mounted on this host"
                for c, what in needed.items() if c not in self.mounts]

    def _unified_refusal(self, resources: dict) -> list[str]:
        if resources.get("unified"):
            return ["unified needs cgroup v2 (this host has cgroup v1 only)"]
        return []

    def apply(self, resources: dict) -> list[str]:
        """Write the OCI linux.resources; returns warnings. Checks first that
        every controller a request needs is mounted, so that a request the
        host cannot honour fails before anything is written."""
        try:
            oci.check(resources)
            missing = self._missing(oci.needs(resources)) + self._unified_refusal(resources)
            if missing:
                # runc's words for a config the host cannot take (engines match them)
                invalid = INVALID if resources.get("unified") else ""
                raise CgroupError(f"{invalid}cgroup {self.path}: cannot apply resources: "
                                  + "; ".join(missing), path=self.path)
            self._precheck(resources)
            return self._apply_v1(resources)
        except (ConversionError, DeviceRuleError) as e:
            raise CgroupError(f"cgroup {self.path}: {e}", path=self.path) from None

    def _apply_v1(self, resources: dict) -> list[str]:
        warnings: list[str] = []
        cpu = oci.section(resources, "cpu")
        # runc's subsystem order: cpuset, devices, memory, cpu, pids, blkio,
        # hugetlb, net_cls, net_prio, rdma
        if oci.cpuset_requested(cpu):
            self._set_cpuset(cpu)
        if resources.get("devices"):
            self._set_devices(resources["devices"])
        self._set_memory(oci.section(resources, "memory"), warnings)
        if oci.cpu_requested(cpu):
            self._set_cpu(cpu, warnings)
        limit = oci.section(resources, "pids").get("limit")
        if limit is not None:
            fs.write(self.path, self.dir_of("pids"), "pids.max", pids_limit(limit))
        if oci.blkio_requested(oci.section(resources, "blockIO")):
            self._set_blkio(resources["blockIO"])
        if resources.get("hugepageLimits"):
            self._set_hugetlb(resources["hugepageLimits"])
        self._set_network(oci.section(resources, "network"))
        for name, limits in sorted((resources.get("rdma") or {}).items()):
            fs.write(self.path, self.dir_of("rdma"), "rdma.max", rdma_line(name, limits))
        return warnings

    def _set_cpuset(self, cpu: dict) -> None:
        d = self.dir_of("cpuset")
        prefix = _cpuset_prefix(d)
        for key in ("cpus", "mems"):
            if cpu.get(key):
                fs.write(self.path, d, prefix + key, cpu[key])

    def _set_devices(self, entries: list) -> None:
        d = self.dir_of("devices")
        rules = rules_from_oci(entries)
        target = from_rules(rules)
        current = from_list(fs.read(self.path, d, "devices.list"))
        for rule in _in_listed_order(current.transition(target), rules):
            fs.write(self.path, d, "devices.allow" if rule.allow else "devices.deny", rule.cgroup_string())
        # runc's final check: an allow list must now be exactly the target; of
        # a deny list devices.list only shows the mode
        after = from_list(fs.read(self.path, d, "devices.list"))
        if (not target.default_allow and after != target) or after.default_allow != target.default_allow:
            raise CgroupError(f"cgroup {self.path}: {d}/devices.list does not match the requested device rules",
                              path=self.path, file=os.path.join(d, "devices.list"))

    def _set_memory(self, mem: dict, warnings: list[str]) -> None:
        for key in ("kernel", "kernelTCP"):
            if mem.get(key) is not None:
                warnings.append(f"memory.{key} is ignored: kernel memory limits are deprecated "
                                f"(runc ignores them too)")
        if not oci.memory_requested(mem):
            return
        d = self.dir_of("memory")
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        memsw = "memory.memsw.limit_in_bytes"
        # -1 memory with no swap given: both unlimited, if swap accounting is on
        if limit == -1 and swap == 0 and fs.exists(d, memsw):
            swap = -1
        # On an update the order matters: the kernel wants memory <= memsw at
        # every step.
        swap_first = False
        if limit and swap:
            from .stats import parse_uint

            current = parse_uint(fs.read(self.path, d, "memory.limit_in_bytes"))
            swap_first = swap == -1 or current < swap
        if swap_first:
            self._set_swap(d, swap)
            self._set_limit(d, limit)
        else:
            self._set_limit(d, limit)
            self._set_swap(d, swap)
        if mem.get("reservation"):
            fs.write(self.path, d, "memory.soft_limit_in_bytes", str(mem["reservation"]))
        if mem.get("disableOOMKiller"):
            fs.write(self.path, d, "memory.oom_control", "1")
        swappiness = mem.get("swappiness")
        if not swappiness_unset(swappiness):
            fs.write(self.path, d, "memory.swappiness", str(swappiness))
        hierarchy = mem.get("useHierarchy")
        if hierarchy is not None:
            want = "1" if hierarchy else "0"
            if fs.read(self.path, d, "memory.use_hierarchy").strip() != want:
                fs.write(self.path, d, "memory.use_hierarchy", want)

    def _set_limit(self, d: str, value: int) -> None:
        if not value:
            return
        try:
            fs.write(self.path, d, "memory.limit_in_bytes", str(value))
        except CgroupError as e:
            if e.errno != errno.EBUSY:
                raise
            usage = fs.read(self.path, d, "memory.usage_in_bytes").strip()
            peak = fs.read(self.path, d, "memory.max_usage_in_bytes").strip()
            raise CgroupError(f"{e}: unable to set memory limit to {value} (current usage: {usage}, "
                              f"peak usage: {peak})", path=e.path, file=e.file, errno=e.errno) from None

    def _set_swap(self, d: str, value: int) -> None:
        if value:
            fs.write(self.path, d, "memory.memsw.limit_in_bytes", str(value))

    def _precheck(self, resources: dict) -> None:
        """What the host lacks beyond whole controllers, found before the
        first write."""
        d = self.dir_of("memory")
        if oci.section(resources, "memory").get("swap") and not fs.exists(d, "memory.memsw.limit_in_bytes"):
            raise CgroupError(f"cgroup {self.path}: memory.swap needs swap accounting, which this kernel "
                              f"lacks ({d}/memory.memsw.limit_in_bytes does not exist)",
                              path=self.path, file=os.path.join(d, "memory.memsw.limit_in_bytes"),
                              errno=errno.ENOENT)

    def _set_cpu(self, cpu: dict, warnings: list[str]) -> None:
        d = self.dir_of("cpu")
        shares = cpu.get("shares")
        if shares:
            fs.write(self.path, d, "cpu.shares", str(shares))
            # the kernel clamps silently; runc reads back and complains
            actual = int(fs.read(self.path, d, "cpu.shares"))
            if shares > actual:
                raise CgroupError(f"cgroup {self.path}: the maximum allowed cpu-shares is {actual}", path=self.path)
            if shares < actual:
                raise CgroupError(f"cgroup {self.path}: the minimum allowed cpu-shares is {actual}", path=self.path)
        quota = cpu.get("quota") or 0
        period = cpu.get("period") or 0
        burst = cpu.get("burst")
        # A new period or burst can be refused (EINVAL) until the new quota is
        # in place: then write it again after the quota, as runc does.
        period_again = burst_again = False
        if period:
            period_again = fs.write_or_defer(self.path, d, "cpu.cfs_period_us", str(period), bool(quota))
        if burst is not None:
            if not fs.exists(d, "cpu.cfs_burst_us"):
                warnings.append(f"cpu.burst is ignored: {d}/cpu.cfs_burst_us does not exist (kernel < 5.14)")
                burst = None
            else:
                burst_again = fs.write_or_defer(self.path, d, "cpu.cfs_burst_us", str(burst), bool(quota))
        if quota:
            fs.write(self.path, d, "cpu.cfs_quota_us", str(quota))
            if period_again:
                fs.write(self.path, d, "cpu.cfs_period_us", str(period))
            if burst_again:
                fs.write(self.path, d, "cpu.cfs_burst_us", str(burst))
        if cpu.get("idle") is not None:
            fs.write(self.path, d, "cpu.idle", str(cpu["idle"]))
        self._set_rt(d, cpu)

    def _set_rt(self, d: str, cpu: dict) -> None:
        runtime = cpu.get("realtimeRuntime") or 0
        period = cpu.get("realtimePeriod") or 0
        period_again = bool(period) and fs.write_or_defer(self.path, d, "cpu.rt_period_us", str(period),
                                                          bool(runtime))
        if runtime:
            fs.write(self.path, d, "cpu.rt_runtime_us", str(runtime))
            if period_again:
                fs.write(self.path, d, "cpu.rt_period_us", str(period))

    def _set_blkio(self, bio: dict) -> None:
        from .convert import device
        from .resources import THROTTLES

        d = self.dir_of("blkio")
        # CFQ's files if present, else BFQ's (runc's detectWeightFilenames)
        if fs.exists(d, "blkio.weight"):
            weight_file, weight_device_file = "blkio.weight", "blkio.weight_device"
        else:
            weight_file, weight_device_file = "blkio.bfq.weight", "blkio.bfq.weight_device"
        if bio.get("weight"):
            fs.write(self.path, d, weight_file, str(bio["weight"]))
        if bio.get("leafWeight"):
            fs.write(self.path, d, "blkio.leaf_weight", str(bio["leafWeight"]))
        for entry in bio.get("weightDevice") or ():
            dev = device(entry, "weightDevice")
            if entry.get("weight"):
                fs.write(self.path, d, weight_device_file, f"{dev} {entry['weight']}")
            if entry.get("leafWeight"):
                fs.write(self.path, d, "blkio.leaf_weight_device", f"{dev} {entry['leafWeight']}")
        for key, filename, _ in THROTTLES:
            for entry in bio.get(key) or ():
                fs.write(self.path, d, filename, f"{device(entry, key)} {entry['rate']}")

    def _set_hugetlb(self, limits: list) -> None:
        write_hugetlb(self.path, self.dir_of("hugetlb"), limits, ".limit_in_bytes")

    def _set_network(self, net: dict) -> None:
        if net.get("classID"):
            fs.write(self.path, self.dir_of("net_cls"), "net_cls.classid", str(net["classID"]))
        for entry in net.get("priorities") or ():
            fs.write(self.path, self.dir_of("net_prio"), "net_prio.ifpriomap",
                     f"{entry['name']} {entry['priority']}")

    # --- reading -----------------------------------------------------------

    def stats(self) -> dict:
        from .stats import v1_stats

        return v1_stats({c: self.dir_of(c) for c in self.mounts})

    def oom_kills(self) -> int:
        d = self.dir_of("memory")
        if d is None:
            return 0
        text = fs.read_optional(self.path, d, "memory.oom_control")
        from .stats import parse_key_values

        return parse_key_values(text or "").get("oom_kill", 0)


def _parents_cpuset(cgpath: str, parent: str, name: str) -> str:
    """The parent's cpus or mems.  Empty while whoever made the parent a
    moment ago (another container starting under the same new parent) has
    not copied its own into it yet: then wait for them, up to 0.5 s."""
    for _ in range(50):
        value = fs.read(cgpath, parent, name).strip()
        if value:
            return value
        time.sleep(0.01)
    return ""


def _cpuset_prefix(dirpath: str) -> str:
    """Only a v1 cpuset may be mounted "noprefix" (Android): cpus, not
    cpuset.cpus."""
    if not os.path.exists(os.path.join(dirpath, "cpuset.cpus")) and os.path.exists(os.path.join(dirpath, "cpus")):
        return ""
    return "cpuset."


def write_hugetlb(cgpath: str, d: str, limits: list, suffix: str) -> None:
    """hugetlb.<size><suffix> for each limit, and the reservation limit
    (.rsvd, kernel 5.7+) too where the kernel has it (as runc)."""
    rsvd = True
    for entry in limits:
        size, limit = entry["pageSize"], entry["limit"]
        prefix = f"hugetlb.{size}"
        fs.write(cgpath, d, prefix + suffix, str(limit))
        if rsvd:
            if fs.exists(d, prefix + ".rsvd" + suffix):
                fs.write(cgpath, d, prefix + ".rsvd" + suffix, str(limit))
            else:
                rsvd = False


def _in_listed_order(ops: list, rules: list) -> list:
    """The emulator's writes, with its allow rules put back in the order the
    config lists them (runtime-spec: devices are applied "in the listed
    order"; devices.list then shows them so, as crun writes them)."""
    first: dict = {}
    for i, rule in enumerate(rules):
        first.setdefault((rule.type, rule.major, rule.minor), i)
    places = [i for i, rule in enumerate(ops) if rule.allow and rule.type != "a"]
    allows = sorted((ops[i] for i in places),
                    key=lambda r: first.get((r.type, r.major, r.minor), len(rules)))
    ops = list(ops)
    for i, rule in zip(places, allows):
        ops[i] = rule
    return ops
