"""The cgroup v2 driver: one directory in the unified hierarchy.

This module owns the v2 file formats for limits (memory.max, cpu.max,
io.max, pids.max ...), controller delegation (cgroup.subtree_control),
the v2 freezer (cgroup.freeze + cgroup.events) and cgroup.kill. The
functions that take a directory are shared with the hybrid driver, which
uses them on its unified-hierarchy directory. Device rules become an eBPF
program attached to the cgroup (``ebpf``, imported only for them).

Conversions from the OCI (v1-shaped) values follow runc's fs2 driver.
"""
from __future__ import annotations

import errno
import os
import time

from kubirun.base.errors import CgroupError

from . import fs
from .cgroup import Cgroup
from . import resources as oci
from .convert import (
    ConversionError,
    blkio_weight_to_io_weight,
    device,
    memory_swap_to_v2,
    num_to_str,
    pids_limit,
    rdma_line,
    shares_to_weight,
    swappiness_unset,
)
from .devices import DeviceRuleError, rules_from_oci
from .v1 import write_hugetlb

# v1 controller names (as resources.needs() gives them) -> v2 names
V2_NAME = {"memory": "memory", "cpu": "cpu", "cpuset": "cpuset", "pids": "pids", "blkio": "io",
           "hugetlb": "hugetlb", "rdma": "rdma"}

FREEZE_TIMEOUT = 10.0  # runc waits 1000 x 10 ms


# --- directory-level operations (shared with hybrid) -----------------------

def enable_all(cgpath: str, dirpath: str) -> None:
    """Delegate to a parent we created every controller it has (runc: all
    at once, else one by one, ignoring refusals: a limit that then cannot be
    set fails later, with a precise error)."""
    available = fs.read(cgpath, dirpath, "cgroup.controllers").split()
    if not available:
        return
    try:
        fs.write(cgpath, dirpath, "cgroup.subtree_control", " ".join("+" + c for c in available))
    except CgroupError:
        for c in available:
            try:
                fs.write(cgpath, dirpath, "cgroup.subtree_control", "+" + c)
            except CgroupError:
                pass


