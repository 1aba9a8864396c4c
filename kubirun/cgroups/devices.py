"""Device access rules: OCI linux.resources.devices to the devices cgroup.

A port of runc's devices emulator (libcontainer/cgroups/devices/
devices_emulator.go): the v1 devices cgroup is either a deny list ("a *:*
rwm" in devices.list: everything allowed except the exceptions, which
devices.list cannot show) or an allow list. We model the current state
(from devices.list) and the requested one (from the OCI rules, applied in
order), and write the smallest sequence of devices.allow / devices.deny
lines that turns one into the other, so that a running container never
sees a moment of "deny everything" unless the mode itself changes.

On cgroup v2 the same emulated state (``from_rules``) is turned into an
eBPF program attached to the cgroup (``ebpf``).
"""
from __future__ import annotations

WILDCARD = -1
_PERM_BITS = {"r": 1, "w": 2, "m": 4}


class DeviceRuleError(ValueError):
    pass


def _perm_set(perms: str) -> int:
    """The access bits of r, w and m in ``perms``; any other letter is
    ignored, as runc ignores it (engines pass what runc took)."""
    bits = 0
    for p in perms:
        bits |= _PERM_BITS.get(p, 0)
    return bits


def _perm_str(bits: int) -> str:
    return "".join(p for p, b in _PERM_BITS.items() if bits & b)


class Rule:
    """One cgroup device rule: type a/b/c, major/minor (-1: any), access
    bits, allow or deny."""

    __slots__ = ("allow", "major", "minor", "perms", "type")

    def __init__(self, type: str, major: int, minor: int, perms: int, allow: bool) -> None:
        self.type = type
        self.major = major
        self.minor = minor
        self.perms = perms
        self.allow = allow

    def cgroup_string(self) -> str:
        """"c 1:3 rwm" as devices.allow and devices.deny take it."""
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {major}:{minor} {_perm_str(self.perms)}"

    def __repr__(self) -> str:
        return f"Rule({'allow' if self.allow else 'deny'} {self.cgroup_string()})"


def rules_from_oci(entries: list) -> list[Rule]:
    """OCI LinuxDeviceCgroup entries to rules, as runc's specconv: type
    defaults to "a", a missing major/minor is the wildcard, access must be
    given."""
    rules = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DeviceRuleError(f"devices[{i}] must be an object, not {entry!r}")
        allow = entry.get("allow")
        if not isinstance(allow, bool):
            raise DeviceRuleError(f"devices[{i}].allow must be a boolean")
        dtype = entry.get("type") or "a"
        if dtype not in ("a", "b", "c"):
            raise DeviceRuleError(f"devices[{i}].type {dtype!r}: must be a, b or c")
        numbers = []
        for key in ("major", "minor"):
            value = entry.get(key)
            if value is None:
                value = WILDCARD
            elif not isinstance(value, int) or isinstance(value, bool) or value < WILDCARD:
                raise DeviceRuleError(f"devices[{i}].{key} {value!r}: not a device number")
            numbers.append(value)
        access = entry.get("access")
        if access is not None and not isinstance(access, str):
            raise DeviceRuleError(f"devices[{i}].access must be a string of r, w and m,"
                                  f" not {access!r}")
        if not access:
            raise DeviceRuleError(f"device access at {i} field cannot be empty")
        perms = _perm_set(access)
        if not perms:  # runc fails at start, saying its devices cgroup does not match
            raise DeviceRuleError(f"device access {access!r} at {i}: none of r, w and m")
        rules.append(Rule(dtype, numbers[0], numbers[1], perms, allow))
    return rules


