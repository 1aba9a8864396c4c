"""Linux capabilities: names, and how a container's process gets exactly the
sets its spec lists (bounding, effective, permitted, inheritable, ambient).

Order matters and follows runc: drop from the bounding set while still
root, keep the permitted set across the uid switch (``PR_SET_KEEPCAPS``),
then set the three thread sets with ``capset`` and raise the ambient ones.
"""
from __future__ import annotations

import os

from kubirun.base import explain
from kubirun._native import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
)
from kubirun.base.errors import ContainerStartError

_NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP"
    " LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER"
    " SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE"
    " SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP"
    " MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF"
    " CHECKPOINT_RESTORE"
).split()
CAPABILITIES = {f"CAP_{name}": number for number, name in enumerate(_NAMES)}

# What docker and podman give a container's root by default, and so
# `kubirun run IMAGE`: no SYS_ADMIN, SYS_PTRACE, NET_ADMIN, SYS_MODULE...
CONTAINER_DEFAULTS = [f"CAP_{name}" for name in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")]


def container_default_sets() -> dict[str, list[str]]:
    return {name: list(CONTAINER_DEFAULTS) for name in ("bounding", "effective", "permitted")}


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability this kernel knows (names beyond it are skipped).
    Read once per process: the runtime reads it while checking the spec, and
    the init it forks then has it without opening /proc after ``start``."""
    global _last_cap
    if _last_cap is None:
        try:
            fd = os.open("/proc/sys/kernel/cap_last_cap", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _last_cap = int(os.read(fd, 32))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            _last_cap = len(_NAMES) - 1
    return _last_cap


def mask(names: list[str], highest: int) -> int:
    bits = 0
    for name in names:
        number = CAPABILITIES[name]
        if number <= highest:
            bits |= 1 << number
    return bits


def beyond_our_bounding_set(sets: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(set, name) of what the process asks to hold but could not: no
    thread gains a capability its bounding set lacks, and the container's
    init inherits ours.  Checked at create, where runc fails too, rather
    than after `start` (bounding names beyond it just stay absent)."""
    with open("/proc/self/status") as f:
        ours = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    highest = last_cap()
    return [(kind, name) for kind in ("effective", "permitted", "inheritable")
            for name in sets.get(kind, [])
            if CAPABILITIES[name] <= highest and not ours & (1 << CAPABILITIES[name])]


class CapabilityPlan:
    """The sets of one process, as bit masks for this kernel."""

    def __init__(self, sets: dict[str, list[str]], highest: int) -> None:
        self.highest = highest
        self.bounding = mask(sets.get("bounding", []), highest)
        self.effective = mask(sets.get("effective", []), highest)
        self.permitted = mask(sets.get("permitted", []), highest)
        self.inheritable = mask(sets.get("inheritable", []), highest)
        self.ambient = mask(sets.get("ambient", []), highest)

    def drop_bounding(self, kernel) -> None:
        """Step 1, as root: remove every capability not in the bounding set."""
        explain.say("prctl(PR_CAPBSET_DROP, n) for {} of {} capabilities", "what the container"
                    " may never regain, even by a setuid binary", self.highest + 1
                    - bin(self.bounding).count("1"), self.highest + 1)
        for number in range(self.highest + 1):
            if not self.bounding & (1 << number):
                kernel.prctl(PR_CAPBSET_DROP, number)

    @staticmethod
    def keep_across_user_switch(kernel, keep: bool) -> None:
        """Step 2: ``setuid`` away from 0 clears the permitted set unless asked."""
        kernel.prctl(PR_SET_KEEPCAPS, 1 if keep else 0)

    def set_thread_sets(self, kernel) -> None:
        """Step 3, after the user switch: exactly the listed sets."""
        explain.say("capset(effective={:#x}, permitted={:#x}, inheritable={:#x})", "the"
                    " privileges the process keeps: exactly the sets it was given",
                    self.effective, self.permitted, self.inheritable)
        try:
            kernel.capset(self.effective, self.permitted, self.inheritable)
        except OSError as err:
            raise ContainerStartError(f"cannot set capabilities: {err.strerror}") from None
        kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        for number in range(self.highest + 1):
            if self.ambient & (1 << number):
                try:
                    kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
                except OSError:
                    pass  # runc too ignores an ambient capability not in permitted+inheritable
