"""Resource limits (``process.rlimits``): names and application."""
from __future__ import annotations

from kubirun.base.errors import ContainerStartError

# Linux's numbers (asm-generic/resource.h), shared by x86 and arm.
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
_INFINITY = 0xFFFFFFFFFFFFFFFF  # what the spec's uint64 "unlimited" is


def apply(limits: list[tuple[str, int, int]], kernel) -> None:
    for name, soft, hard in limits:
        try:
            kernel.setrlimit(RLIMITS[name], min(soft, _INFINITY), min(hard, _INFINITY))
        except OSError as err:
            raise ContainerStartError(f"cannot set {name} to {soft}/{hard}: {err.strerror}") from None
