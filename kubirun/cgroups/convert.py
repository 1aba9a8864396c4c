"""OCI linux.resources values to cgroup file values, the way runc converts
them (runc 1.1, libcontainer/cgroups/utils.go and fs2/).

Pure functions, no I/O except ``hugepage_sizes`` (reads a directory).
"""
from __future__ import annotations

import os

# cgroup v2 files print "max" for "no limit"; runc reports it as this.
MAX_UINT64 = (1 << 64) - 1


class ConversionError(ValueError):
    """A value that cannot be converted; the driver adds the cgroup path."""


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] to cpu.weight [1, 10000], linearly (runc 1.1).

    0 means "unset" and stays 0. Below 2 (the v1 minimum) counts as 2
    rather than underflowing as the unsigned Go code would.
    """
    if shares == 0:
        return 0
    return 1 + ((max(shares, 2) - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] to io.weight [1, 10000], linearly (runc)."""
    if weight == 0:
        return 0
    return 1 + ((max(weight, 10) - 10) * 9999) // 990


def num_to_str(value: int) -> str:
    """v2 .max/.low/.high value: 0 is "unset" (""), -1 is "max"."""
    if value == 0:
        return ""
    if value == -1:
        return "max"
    return str(value)


def memory_swap_to_v2(swap: int, memory: int) -> int:
    """OCI memory.swap is memory+swap; v2's memory.swap.max is swap alone.

    Returns the value for memory.swap.max (0: unset, -1: max), as runc's
    ConvertMemorySwapToCgroupV2Value.
    """
    if memory == -1 and swap == 0:
        # unlimited memory and swap not given: both unlimited, as on v1
        return -1
    if swap in (-1, 0):
        return swap
    if memory == -1:
        return swap
    if memory == 0:
        raise ConversionError("unable to set swap limit without memory limit")
    if memory < 0:
        raise ConversionError(f"invalid memory value: {memory}")
    if swap < memory:
        raise ConversionError("memory+swap limit should be >= memory limit")
    return swap - memory


def pids_limit(limit: int) -> str:
    """pids.max: -1 (any negative) is "max". 0 is a real limit (runtime-spec:
    "0 is a valid limit value ... SHOULD be treated as such")."""
    return "max" if limit < 0 else str(limit)


def swappiness_unset(value: int | None) -> bool:
    """OCI swappiness is a uint64; runc treats -1 (and its uint64 form) as unset."""
    return value is None or value == -1 or value == MAX_UINT64


def hugepage_size_name(kib: int) -> str:
    """2048 (kB) -> "2MB", 1048576 -> "1GB", 64 -> "64KB": the names OCI
    hugepageLimits and the hugetlb.<size>.* files use (base 1024)."""
    size = kib * 1024
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1024 or unit == "PB":
            break
        size /= 1024
    return f"{size:g}{unit}"


def hugepage_sizes(sysdir: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """The page sizes the kernel has, as hugetlb file names use them."""
    try:
        names = os.listdir(sysdir)
    except OSError:
        return []
    sizes = []
    for name in sorted(names):
        if name.startswith("hugepages-") and name.endswith("kB"):
            try:
                sizes.append(hugepage_size_name(int(name[len("hugepages-"):-2])))
            except ValueError:
                continue
    return sizes


def parse_cpu_list(text: str) -> list[int]:
    """"0-3,7\\n" -> [0, 1, 2, 3, 7] (cpuset.cpus, cpuset.mems)."""
    out: list[int] = []
    for item in text.strip().split(","):
        item = item.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        if sep:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return out


def device(entry: dict, what: str) -> str:
    """"MAJ:MIN" of an OCI blockIO device entry."""
    try:
        major, minor = entry["major"], entry["minor"]
    except (KeyError, TypeError):
        raise ConversionError(f"blockIO {what} entry {entry!r} needs major and minor") from None
    if not (_is_int(major) and _is_int(minor)) or major < 0 or minor < 0:
        raise ConversionError(f"blockIO {what} entry {entry!r}: bad major or minor")
    return f"{major}:{minor}"


def rdma_line(name: str, limits: dict) -> str:
    """rdma.max line, "max" for what is not given (runc fscommon/rdma.go)."""
    handles = limits.get("hcaHandles")
    objects = limits.get("hcaObjects")
    if handles is None and objects is None:
        raise ConversionError(f"rdma entry {name!r} needs hcaHandles or hcaObjects")
    h = "max" if handles is None else str(handles)
    o = "max" if objects is None else str(objects)
    return f"{name} hca_handle={h} hca_object={o}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def get_int(section: dict, key: str, where: str) -> int | None:
    """An optional integer from an OCI resources section (None if absent)."""
    value = section.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise ConversionError(f"{where}.{key} must be an integer, not {value!r}")
    if not -(1 << 63) <= value <= MAX_UINT64:  # an int64 or a uint64 in the runtime-spec
        raise ConversionError(f"{where}.{key} {value} is out of range (64 bits)")
    return value


def get_bool(section: dict, key: str, where: str) -> bool | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ConversionError(f"{where}.{key} must be a boolean, not {value!r}")
    return value


def get_str(section: dict, key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConversionError(f"{where}.{key} must be a string, not {value!r}")
    return value


def get_list(section: dict, key: str, where: str) -> list:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConversionError(f"{where}.{key} must be a list, not {value!r}")
    return value


def get_dict(section: dict, key: str, where: str) -> dict:
    value = section.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConversionError(f"{where}.{key} must be an object, not {value!r}")
    return value
