"""Statistics: cgroup v1 and v2 files to the object runc prints as the
"data" of `runc events --stats` (runc 1.1 types/events.go).

The drivers call ``v1_stats`` / ``v2_stats`` with the directory of each
controller; everything here only reads files. The result has runc's JSON
shape, including Go's ``omitempty``: a zero counter that runc leaves out
is left out here too (read with ``.get(key, 0)``), while the fields runc
always prints (memory "limit" and "failcnt", cpu "kernel" and "user", the
cpuset flags) are always there.
"""
from __future__ import annotations

import errno
import os

from .convert import MAX_UINT64, hugepage_sizes, parse_cpu_list

# cpuacct.stat counts in USER_HZ, which is 100 on every Linux ABI (runc
# hard-codes it too).
CLOCK_TICKS = 100
NS_PER_SEC = 1_000_000_000


# --- parsing -----------------------------------------------------------

def parse_uint(text: str) -> int:
    """A counter: "max" is 2**64-1, as runc reports it; a negative value
    (some v1 memory counters, by kernel bug) is 0."""
    text = text.strip()
    if text == "max":
        return MAX_UINT64
    value = int(text)
    return max(value, 0)


def parse_int(text: str) -> int:
    text = text.strip()
    return MAX_UINT64 if text == "max" else int(text)


def parse_key_values(text: str) -> dict[str, int]:
    """"key value" lines (memory.stat, cpu.stat, memory.events ...)."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2:
            try:
                out[fields[0]] = parse_uint(fields[1])
            except ValueError:
                continue
    return out


def parse_blkio_v1(text: str) -> list[dict]:
    """blkio.* recursive files: "8:0 Read 1282048" or "8:0 6792" lines and a
    "Total N" line (skipped)."""
    entries = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) < 3:
            continue  # "Total 3477504"
        try:
            major, minor = int(fields[0]), int(fields[1])
            if len(fields) == 4:
                op, value = fields[2], int(fields[3])
            else:
                op, value = "", int(fields[2])
        except ValueError:
            continue
        entries.append(blkio_entry(major, minor, op, value))
    return entries


def parse_io_stat(text: str) -> tuple[list[dict], list[dict]]:
    """v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0")
    to runc's v1-style tables: (ioServiceBytesRecursive, ioServicedRecursive)."""
    service_bytes, serviced = [], []
    for line in text.splitlines():
        fields = line.split()
        if not fields or ":" not in fields[0]:
            continue
        try:
            major, minor = (int(x) for x in fields[0].split(":", 1))
        except ValueError:
            continue
        for item in fields[1:]:
            key, _, value = item.partition("=")
            table = {"rbytes": service_bytes, "wbytes": service_bytes,
                     "rios": serviced, "wios": serviced}.get(key)
            if table is None:
                continue  # dbytes, cost.*: nothing in runc's table for them
            try:
                table.append(blkio_entry(major, minor, "Read" if key[0] == "r" else "Write", int(value)))
            except ValueError:
                continue
    return service_bytes, serviced


# --- shaping (omitempty as in runc's types) ---------------------------

def _nonzero(**fields) -> dict:
    return {k: v for k, v in fields.items() if v}


def blkio_entry(major: int, minor: int, op: str, value: int) -> dict:
    return _nonzero(major=major, minor=minor, op=op, value=value)


def memory_entry(limit: int = 0, usage: int = 0, max: int = 0, failcnt: int = 0) -> dict:
    entry = {"limit": limit}
    entry.update(_nonzero(usage=usage, max=max))
    entry["failcnt"] = failcnt
    return entry


def cpu_usage(total: int = 0, percpu=None, percpu_kernel=None, percpu_user=None,
              kernel: int = 0, user: int = 0) -> dict:
    out = _nonzero(total=total, percpu=percpu, percpu_kernel=percpu_kernel, percpu_user=percpu_user)
    out["kernel"] = kernel
    out["user"] = user
    return out


