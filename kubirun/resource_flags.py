"""``kubirun update``'s flags and ``-r FILE``, as an OCI ``linux.resources``
object for the cgroup manager.  Every flag maps to a field or is refused:
nothing is silently dropped."""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_INT64 = (-(1 << 63), (1 << 63) - 1)  # what a cgroup file takes (and the runtime-spec)


def parse_size(text: str, flag: str) -> int:
    """Bytes: 1048576, 512k, 512m, 1g, 1.5g (docker's units, fractions
    too, as docker's RAMInBytes); -1 for unlimited."""
    value = text.strip().lower()
    if value == "-1":
        return -1
    number = value.rstrip("bkmgt")
    unit = value[len(number):].rstrip("b") or ""
    whole, _, fraction = number.partition(".")
    if unit not in _UNITS or not number.isascii() or not whole.isdigit() \
            or not (fraction == "" or fraction.isdigit()) or number.endswith("."):
        raise KubirunError(f"{flag}: invalid size {text!r} (e.g. 512m, 1g, 1.5g, -1)")
    from fractions import Fraction

    size = int(Fraction(number) * _UNITS[unit])  # exact: no float rounding of 8 EiB
    if size > _INT64[1]:
        raise KubirunError(f"{flag}: {text!r} is out of range (at most 8 EiB)")
    return size


def _int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise KubirunError(f"{flag}: expected a number, got {text!r}") from None
    if not _INT64[0] <= value <= _INT64[1]:
        raise KubirunError(f"{flag}: {text!r} is out of range (64 bits)")
    return value


# flag -> (section, field, parser)
FLAG_FIELDS = {
    "memory": ("memory", "limit", parse_size),
    "memory_reservation": ("memory", "reservation", parse_size),
    "memory_swap": ("memory", "swap", parse_size),
    "cpu_shares": ("cpu", "shares", _int),
    "cpu_quota": ("cpu", "quota", _int),
    "cpu_period": ("cpu", "period", _int),
    "cpu_rt_runtime": ("cpu", "realtimeRuntime", _int),
    "cpu_rt_period": ("cpu", "realtimePeriod", _int),
    "cpuset_cpus": ("cpu", "cpus", lambda v, f: v),
    "cpuset_mems": ("cpu", "mems", lambda v, f: v),
    "pids_limit": ("pids", "limit", _int),
    "blkio_weight": ("blockIO", "weight", _int),
}
REFUSED = {
    "kernel_memory": "kernel memory limits are deprecated and not supported (runc ignores them too)",
    "kernel_memory_tcp": "kernel TCP memory limits are not supported",
    "l3_cache_schema": "Intel RDT is not supported",
    "mem_bw_schema": "Intel RDT is not supported",
}


def resources_from_flags(flags: dict) -> dict:
    resources: dict = {}
    for name, value in flags.items():
        if value is None:
            continue
        if name in REFUSED:
            raise KubirunError(f"--{name.replace('_', '-')}: {REFUSED[name]}")
        section, field, parser = FLAG_FIELDS[name]
        resources.setdefault(section, {})[field] = parser(value, f"--{name.replace('_', '-')}")
    return resources


def resources_from_file(path: str) -> dict:
    import sys

    from kubirun.base import jsonio

    try:
        data = sys.stdin.read() if path == "-" else open(path).read()
        resources = jsonio.loads(data)
    except OSError as err:
        raise KubirunError(f"cannot read {path}: {err.strerror}") from None
    except jsonio.JSONError as err:
        raise KubirunError(f"{path}: malformed JSON: {err}") from None
    if not isinstance(resources, dict):
        raise KubirunError(f"{path}: expected a linux.resources JSON object")
    return runtime_spec_names(resources, RESOURCE_FIELDS)