class Emulator:
    """The state of a devices cgroup: default allow (deny-list mode) or
    default deny (allow-list mode), and the exceptions keyed by (type,
    major, minor)."""

    __slots__ = ("default_allow", "rules")

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.rules: dict[tuple[str, int, int], int] = {}

    def __eq__(self, other) -> bool:
        return (isinstance(other, Emulator) and self.default_allow == other.default_allow
                and self.rules == other.rules)

    def is_allow_all(self) -> bool:
        return self.default_allow and not self.rules

    def _add(self, meta, perms: int) -> None:
        self.rules[meta] = self.rules.get(meta, 0) | perms

    def _remove(self, meta, perms: int) -> None:
        # Removing part of a wildcard exception silently does nothing in the
        # kernel: refuse, as runc does, rather than give false security.
        dtype, major, minor = meta
        for partial in ((dtype, WILDCARD, minor), (dtype, major, WILDCARD), (dtype, WILDCARD, WILDCARD)):
            if partial == meta:
                continue
            if self.rules.get(partial, 0) & perms:
                raise DeviceRuleError(
                    f"device rule {_meta_str(meta)} {_perm_str(perms)} is not supported by the devices "
                    f"cgroup (cannot punch a hole in the wildcard rule {_meta_str(partial)} "
                    f"{_perm_str(self.rules[partial])})")
        left = self.rules.get(meta, 0) & ~perms
        if left:
            self.rules[meta] = left
        else:
            self.rules.pop(meta, None)

    def apply(self, rule: Rule) -> None:
        if rule.type == "a":
            # a wildcard-type rule resets everything to one mode
            self.default_allow = rule.allow
            self.rules = {}
            return
        meta = (rule.type, rule.major, rule.minor)
        if rule.allow == self.default_allow:
            self._remove(meta, rule.perms)  # allow in deny-list mode: drop a deny exception
        else:
            self._add(meta, rule.perms)

    def ordered(self) -> list[tuple[tuple[str, int, int], int]]:
        return sorted(self.rules.items(), key=lambda item: (item[0][1], item[0][2], item[0][0]))

    def transition(self, target: Emulator) -> list[Rule]:
        """The rules that turn this state into ``target``, fewest first."""
        out: list[Rule] = []
        old = self.rules
        # devices.list cannot show the exceptions of a deny-list cgroup: from
        # one, or when the mode changes, start over with a mode-setting rule.
        if self.default_allow or self.default_allow != target.default_allow:
            out.append(Rule("a", WILDCARD, WILDCARD, 7, target.default_allow))
            old = {}
        for meta, perms in sorted(old.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
            dropped = perms & ~target.rules.get(meta, 0)
            if dropped:
                out.append(Rule(meta[0], meta[1], meta[2], dropped, target.default_allow))
        for meta, perms in target.ordered():
            gained = perms & ~old.get(meta, 0)
            if gained:
                out.append(Rule(meta[0], meta[1], meta[2], gained, not target.default_allow))
        return out


def _meta_str(meta) -> str:
    dtype, major, minor = meta
    return f"{dtype} {'*' if major == WILDCARD else major}:{'*' if minor == WILDCARD else minor}"


def from_rules(rules: list[Rule]) -> Emulator:
    """The state the rules ask for, applied in order to a deny-all start
    (runc: an empty rule list denies every device)."""
    emu = Emulator(default_allow=False)
    for rule in rules:
        emu.apply(rule)
    return emu


def from_list(text: str) -> Emulator:
    """The state shown by devices.list (which lists what is allowed; "a
    *:* rwm" means deny-list mode)."""
    emu = Emulator(default_allow=False)
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        fields = line.replace(":", " ").split()
        if len(fields) != 4:
            raise DeviceRuleError(f"malformed devices.list line {line!r}")
        dtype, major, minor, perms = fields
        if dtype == "a":
            emu.default_allow = True
            emu.rules = {}
            continue
        if dtype not in ("b", "c"):
            raise DeviceRuleError(f"devices.list line {line!r}: unknown device type")
        meta = (dtype, WILDCARD if major == "*" else int(major), WILDCARD if minor == "*" else int(minor))
        bits = _perm_set(perms)
        if emu.default_allow:
            emu._remove(meta, bits)
        else:
            emu._add(meta, bits)
    return emu


def is_allow_all(rules: list[Rule]) -> bool:
    return from_rules(rules).is_allow_all()