def cpuset_stats(cpus=None, mems=None, **flags) -> dict:
    out = _nonzero(cpus=cpus)
    out["cpu_exclusive"] = flags.get("cpu_exclusive", 0)
    if mems:
        out["mems"] = mems
    for key in ("mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                "memory_spread_slab", "memory_pressure", "sched_load_balance",
                "sched_relax_domain_level"):
        out[key] = flags.get(key, 0)
    return out


def empty_stats() -> dict:
    return {
        "cpu": {"usage": cpu_usage(), "throttling": {}},
        "cpuset": cpuset_stats(),
        "memory": {"usage": memory_entry(), "swap": memory_entry(), "kernel": memory_entry(),
                   "kernelTCP": memory_entry()},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def throttling(periods: int, throttled_periods: int, throttled_time: int) -> dict:
    return _nonzero(periods=periods, throttledPeriods=throttled_periods, throttledTime=throttled_time)


def memory_section(cache: int, usage: dict, swap: dict, kernel: dict, kernel_tcp: dict,
                   raw: dict[str, int]) -> dict:
    out = _nonzero(cache=cache)
    out.update(usage=usage, swap=swap, kernel=kernel, kernelTCP=kernel_tcp)
    if raw:
        out["raw"] = dict(sorted(raw.items()))  # Go prints map keys sorted
    return out


def pids_section(current: int, limit: int) -> dict:
    # runc: "max" (no limit) is reported as 0, i.e. left out
    return _nonzero(current=current, limit=0 if limit == MAX_UINT64 else limit)


# --- reading -----------------------------------------------------------

def _read(dirpath: str | None, name: str) -> str | None:
    if dirpath is None:
        return None
    try:
        with open(os.path.join(dirpath, name)) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        # ENODEV/EOPNOTSUPP: a knob the kernel lists but cannot read here
        if e.errno in (errno.ENODEV, errno.EOPNOTSUPP):
            return None
        raise


def _uint(dirpath: str | None, name: str) -> int:
    text = _read(dirpath, name)
    if text is None:
        return 0
    try:
        return parse_uint(text)
    except ValueError:
        return 0


def _v1_memory_entry(dirpath: str, prefix: str) -> dict | None:
    usage = _read(dirpath, prefix + ".usage_in_bytes")
    if usage is None:
        return None
    return memory_entry(limit=_uint(dirpath, prefix + ".limit_in_bytes"), usage=parse_uint(usage),
                        max=_uint(dirpath, prefix + ".max_usage_in_bytes"),
                        failcnt=_uint(dirpath, prefix + ".failcnt"))


def v1_stats(dirs: dict[str, str]) -> dict:
    """Stats from v1 hierarchies; ``dirs`` maps controller to the cgroup's
    directory in it (missing controllers are skipped)."""
    s = empty_stats()

    cpuset = dirs.get("cpuset")
    if cpuset and os.path.isdir(cpuset):
        prefix = "cpuset." if os.path.exists(os.path.join(cpuset, "cpuset.cpus")) else ""
        flags = {}
        for key in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                    "memory_spread_page", "memory_spread_slab", "memory_pressure", "sched_load_balance"):
            flags[key] = _uint(cpuset, prefix + key)
        level = _read(cpuset, prefix + "sched_relax_domain_level")
        flags["sched_relax_domain_level"] = int(level) if level and level.strip().lstrip("-").isdigit() else 0
        s["cpuset"] = cpuset_stats(cpus=parse_cpu_list(_read(cpuset, prefix + "cpus") or ""),
                                   mems=parse_cpu_list(_read(cpuset, prefix + "mems") or ""), **flags)

    cpu = dirs.get("cpu")
    if cpu:
        st = parse_key_values(_read(cpu, "cpu.stat") or "")
        s["cpu"]["throttling"] = throttling(st.get("nr_periods", 0), st.get("nr_throttled", 0),
                                            st.get("throttled_time", 0))

    acct = dirs.get("cpuacct")
    if acct and os.path.isdir(acct):
        user = kernel = 0
        fields = (_read(acct, "cpuacct.stat") or "").split()
        if len(fields) >= 4 and fields[0] == "user" and fields[2] == "system":
            user = int(fields[1]) * NS_PER_SEC // CLOCK_TICKS
            kernel = int(fields[3]) * NS_PER_SEC // CLOCK_TICKS
        percpu = [int(x) for x in (_read(acct, "cpuacct.usage_percpu") or "").split()]
        percpu_user, percpu_kernel = [], []
        lines = (_read(acct, "cpuacct.usage_all") or "").splitlines()
        if lines and lines[0].startswith("cpu user system"):
            for line in lines[1:]:
                f = line.split()
                if len(f) >= 3:
                    percpu_user.append(int(f[1]))
                    percpu_kernel.append(int(f[2]))
        s["cpu"]["usage"] = cpu_usage(total=_uint(acct, "cpuacct.usage"), percpu=percpu,
                                      percpu_kernel=percpu_kernel, percpu_user=percpu_user,
                                      kernel=kernel, user=user)

    memory = dirs.get("memory")
    if memory:
        usage = _v1_memory_entry(memory, "memory")
        if usage is not None:
            raw = parse_key_values(_read(memory, "memory.stat") or "")
            s["memory"] = memory_section(
                raw.get("cache", 0), usage,
                _v1_memory_entry(memory, "memory.memsw") or memory_entry(),
                _v1_memory_entry(memory, "memory.kmem") or memory_entry(),
                _v1_memory_entry(memory, "memory.kmem.tcp") or memory_entry(),
                raw)

    pids = dirs.get("pids")
    if pids and _read(pids, "pids.current") is not None:
        s["pids"] = pids_section(_uint(pids, "pids.current"), _uint(pids, "pids.max"))

    blkio = dirs.get("blkio")
    if blkio:
        s["blkio"] = _v1_blkio(blkio)

    hugetlb = dirs.get("hugetlb")
    if hugetlb and os.path.isdir(hugetlb):
        s["hugetlb"] = v1_hugetlb(hugetlb)
    return s