def ensure_controllers(cgpath: str, mount: str, needed: dict[str, str], enabled: list[list[str]]) -> None:
    """Make each controller in ``needed`` (name -> the request needing it)
    available in mount+cgpath, by enabling it in the subtree_control of
    every ancestor that does not delegate it yet. Checks first that the
    hierarchy has them all, so nothing is written for a hopeless request.
    Appends [dir, controller] to ``enabled`` for each write."""
    if not needed:
        return
    leaf = mount + cgpath
    have = fs.read(cgpath, leaf, "cgroup.controllers").split()
    missing = {c: what for c, what in needed.items() if c not in have}
    if not missing:
        return
    top = fs.read(cgpath, mount, "cgroup.controllers").split()
    absent = [f"{what} needs the {c} controller" for c, what in missing.items() if c not in top]
    if absent:
        raise CgroupError(f"cgroup {cgpath}: " + "; ".join(absent) + f", which {mount} does not have "
                          f"(its cgroup.controllers: {' '.join(top) or 'none'})",
                          path=cgpath, file=os.path.join(mount, "cgroup.controllers"))
    parts = cgpath.strip("/").split("/")
    chain = [mount] + [mount + "/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    for c in missing:
        for d in chain:
            if c in fs.read(cgpath, d, "cgroup.subtree_control").split():
                continue
            try:
                fs.write(cgpath, d, "cgroup.subtree_control", "+" + c)
            except CgroupError as e:
                hint = ""
                if e.errno == errno.EBUSY:
                    hint = " (that cgroup has processes of its own: v2 allows controllers only above leaves)"
                raise CgroupError(f"{e}{hint}", path=e.path, file=e.file, errno=e.errno) from None
            enabled.append([d, c])


def _events_frozen(cgpath: str, dirpath: str) -> bool:
    return _says_frozen(fs.read(cgpath, dirpath, "cgroup.events"))


def _says_frozen(events: str) -> bool:
    """Whether cgroup.events has its "frozen 1" line (read here rather than
    with stats.parse_key_values: create asks, and stats is a large import)."""
    return any(line.split() == ["frozen", "1"] for line in events.splitlines())


def wait_frozen(cgpath: str, dirpath: str, timeout: float | None = None) -> bool:
    deadline = time.monotonic() + (FREEZE_TIMEOUT if timeout is None else timeout)
    while True:
        if _events_frozen(cgpath, dirpath):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def freeze_dir(cgpath: str, dirpath: str) -> None:
    """cgroup.freeze=1, then wait for "frozen 1" in cgroup.events: the
    write only asks, the tasks stop at their next return to user space."""
    if not fs.exists(dirpath, "cgroup.freeze"):
        raise CgroupError(f"cgroup {cgpath}: cannot freeze: {dirpath}/cgroup.freeze does not exist "
                          f"(kernel < 5.2, or no such cgroup)", path=cgpath,
                          file=os.path.join(dirpath, "cgroup.freeze"), errno=errno.ENOENT)
    fs.write(cgpath, dirpath, "cgroup.freeze", "1")
    if not wait_frozen(cgpath, dirpath):
        try:
            fs.write(cgpath, dirpath, "cgroup.freeze", "0")
        except CgroupError:
            pass
        raise CgroupError(f"cgroup {cgpath}: timed out after {FREEZE_TIMEOUT:g} s waiting for "
                          f"'frozen 1' in {dirpath}/cgroup.events", path=cgpath,
                          file=os.path.join(dirpath, "cgroup.events"))


def thaw_dir(cgpath: str, dirpath: str) -> None:
    fs.write(cgpath, dirpath, "cgroup.freeze", "0")


def is_frozen_dir(cgpath: str, dirpath: str) -> bool:
    """Frozen by its own cgroup.freeze (not merely by an ancestor's), and
    actually stopped."""
    state = fs.read_optional(cgpath, dirpath, "cgroup.freeze")
    if state is None or state.strip() != "1":
        return False
    return wait_frozen(cgpath, dirpath)


def frozen_file_dir(cgpath: str, dirpath: str) -> str | None:
    """cgroup.freeze when it asks for a freeze, cgroup.events when it says
    "frozen 1" (an ancestor's freeze); None otherwise, or without them."""
    freeze = fs.read_optional(cgpath, dirpath, "cgroup.freeze")
    if freeze is not None and freeze.strip() == "1":
        return os.path.join(dirpath, "cgroup.freeze")
    events = fs.read_optional(cgpath, dirpath, "cgroup.events")
    if events is not None and _says_frozen(events):
        return os.path.join(dirpath, "cgroup.events")
    return None


def set_unified(cgpath: str, dirpath: str, values: dict[str, str]) -> None:
    """OCI "unified": each key is a file in the cgroup, written line by line
    (runc's WriteFileByLine)."""
    for name, value in values.items():
        lines = [line for line in value.split("\n") if line] or [value]
        for line in lines:
            try:
                fs.write(cgpath, dirpath, name, line)
            except CgroupError as e:
                if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
                    raise CgroupError(f"{e} (unified resource {name!r} can't be set: is it a file of an "
                                      f"available controller?)", path=e.path, file=e.file, errno=e.errno) from None
                raise


def unified_needs(values: dict[str, str]) -> dict[str, str]:
    """The controllers the "unified" keys belong to ("memory.high" ->
    memory); "cgroup.*" files are core, not a controller."""
    out = {}
    for name in values:
        controller, dot, _ = name.partition(".")
        if not dot or not controller:
            raise ConversionError(f"unified resource {name!r} must be in the form CONTROLLER.PARAMETER")
        if controller != "cgroup":
            out[controller] = f"unified {name}"
    return out


# --- the driver ---------------------------------------------------------------

class V2Cgroup(Cgroup):
    kind = "v2"

    def __init__(self, path: str, layout, state: dict | None = None) -> None:
        super().__init__(path, layout, state)
        self.mount = layout.unified
        self.dir = self.mount + path
        # True while the leaf is one this object made and no device program
        # has been attached to it since: allowing every device needs no bpf(2)
        self._no_device_program = False

    def _roots(self) -> list[str]:
        return [self.mount]

    def _procs_dir(self) -> str:
        return self.dir

    def _setup_dir(self, root: str, dirpath: str, new: bool) -> None:
        # Parents we made pass every controller down (the leaf must not:
        # a cgroup with processes cannot delegate domain controllers).
        if new and dirpath != self.dir:
            enable_all(self.path, dirpath)
        if new and dirpath == self.dir:
            self._no_device_program = True  # a new cgroup has no programs of its own

    # --- freezer / kill ---------------------------------------------------------

    def can_freeze(self) -> bool:
        return fs.exists(self.dir, "cgroup.freeze")

    def freeze(self) -> None:
        freeze_dir(self.path, self.dir)

    def thaw(self) -> None:
        thaw_dir(self.path, self.dir)

    def is_frozen(self) -> bool:
        return is_frozen_dir(self.path, self.dir)

    def frozen_file(self) -> str | None:
        return frozen_file_dir(self.path, self.dir)

    def _cgroup_kill(self) -> bool:
        # cgroup.kill (5.14+): the kernel SIGKILLs every task in the subtree,
        # forks in flight included; no freezing needed.
        if not fs.exists(self.dir, "cgroup.kill"):
            return False
        fs.write(self.path, self.dir, "cgroup.kill", "1")
        return True

    # --- resources -----------------------------------------------------------------

    def apply(self, resources: dict) -> list[str]:
        """Write the OCI linux.resources; returns warnings. Everything the
        host cannot do is refused before anything is written."""
        prog_fd = None
        try:
            oci.check(resources)
            warnings = self._refuse_v1_only(resources)
            # The device program is made and loaded (checked by the kernel's
            # verifier) before anything is written; attached in _write.
            devices = self._device_program(resources)
            if devices:
                prog_fd = self._bpf_call(lambda ebpf: ebpf.load(devices))
            needed = {}
            for c, what in oci.needs(resources).items():
                if c in V2_NAME:
                    needed[V2_NAME[c]] = what
            needed.update(unified_needs(resources.get("unified") or {}))
            ensure_controllers(self.path, self.mount, needed, self._enabled)
            self._write(resources, warnings, devices, prog_fd)
            return warnings
        except (ConversionError, DeviceRuleError) as e:
            raise CgroupError(f"cgroup {self.path}: {e}", path=self.path) from None
        finally:
            if prog_fd is not None:
                os.close(prog_fd)  # the attachment holds the program

    # --- devices: an eBPF program (see ebpf) -------------------------------------

    @staticmethod
    def _device_program(resources: dict) -> bytes | None:
        """None without device rules (the filter, if any, is left as it
        is); b"" when they allow everything; else the program's code."""
        if not resources.get("devices"):
            return None
        from . import ebpf

        return ebpf.device_filter(rules_from_oci(resources["devices"])) or b""

    def _bpf_call(self, call):
        from . import ebpf

        try:
            return call(ebpf)
        except ebpf.BPFError as e:
            raise CgroupError(f"cgroup {self.path}: {self.dir}: {e}", path=self.path, file=self.dir,
                              errno=e.errno) from None

    def _set_devices(self, prog_fd: int | None) -> None:
        if prog_fd is not None:
            # attached before the old programs are detached: never unfiltered
            self._bpf_call(lambda ebpf: ebpf.install(self.dir, prog_fd))
            self._no_device_program = False
        elif not self._no_device_program:
            # everything allowed: no program at all, as with a new cgroup
            self._bpf_call(lambda ebpf: ebpf.remove_all(self.dir))
            self._no_device_program = True

    def _refuse_v1_only(self, resources: dict) -> list[str]:
        """Errors for what only v1 can do, warnings for tuning v2 lacks."""
        warnings = []
        problems = []
        mem = oci.section(resources, "memory")
        for key in ("kernel", "kernelTCP"):
            if mem.get(key) is not None:
                warnings.append(f"memory.{key} is ignored: kernel memory limits are deprecated "
                                f"(runc ignores them too)")
        if not swappiness_unset(mem.get("swappiness")):
            warnings.append("memory.swappiness is ignored: cgroup v2 has no per-cgroup swappiness")
        if mem.get("disableOOMKiller"):
            problems.append("memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer")
        if mem.get("useHierarchy") is False:
            problems.append("memory.useHierarchy=false: cgroup v2 is always hierarchical")
        cpu = oci.section(resources, "cpu")
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            problems.append("cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no realtime group scheduling")
        bio = oci.section(resources, "blockIO")
        if bio.get("leafWeight") or any(isinstance(e, dict) and e.get("leafWeight")
                                        for e in bio.get("weightDevice") or ()):
            problems.append("blockIO leafWeight: cgroup v2 has no leaf weights")
        net = oci.section(resources, "network")
        if net.get("classID") or net.get("priorities"):
            problems.append("network.classID/priorities need the v1 net_cls/net_prio controllers, "
                            "which cgroup v2 does not have")
        if bio.get("weightDevice") and not self._bfq_per_device():
            problems.append("blockIO.weightDevice needs per-device BFQ weights (io.bfq.weight, kernel 5.4+ "
                            "with the BFQ scheduler)")
        memory_swap_to_v2(mem.get("swap") or 0, mem.get("limit") or 0)  # ConversionError
        if problems:
            raise CgroupError(f"cgroup {self.path}: " + "; ".join(problems), path=self.path)
        return warnings

    def _bfq_per_device(self) -> bool:
        # io.bfq.weight reads "default N" plus per-device lines on kernels
        # that take per-device weights (5.4+), a bare number before
        current = fs.read_optional(self.path, self.dir, "io.bfq.weight")
        return current is not None and not current.strip().isdigit()

    def _write(self, resources: dict, warnings: list[str], devices: bytes | None = None,
               prog_fd: int | None = None) -> None:
        d = self.dir
        # runc's order: pids, memory, io, cpu, devices, cpuset, hugetlb, rdma, unified
        limit = oci.section(resources, "pids").get("limit")
        if limit is not None:
            fs.write(self.path, d, "pids.max", pids_limit(limit))
        self._set_memory(oci.section(resources, "memory"))
        bio = oci.section(resources, "blockIO")
        if oci.blkio_requested(bio):
            self._set_io(bio)
        cpu = oci.section(resources, "cpu")
        if oci.cpu_requested(cpu):
            self._set_cpu(cpu, warnings)
        if devices is not None:
            self._set_devices(prog_fd)
        for key in ("cpus", "mems"):
            if cpu.get(key):
                fs.write(self.path, d, "cpuset." + key, cpu[key])
        if resources.get("hugepageLimits"):
            write_hugetlb(self.path, d, resources["hugepageLimits"], ".max")
        for name, limits in sorted((resources.get("rdma") or {}).items()):
            fs.write(self.path, d, "rdma.max", rdma_line(name, limits))
        if resources.get("unified"):
            set_unified(self.path, d, resources["unified"])

    def _set_memory(self, mem: dict) -> None:
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        reservation = mem.get("reservation") or 0
        if not (limit or swap or reservation):
            return
        d = self.dir
        if mem.get("checkBeforeUpdate") and (limit > 0 or swap > 0):
            # v1 refuses a limit below usage; v2 would OOM-kill instead
            from .stats import parse_uint

            usage = parse_uint(fs.read(self.path, d, "memory.current"))
            if swap > 0 and swap <= usage:
                raise CgroupError(f"cgroup {self.path}: rejecting memory+swap limit {swap} <= usage {usage}",
                                  path=self.path)
            if limit > 0 and limit <= usage:
                raise CgroupError(f"cgroup {self.path}: rejecting memory limit {limit} <= usage {usage}",
                                  path=self.path)
        swap_v2 = memory_swap_to_v2(swap, limit)
        swap_str = num_to_str(swap_v2)
        if swap_str == "" and swap_v2 == 0 and swap > 0:
            swap_str = "0"  # memory == memory+swap: no swap at all
        if swap_str:
            if fs.exists(d, "memory.swap.max"):
                fs.write(self.path, d, "memory.swap.max", swap_str)
            elif swap_str not in ("max", "0"):
                # without swap accounting "no swap" and "any swap" hold anyway
                raise CgroupError(f"cgroup {self.path}: memory.swap needs swap accounting, which this kernel "
                                  f"lacks ({d}/memory.swap.max does not exist)", path=self.path,
                                  file=os.path.join(d, "memory.swap.max"), errno=errno.ENOENT)
        if num_to_str(limit):
            fs.write(self.path, d, "memory.max", num_to_str(limit))
        if num_to_str(reservation):
            fs.write(self.path, d, "memory.low", num_to_str(reservation))

    def _set_io(self, bio: dict) -> None:
        from .resources import THROTTLES

        d = self.dir
        weight = bio.get("weight")
        if weight:
            # BFQ takes the v1 range as is; io.weight needs converting
            if fs.exists(d, "io.bfq.weight"):
                fs.write(self.path, d, "io.bfq.weight", str(weight))
            else:
                fs.write(self.path, d, "io.weight", str(blkio_weight_to_io_weight(weight)))
        for entry in bio.get("weightDevice") or ():
            fs.write(self.path, d, "io.bfq.weight", f"{device(entry, 'weightDevice')} {entry['weight']}")
        for key, _, io_key in THROTTLES:
            for entry in bio.get(key) or ():
                rate = entry["rate"]
                # v1 takes 0 as "no limit"; the v2 kernel refuses 0 (EIO):
                # keep v1's meaning rather than fail (runc would fail)
                fs.write(self.path, d, "io.max", f"{device(entry, key)} {io_key}={rate or 'max'}")

    def _set_cpu(self, cpu: dict, warnings: list[str]) -> None:
        d = self.dir
        if cpu.get("idle") is not None:
            fs.write(self.path, d, "cpu.idle", str(cpu["idle"]))
        if cpu.get("shares"):
            fs.write(self.path, d, "cpu.weight", str(shares_to_weight(cpu["shares"])))
        quota = cpu.get("quota") or 0
        period = cpu.get("period") or 0
        burst = cpu.get("burst")
        burst_again = False
        if burst is not None:
            if not fs.exists(d, "cpu.max.burst"):
                warnings.append(f"cpu.burst is ignored: {d}/cpu.max.burst does not exist (kernel < 5.14)")
                burst = None
            else:
                burst_again = fs.write_or_defer(self.path, d, "cpu.max.burst", str(burst), bool(quota))
        if quota or period:
            # no period given: the kernel keeps the current one
            value = str(quota) if quota > 0 else "max"
            if period:
                value += f" {period}"
            fs.write(self.path, d, "cpu.max", value)
            if burst_again:
                fs.write(self.path, d, "cpu.max.burst", str(burst))

    # --- reading --------------------------------------------------------------------

    def stats(self) -> dict:
        from .stats import v2_stats

        return v2_stats(self.dir)

    def oom_kills(self) -> int:
        from .stats import parse_key_values

        text = fs.read_optional(self.path, self.dir, "memory.events")
        return parse_key_values(text or "").get("oom_kill", 0)
