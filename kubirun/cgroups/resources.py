"""OCI linux.resources: the keys we know, their types, and which
controllers a request needs. ``check`` validates everything, so that a
malformed request fails before the first write.

Unknown keys are errors rather than ignored: a limit we do not understand is
a limit we would silently drop. Zero means "unset" where runc treats it so
(memory limit/swap/reservation, cpu shares/quota/period, blkio weights,
net_cls classID); pids.limit 0 is a real limit (runtime-spec).
"""
from __future__ import annotations

from .convert import (
    ConversionError,
    device,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_str,
    hugepage_sizes,
    rdma_line,
    swappiness_unset,
)
from .devices import rules_from_oci

KEYS = {
    "devices": None,
    "memory": {"limit": int, "reservation": int, "swap": int, "kernel": int, "kernelTCP": int,
               "swappiness": int, "disableOOMKiller": bool, "useHierarchy": bool,
               "checkBeforeUpdate": bool},
    "cpu": {"shares": int, "quota": int, "burst": int, "period": int, "realtimeRuntime": int,
            "realtimePeriod": int, "cpus": str, "mems": str, "idle": int},
    "pids": {"limit": int},
    "blockIO": {"weight": int, "leafWeight": int, "weightDevice": list, "throttleReadBpsDevice": list,
                "throttleWriteBpsDevice": list, "throttleReadIOPSDevice": list,
                "throttleWriteIOPSDevice": list},
    "hugepageLimits": None,
    "network": {"classID": int, "priorities": list},
    "rdma": None,
    "unified": None,
}

THROTTLES = (
    # OCI key, v1 file, v2 io.max key
    ("throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
    ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
    ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
    ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops"),
)

_GETTERS = {int: get_int, bool: get_bool, str: get_str, list: get_list}


def check(resources: dict) -> None:
    """Raise ConversionError for an unknown key or a value of the wrong type."""
    if not isinstance(resources, dict):
        raise ConversionError(f"resources must be an object, not {type(resources).__name__}")
    for key, value in resources.items():
        if key not in KEYS:
            raise ConversionError(f"unknown resource {key!r} (known: {', '.join(KEYS)})")
        if value is None:
            continue
        fields = KEYS[key]
        if key in ("devices", "hugepageLimits"):
            get_list(resources, key, "resources")
            continue
        if key in ("rdma", "unified"):
            get_dict(resources, key, "resources")
            continue
        values = get_dict(resources, key, "resources")
        for sub in values:
            if sub not in fields:
                raise ConversionError(f"unknown resource {key}.{sub} (known: {', '.join(fields)})")
            _GETTERS[fields[sub]](values, sub, key)
    sizes = hugepage_sizes() if resources.get("hugepageLimits") else []
    for entry in resources.get("hugepageLimits") or ():
        if (not isinstance(entry, dict) or not isinstance(entry.get("pageSize"), str)
                or get_int(entry, "limit", "hugepageLimits") is None or entry["limit"] < 0):
            raise ConversionError(f"hugepageLimits entry {entry!r} needs pageSize and a limit >= 0")
        if sizes and entry["pageSize"] not in sizes:
            raise ConversionError(f"hugepage size {entry['pageSize']} is not supported by this kernel "
                                  f"(it has {', '.join(sizes)})")
    swappiness = section(resources, "memory").get("swappiness")
    if not swappiness_unset(swappiness) and not 0 <= swappiness <= 100:
        raise ConversionError(f"invalid memory swappiness value: {swappiness} (valid range is 0-100)")
    for name, value in (resources.get("unified") or {}).items():
        if not isinstance(value, str):
            raise ConversionError(f"unified {name!r}: the value must be a string, not {value!r}")
        if "/" in name or name in ("", ".", ".."):
            raise ConversionError(f"unified resource {name!r} must be a file name (no slashes)")
    for name, limits in (resources.get("rdma") or {}).items():
        if not isinstance(limits, dict):
            raise ConversionError(f"rdma {name!r}: must be an object")
        rdma_line(name, limits)
    bio = section(resources, "blockIO")
    for entry in bio.get("weightDevice") or ():
        device(entry, "weightDevice")
        if not entry.get("weight") and not entry.get("leafWeight"):
            raise ConversionError(f"blockIO weightDevice entry {entry!r} needs weight or leafWeight")
    for key, _, _ in THROTTLES:
        for entry in bio.get(key) or ():
            device(entry, key)
            rate = entry.get("rate")
            if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
                raise ConversionError(f"blockIO {key} entry {entry!r} needs a rate >= 0")
    for entry in section(resources, "network").get("priorities") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("priority"), int):
            raise ConversionError(f"network.priorities entry {entry!r} needs name and priority")
    if resources.get("devices"):
        rules_from_oci(resources["devices"])  # DeviceRuleError


def section(resources: dict, key: str) -> dict:
    return resources.get(key) or {}


def memory_requested(mem: dict) -> bool:
    return bool(mem.get("limit") or mem.get("reservation") or mem.get("swap")
                or not swappiness_unset(mem.get("swappiness")) or mem.get("disableOOMKiller")
                or mem.get("useHierarchy") is not None)


def cpu_requested(cpu: dict) -> bool:
    return bool(cpu.get("shares") or cpu.get("quota") or cpu.get("period")
                or cpu.get("burst") is not None or cpu.get("idle") is not None
                or cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"))


def cpuset_requested(cpu: dict) -> bool:
    return bool(cpu.get("cpus") or cpu.get("mems"))


def blkio_requested(bio: dict) -> bool:
    return bool(bio.get("weight") or bio.get("leafWeight") or bio.get("weightDevice")
                or any(bio.get(key) for key, _, _ in THROTTLES))


def needs(resources: dict) -> dict[str, str]:
    """Controller (v1 name) -> the resource that needs it."""
    out = {}
    if memory_requested(section(resources, "memory")):
        out["memory"] = "memory"
    cpu = section(resources, "cpu")
    if cpu_requested(cpu):
        out["cpu"] = "cpu"
    if cpuset_requested(cpu):
        out["cpuset"] = "cpu.cpus/cpu.mems"
    if get_int(section(resources, "pids"), "limit", "pids") is not None:
        out["pids"] = "pids.limit"
    if blkio_requested(section(resources, "blockIO")):
        out["blkio"] = "blockIO"
    if resources.get("hugepageLimits"):
        out["hugetlb"] = "hugepageLimits"
    net = section(resources, "network")
    if net.get("classID"):
        out["net_cls"] = "network.classID"
    if net.get("priorities"):
        out["net_prio"] = "network.priorities"
    if resources.get("rdma"):
        out["rdma"] = "rdma"
    if resources.get("devices"):
        out["devices"] = "devices"
    return out