# runc tries these groups in order and takes the first whose first file
# exists (BFQ debug, BFQ, CFQ, throttle recursive, throttle).
_BLKIO_GROUPS = (
    (("blkio.bfq.sectors_recursive", "sectorsRecursive"),
     ("blkio.bfq.io_service_time_recursive", "ioServiceTimeRecursive"),
     ("blkio.bfq.io_wait_time_recursive", "ioWaitTimeRecursive"),
     ("blkio.bfq.io_merged_recursive", "ioMergedRecursive"),
     ("blkio.bfq.io_queued_recursive", "ioQueueRecursive"),
     ("blkio.bfq.time_recursive", "ioTimeRecursive"),
     ("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.sectors_recursive", "sectorsRecursive"),
     ("blkio.io_service_time_recursive", "ioServiceTimeRecursive"),
     ("blkio.io_wait_time_recursive", "ioWaitTimeRecursive"),
     ("blkio.io_merged_recursive", "ioMergedRecursive"),
     ("blkio.io_queued_recursive", "ioQueueRecursive"),
     ("blkio.time_recursive", "ioTimeRecursive"),
     ("blkio.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes", "ioServiceBytesRecursive")),
)

# runc's field order in its Blkio type
_BLKIO_ORDER = ("ioServiceBytesRecursive", "ioServicedRecursive", "ioQueueRecursive",
                "ioServiceTimeRecursive", "ioWaitTimeRecursive", "ioMergedRecursive",
                "ioTimeRecursive", "sectorsRecursive")