# linux.resources' field names, by section: runc reads `update -r` with
# Go's JSON decoder, which matches names without regard to case ("CPU" is
# "cpu"), and engines and users write them so.
RESOURCE_FIELDS: dict = {
    "devices": None, "hugepageLimits": None, "network": None, "rdma": None, "unified": None,
    "memory": {"limit": None, "reservation": None, "swap": None, "kernel": None,
               "kernelTCP": None, "swappiness": None, "disableOOMKiller": None,
               "useHierarchy": None, "checkBeforeUpdate": None},
    "cpu": {"shares": None, "quota": None, "burst": None, "period": None,
            "realtimeRuntime": None, "realtimePeriod": None, "cpus": None, "mems": None,
            "idle": None},
    "pids": {"limit": None},
    "blockIO": {"weight": None, "leafWeight": None, "weightDevice": None,
                "throttleReadBpsDevice": None, "throttleWriteBpsDevice": None,
                "throttleReadIOPSDevice": None, "throttleWriteIOPSDevice": None},
}


def runtime_spec_names(value: object, fields: dict) -> object:
    """``value`` with its keys spelled as the runtime spec spells them,
    where they match one regardless of case (others are left as they are)."""
    if not isinstance(value, dict):
        return value
    by_lower = {name.lower(): name for name in fields}
    result = {}
    for key, item in value.items():
        name = by_lower.get(key.lower(), key) if isinstance(key, str) else key
        inner = fields.get(name)
        result[name] = runtime_spec_names(item, inner) if inner else item
    return result


CPU_PERIOD = 100_000  # us, the CFS default (docker's --cpus uses the same)
MIN_CPUS = 0.01  # a quota of 1 ms (the kernel's least) per period, as docker's floor


def _check_cpuset(text: str) -> None:
    """``--cpuset-cpus``: a list this process may run on, else one line
    naming the CPUs that are (not the cgroup's ERANGE)."""
    usable = sorted(os.sched_getaffinity(0))
    wanted: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            wanted.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise KubirunError(f"--cpuset-cpus: expected a list such as 0-1 or 0,2, got {text!r}") from None
    beyond = sorted(wanted - set(usable))
    if beyond or not wanted:
        raise KubirunError(f"--cpuset-cpus {text}: no CPU {', '.join(map(str, beyond)) or text}"
                           f" here; this host has CPUs {_as_list(usable)}")


def _as_list(cpus: list[int]) -> str:
    ranges, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            ranges.append(f"{start}-{cpu}" if cpu != start else str(cpu))
            start = None
    return ",".join(ranges)


def run_limits(memory: str | None, cpus: str | None, pids_limit: str | None,
               cpuset_cpus: str | None, io_weight: str | None) -> dict:
    """``kubirun run``'s limit flags as ``linux.resources`` (docker's
    meanings: --cpus 0.5 is a quota of half a period)."""
    resources: dict = {}
    if memory is not None:
        limit = parse_size(memory, "--memory")
        if limit != -1 and limit < 1 << 20:
            raise KubirunError(f"--memory: {memory!r} is below 1m, too little to run anything")
        resources["memory"] = {"limit": limit}
    if cpus is not None:
        try:
            value = float(cpus)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise KubirunError(f"--cpus: expected a positive number of CPUs, got {cpus!r}")
        if value < MIN_CPUS:
            # the kernel's smallest CFS quota is 1 ms of our 100 ms period
            raise KubirunError(f"--cpus: {cpus} is below {MIN_CPUS}, the least a CFS quota can be")
        available = len(os.sched_getaffinity(0))
        if value > available:
            # docker's rule: a quota of more CPUs than there are limits nothing
            raise KubirunError(f"--cpus: {cpus} is more than the {available} CPUs available here")
        resources.setdefault("cpu", {}).update(quota=max(1000, round(value * CPU_PERIOD)),
                                               period=CPU_PERIOD)
    if cpuset_cpus is not None:
        _check_cpuset(cpuset_cpus)
        resources.setdefault("cpu", {})["cpus"] = cpuset_cpus
    if pids_limit is not None:
        limit = _int(pids_limit, "--pids-limit")
        if limit < 1 and limit != -1:
            raise KubirunError(f"--pids-limit: expected a positive number or -1, got {pids_limit!r}")
        resources["pids"] = {"limit": limit}
    if io_weight is not None:
        weight = _int(io_weight, "--io-weight")
        if not 10 <= weight <= 1000:
            raise KubirunError(f"--io-weight: expected 10 to 1000, got {io_weight!r}")
        resources["blockIO"] = {"weight": weight}
    return resources