def _v1_blkio(dirpath: str) -> dict:
    for group in _BLKIO_GROUPS:
        first = _read(dirpath, group[0][0])
        if first is None:
            continue
        found = {group[0][1]: parse_blkio_v1(first)}
        for name, key in group[1:]:
            text = _read(dirpath, name)
            found[key] = parse_blkio_v1(text or "")
        return {key: found[key] for key in _BLKIO_ORDER if found.get(key)}
    return {}


def v1_hugetlb(dirpath: str) -> dict:
    out = {}
    for size in hugepage_sizes():
        prefix = f"hugetlb.{size}"
        usage = _read(dirpath, prefix + ".rsvd.usage_in_bytes")
        if usage is None:
            usage = _read(dirpath, prefix + ".usage_in_bytes")
        if usage is None:
            continue
        out[size] = _nonzero(usage=parse_uint(usage), max=_uint(dirpath, prefix + ".max_usage_in_bytes"))
        out[size]["failcnt"] = _uint(dirpath, prefix + ".failcnt")
    return out


def v2_hugetlb(dirpath: str) -> dict:
    out = {}
    for size in hugepage_sizes():
        prefix = f"hugetlb.{size}"
        usage = _read(dirpath, prefix + ".rsvd.current")
        if usage is None:
            usage = _read(dirpath, prefix + ".current")
        if usage is None:
            continue
        events = parse_key_values(_read(dirpath, prefix + ".events") or "")
        out[size] = _nonzero(usage=parse_uint(usage))
        out[size]["failcnt"] = events.get("max", 0)
    return out


def _v2_memory_entry(dirpath: str, prefix: str) -> dict | None:
    current = _read(dirpath, prefix + ".current")
    if current is None:
        return None
    return {"limit": _uint(dirpath, prefix + ".max"), "usage": parse_uint(current),
            "max": _uint(dirpath, prefix + ".peak")}


def v2_stats(dirpath: str) -> dict:
    """Stats from the cgroup's directory in a cgroup2 hierarchy."""
    s = empty_stats()

    st = _read(dirpath, "cpu.stat")
    if st is not None:
        kv = parse_key_values(st)
        s["cpu"]["usage"] = cpu_usage(total=kv.get("usage_usec", 0) * 1000,
                                      kernel=kv.get("system_usec", 0) * 1000,
                                      user=kv.get("user_usec", 0) * 1000)
        s["cpu"]["throttling"] = throttling(kv.get("nr_periods", 0), kv.get("nr_throttled", 0),
                                            kv.get("throttled_usec", 0) * 1000)

    mem = _v2_memory_entry(dirpath, "memory")
    if mem is not None:
        raw = parse_key_values(_read(dirpath, "memory.stat") or "")
        swap = _v2_memory_entry(dirpath, "memory.swap") or {"limit": 0, "usage": 0, "max": 0}
        # runc: v1 reported memory+swap, so v2's swap is reported with the
        # memory added (and no peak: the sum of two peaks is no peak).
        swap_limit = swap["limit"]
        if swap_limit != MAX_UINT64:
            swap_limit = min(swap_limit + mem["limit"], MAX_UINT64)
        s["memory"] = memory_section(
            raw.get("file", 0), memory_entry(mem["limit"], mem["usage"], mem["max"], 0),
            memory_entry(swap_limit, swap["usage"] + mem["usage"], 0, 0),
            memory_entry(), memory_entry(), raw)

    current = _read(dirpath, "pids.current")
    if current is not None:
        s["pids"] = pids_section(parse_uint(current), _uint(dirpath, "pids.max"))
    else:
        # pids controller not enabled: count processes (as runc)
        procs = _read(dirpath, "cgroup.procs")
        if procs is not None:
            s["pids"] = pids_section(len(procs.split()), 0)

    io = _read(dirpath, "io.stat")
    if io is not None:
        service_bytes, serviced = parse_io_stat(io)
        s["blkio"] = _nonzero(ioServiceBytesRecursive=service_bytes, ioServicedRecursive=serviced)

    s["hugetlb"] = v2_hugetlb(dirpath)
    return s
