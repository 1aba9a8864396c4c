"""The cgroup v2 device filter (kubirun/cgroups/ebpf.py) without a kernel:
the generated eBPF programs run in a tiny interpreter written here from the
instruction set's definition, against v1's device rules semantics; and the
v2 driver's use of it (when it loads, attaches, detaches) on the fake
cgroupfs of test_cgroups. The real kernel's side (verifier, attach, access
checks) is in tests/cgroupv2/test_devices_v2.py."""
from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from kubirun.cgroups import CgroupError, ebpf, open_cgroup
from kubirun.cgroups.devices import (
    WILDCARD,
    DeviceRuleError,
    from_rules,
    rules_from_oci,
)
from tests.unit.test_cgroups import V2_CONTROLLERS, FakeCgroupfs, made

# --- a tiny eBPF interpreter ----------------------------------------------------

# struct bpf_cgroup_dev_ctx
BLOCK, CHAR = 1, 2
MKNOD, READ, WRITE = 1, 2, 4
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


def sext(value: int, bits: int) -> int:
    """A two's complement ``bits``-bit value, sign-extended to 64 bits."""
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value -= 1 << bits
    return value & U64


def run(code: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Execute ``code`` (struct bpf_insn[]) on a bpf_cgroup_dev_ctx; the
    value of r0 at exit. Only what a device filter needs is implemented:
    anything else fails the test."""
    ctx = struct.pack("<III", dev_type | access << 16, major, minor)
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    assert len(code) % 8 == 0 and insns
    CTX = 1 << 40  # r1: a pointer to ctx
    regs = [None] * 11
    regs[1] = CTX
    pc = steps = 0
    while True:
        steps += 1
        assert steps <= len(insns), "a device filter has no loops"
        assert 0 <= pc < len(insns), f"pc {pc} out of the program"
        op, reg_byte, off, imm = insns[pc]
        dst, src = reg_byte & 0xF, reg_byte >> 4
        pc += 1
        cls = op & 0x07
        if op == 0x61:  # ldxw dst, [src + off]
            assert regs[src] == CTX and off in (0, 4, 8), "reads only the context's three u32"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif cls in (0x04, 0x07):  # alu32 / alu64
            bits = 32 if cls == 0x04 else 64
            mask = U32 if bits == 32 else U64
            operand = regs[src] if op & 0x08 else sext(imm, 32)
            assert operand is not None, f"r{src} read before it is written"
            kind = op & 0xF0
            if kind == 0xB0:  # mov
                value = operand
            else:
                assert regs[dst] is not None and regs[dst] != CTX, f"alu on r{dst}"
                if kind == 0x50:  # and
                    value = regs[dst] & operand
                elif kind == 0x70:  # rsh
                    value = (regs[dst] & mask) >> (operand & (bits - 1))
                else:
                    raise AssertionError(f"unexpected alu op {op:#x}")
            regs[dst] = value & mask
        elif op == 0x95:  # exit
            assert regs[0] is not None, "r0 is not set at exit"
            return regs[0]
        elif op == 0x05:  # ja
            pc += off
        elif cls == 0x05:  # jmp with a condition
            assert off >= 0, "only forward jumps"
            left = regs[dst]
            right = regs[src] if op & 0x08 else sext(imm, 32)
            assert left is not None and right is not None and left != CTX
            kind = op & 0xF0
            if kind == 0x50:  # jne
                taken = left != right
            elif kind == 0x10:  # jeq
                taken = left == right
            elif kind == 0x40:  # jset
                taken = bool(left & right)
            else:
                raise AssertionError(f"unexpected jump op {op:#x}")
            if taken:
                pc += off
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def compile_rules(entries: list) -> bytes | None:
    return ebpf.device_filter(rules_from_oci(entries))


def allowed(code: bytes | None, kind: str, major: int, minor: int, access: str) -> bool:
    """Would the filter let a process do ``access`` (a string of r, w, m)
    on the device?"""
    if code is None:  # no program: everything allowed
        return True
    bits = (READ if "r" in access else 0) | (WRITE if "w" in access else 0) | (MKNOD if "m" in access else 0)
    verdict = run(code, {"b": BLOCK, "c": CHAR}[kind], bits, major, minor)
    assert verdict in (0, 1)
    return verdict == 1


# --- v1's semantics, the reference ------------------------------------------------

def v1_allows(entries: list, kind: str, major: int, minor: int, access: str) -> bool:
    """What the v1 devices cgroup decides after the rules are written to
    devices.allow/deny in order (security/device_cgroup.c): an "a" rule sets
    the default and drops the exceptions; in allow-list mode one exception
    must grant the whole access, in deny-list mode any exception touching
    the access denies."""
    default_allow = False
    exceptions: dict[tuple, set] = {}  # (type, major, minor) -> access
    for e in entries:
        t = e.get("type") or "a"
        if t == "a":
            default_allow = e["allow"]
            exceptions = {}
            continue
        key = (t, e.get("major", WILDCARD), e.get("minor", WILDCARD))
        if e["allow"] != default_allow:  # dev_exception_add: merged with the same key's
            exceptions[key] = exceptions.get(key, set()) | set(e["access"])
        elif key in exceptions:  # dev_exception_rm: the same key only
            exceptions[key] -= set(e["access"])
    want = set(access)

    def matches(key) -> bool:
        t, ma, mi = key
        return t == kind and ma in (WILDCARD, major) and mi in (WILDCARD, minor)

    if default_allow:
        return not any(matches(key) and acc & want for key, acc in exceptions.items())
    return any(matches(key) and want <= acc for key, acc in exceptions.items())


DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}


def c(major, minor, access, allow=True):
    e = {"allow": allow, "type": "c", "access": access}
    if major is not None:
        e["major"] = major
    if minor is not None:
        e["minor"] = minor
    return e


def b(major, minor, access, allow=True):
    return {**c(major, minor, access, allow), "type": "b"}


# runc's (and kubirun's, in creation.py) default allowed devices
DEFAULTS = [c(None, None, "m"), b(None, None, "m"),
            *(c(ma, mi, "rwm") for ma, mi in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (5, 2),
                                              (10, 200))),
            c(136, None, "rwm")]

RULE_SETS = {
    "deny all, allow /dev/null": [DENY_ALL, c(1, 3, "rwm")],
    "wildcard majors and minors": [DENY_ALL, c(None, 3, "r"), b(8, None, "rw"), c(4, None, "w")],
    "a rule resets": [DENY_ALL, c(1, 3, "rwm"), ALLOW_ALL, c(1, 5, "w", allow=False), b(None, None, "m", False)],
    "access subsets": [DENY_ALL, c(1, 5, "r"), c(1, 5, "w"), c(1, 9, "rw"), c(10, 200, "m"), b(7, 0, "r")],
    "deny list": [ALLOW_ALL, c(1, 3, "w", allow=False), b(8, 0, "rwm", allow=False), c(5, None, "m", allow=False)],
    "allow then take back": [DENY_ALL, c(1, 3, "rwm"), c(1, 3, "w", allow=False)],
    "runtime defaults": [DENY_ALL, *DEFAULTS],
    "only deny all": [DENY_ALL],
    "big numbers": [DENY_ALL, c(4095, 1048575, "rw"), c((1 << 31) + 7, 1, "r"), b(1, U32, "rwm")],
}

ACCESSES = ["r", "w", "m", "rw", "rm", "wm", "rwm"]
NUMBERS = [0, 1, 3, 4, 5, 7, 8, 9, 136, 200, 4095, 1048575, (1 << 31) + 7, U32]


@pytest.mark.parametrize("name", RULE_SETS)
def test_program_decides_as_v1_everywhere(name):
    entries = RULE_SETS[name]
    code = compile_rules(entries)
    checked = 0
    for kind in "bc":
        for major in NUMBERS:
            for minor in NUMBERS:
                for access in ACCESSES:
                    expected = v1_allows(entries, kind, major, minor, access)
                    got = allowed(code, kind, major, minor, access)
                    assert got == expected, f"{name}: {kind} {major}:{minor} {access}: got {got}"
                    checked += 1
    assert checked == 2 * len(NUMBERS) ** 2 * len(ACCESSES)


def test_deny_all_allow_dev_null():
    code = compile_rules([DENY_ALL, c(1, 3, "rwm")])
    assert allowed(code, "c", 1, 3, "rw")
    assert allowed(code, "c", 1, 3, "m")
    assert not allowed(code, "c", 1, 5, "r")  # /dev/zero
    assert not allowed(code, "b", 1, 3, "r")  # the type matters
    assert not allowed(code, "c", 3, 1, "r")


def test_wildcards():
    code = compile_rules([DENY_ALL, c(136, None, "rwm"), b(None, None, "m"), c(None, 7, "r")])
    assert allowed(code, "c", 136, 0, "rw") and allowed(code, "c", 136, 99, "rwm")
    assert not allowed(code, "c", 135, 0, "r")
    assert allowed(code, "b", 8, 0, "m") and allowed(code, "b", 259, 3, "m")
    assert not allowed(code, "b", 8, 0, "r")
    assert allowed(code, "c", 42, 7, "r") and not allowed(code, "c", 42, 7, "w")


def test_a_type_rules():
    assert compile_rules([ALLOW_ALL]) is None  # no program needed
    assert compile_rules([DENY_ALL, c(1, 3, "rwm"), ALLOW_ALL]) is None
    deny = compile_rules([ALLOW_ALL, c(1, 3, "rwm"), DENY_ALL])
    assert not any(allowed(deny, t, 1, 3, a) for t in "bc" for a in ACCESSES)
    # an "a" rule with numbers or a partial access still means every device
    code = compile_rules([{"allow": False, "type": "a", "major": 1, "minor": 3, "access": "r"}, c(1, 5, "r")])
    assert not allowed(code, "c", 1, 3, "w")
    assert allowed(code, "c", 1, 5, "r")


def test_access_subsets():
    code = compile_rules([DENY_ALL, c(1, 5, "r"), c(1, 9, "rw"), c(1, 8, "m")])
    assert allowed(code, "c", 1, 5, "r")
    assert not allowed(code, "c", 1, 5, "w")
    assert not allowed(code, "c", 1, 5, "rw")  # O_RDWR needs both from one rule
    # ... where rules for the same device add up (as v1's exceptions)
    assert allowed(compile_rules([DENY_ALL, c(1, 5, "r"), c(1, 5, "w")]), "c", 1, 5, "rw")
    assert not allowed(compile_rules([DENY_ALL, c(1, None, "r"), c(None, 5, "w")]), "c", 1, 5, "rw")
    assert not allowed(code, "c", 1, 5, "m")
    assert allowed(code, "c", 1, 9, "rw") and allowed(code, "c", 1, 9, "w")
    assert not allowed(code, "c", 1, 9, "m")
    assert allowed(code, "c", 1, 8, "m") and not allowed(code, "c", 1, 8, "r")


def test_deny_list_denies_any_access_it_touches():
    # v1's deny-list mode (runc's program would let an O_RDWR open through)
    code = compile_rules([ALLOW_ALL, c(1, 3, "w", allow=False)])
    assert allowed(code, "c", 1, 3, "r")
    assert not allowed(code, "c", 1, 3, "w")
    assert not allowed(code, "c", 1, 3, "rw")
    assert allowed(code, "c", 1, 5, "rw")


def test_rules_are_refused_as_on_v1():
    with pytest.raises(DeviceRuleError, match="cannot punch a hole in the wildcard rule c 1:\\*"):
        compile_rules([ALLOW_ALL, c(1, None, "w", allow=False), c(1, 3, "w")])
    with pytest.raises(DeviceRuleError, match="does not fit in 32 bits"):
        compile_rules([DENY_ALL, c(1 << 32, 0, "r")])


def test_program_shape():
    """What the kernel's verifier wants: forward jumps inside the program,
    an exit at the end, r0 set before every exit; the context read as three
    u32 at offsets 0, 4 and 8."""
    code = compile_rules([DENY_ALL, *DEFAULTS, c((1 << 31) + 1, None, "r")])
    insns = ebpf.decode(code)
    assert ebpf.encode(insns) == code
    assert insns[-1][0] == 0x95
    for pc, (op, dst, src, off, imm) in enumerate(insns):
        if op & 0x07 == 0x05 and op != 0x95:
            assert off >= 0 and pc + 1 + off < len(insns), (pc, insns[pc])
        if op == 0x61:
            assert (dst, src, off) in ((2, 1, 0), (3, 1, 0), (4, 1, 4), (5, 1, 8))
        if op == 0x95:
            assert insns[pc - 1][:2] == (0xB7, 0)  # r0 = 0 or 1
    assert len(insns) < 4096  # far below any kernel's limit
    # deny all alone: no need to read the context
    assert ebpf.decode(compile_rules([DENY_ALL])) == [(0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]


def test_emulated_state_is_runcs():
    # the program is made from the same state the v1 driver writes
    rules = rules_from_oci([DENY_ALL, *DEFAULTS])
    emu = from_rules(rules)
    assert not emu.default_allow and len(emu.rules) == 12
    assert compile_rules([DENY_ALL, *DEFAULTS]) == ebpf.encode(ebpf.program(emu))


def test_importing_does_not_load_ctypes():
    code = ("import sys; import kubirun.cgroups; import kubirun.cgroups.ebpf as e; "
            "e.device_filter([]); print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- the v2 driver's use of it, on the fake cgroupfs ------------------------------

class FakeBPF:
    """ebpf.load/install/remove_all recorded instead of called: calls go to
    ``log`` (with the fake cgroupfs's writes so far, to check the order)."""

    def __init__(self, monkeypatch, fake: FakeCgroupfs) -> None:
        self.fake = fake
        self.log: list[tuple] = []
        self.fds: list[int] = []
        self.fail: dict[str, int] = {}
        monkeypatch.setattr(ebpf, "load", self.load)
        monkeypatch.setattr(ebpf, "install", self.install)
        monkeypatch.setattr(ebpf, "remove_all", self.remove_all)

    def _call(self, name, *args):
        self.log.append((name, len(self.fake.writes), *args))
        if name in self.fail:
            raise ebpf.BPFError(f"{name}: {os.strerror(self.fail[name])}", self.fail[name],
                                "0: (b7) r0 = 1\n" if name == "load" else "")

    def load(self, code: bytes) -> int:
        self._call("load", code)
        fd = os.open(os.devnull, os.O_RDONLY)  # stands for the program
        self.fds.append(fd)
        return fd

    def install(self, dirpath: str, prog_fd: int) -> None:
        self._call("install", self.fake.rel(dirpath), prog_fd)

    def remove_all(self, dirpath: str) -> int:
        self._call("remove_all", self.fake.rel(dirpath))
        return 1

    def all_closed(self) -> bool:
        closed = []
        for fd in self.fds:
            try:
                os.fstat(fd)
                closed.append(False)
                os.close(fd)
            except OSError:
                closed.append(True)
        return all(closed)


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    fake = FakeCgroupfs(tmp_path, monkeypatch, "v2")
    fake._put(f"{fake.base}/unified", "cgroup.subtree_control", V2_CONTROLLERS + "\n")
    return fake


@pytest.fixture
def bpf(monkeypatch, fake_v2):
    return FakeBPF(monkeypatch, fake_v2)


BOX = "unified/kubirun-test/box"


def test_v2_rules_load_before_any_write_and_attach_in_runcs_order(fake_v2, bpf):
    cg = made(fake_v2)
    entries = [DENY_ALL, c(1, 3, "rwm")]
    cg.apply({"pids": {"limit": 10}, "cpu": {"shares": 1024, "cpus": "0"}, "devices": entries})
    (load, install), code = bpf.log, compile_rules(entries)
    assert load == ("load", 0, code)  # before anything is written
    assert install[:3] == ("install", 2, BOX)  # after pids and cpu.weight, before cpuset.cpus
    assert [n for _, n, _ in fake_v2.written()] == ["pids.max", "cpu.weight", "cpuset.cpus"]
    assert bpf.all_closed()  # the attachment holds the program, not us


def test_v2_update_replaces_the_program(fake_v2, bpf):
    cg = made(fake_v2)
    cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm")]})
    cg.apply({"devices": [DENY_ALL, c(1, 5, "r")]})
    assert [(e[0], e[2]) for e in bpf.log if e[0] == "install"] == [("install", BOX), ("install", BOX)]
    # another process (kubirun update) with the state
    again = open_cgroup(cg.path, cg.to_state(), layout=fake_v2.layout)
    again.apply({"devices": [DENY_ALL, c(1, 9, "rw")]})
    assert [e[0] for e in bpf.log] == ["load", "install"] * 3
    assert bpf.all_closed()


def test_v2_allow_all_needs_no_program(fake_v2, bpf):
    cg = made(fake_v2)
    cg.apply({"devices": [ALLOW_ALL]})  # a new cgroup has no program: nothing to do
    assert bpf.log == []
    cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm")]})
    cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm"), ALLOW_ALL]})
    assert [e[0] for e in bpf.log] == ["load", "install", "remove_all"]
    cg.apply({"devices": [ALLOW_ALL]})
    assert len(bpf.log) == 3  # removed already
    # without knowing (another process), it asks the kernel
    open_cgroup(cg.path, cg.to_state(), layout=fake_v2.layout).apply({"devices": [ALLOW_ALL]})
    assert bpf.log[-1] == ("remove_all", 0, BOX)


def test_v2_no_device_rules_leave_the_filter_alone(fake_v2, bpf):
    cg = made(fake_v2)
    cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm")]})
    bpf.log.clear()
    again = open_cgroup(cg.path, cg.to_state(), layout=fake_v2.layout)
    again.apply({"pids": {"limit": 5}})
    again.apply({"devices": [], "memory": {"limit": 1 << 30}})
    assert bpf.log == []


def test_v2_load_failure_writes_nothing(fake_v2, bpf):
    cg = made(fake_v2)
    bpf.fail["load"] = errno.EINVAL
    with pytest.raises(CgroupError) as info:
        cg.apply({"pids": {"limit": 10}, "devices": [DENY_ALL, c(1, 3, "rwm")]})
    e = info.value
    assert str(e).startswith(f"cgroup /kubirun-test/box: {cg.dir}: load: Invalid argument")
    assert (e.path, e.file, e.errno) == ("/kubirun-test/box", cg.dir, errno.EINVAL)
    assert fake_v2.written() == []


def test_v2_attach_failure_is_reported(fake_v2, bpf):
    cg = made(fake_v2)
    bpf.fail["install"] = errno.EPERM
    with pytest.raises(CgroupError, match=r"install: Operation not permitted") as info:
        cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm")]})
    assert info.value.errno == errno.EPERM
    assert bpf.all_closed()


def test_v2_bad_rules_are_refused_before_any_write(fake_v2, bpf):
    cg = made(fake_v2)
    with pytest.raises(CgroupError, match="/kubirun-test/box: .*cannot punch a hole"):
        cg.apply({"pids": {"limit": 10},
                  "devices": [ALLOW_ALL, c(1, None, "w", allow=False), c(1, 3, "w")]})
    with pytest.raises(CgroupError, match=r"devices\[0\]\.type 'x'"):
        cg.apply({"pids": {"limit": 10}, "devices": [{"allow": True, "type": "x", "access": "r"}]})
    assert fake_v2.written() == [] and bpf.log == []


def test_hybrid_keeps_v1_devices(tmp_path, monkeypatch):
    fake = FakeCgroupfs(tmp_path, monkeypatch, "hybrid")
    bpf = FakeBPF(monkeypatch, fake)
    cg = made(fake)
    cg.apply({"devices": [DENY_ALL, c(1, 3, "rwm")]})
    assert bpf.log == []
    assert fake.written() == [("devices/kubirun-test/box", "devices.deny", "a *:* rwm"),
                              ("devices/kubirun-test/box", "devices.allow", "c 1:3 rwm")]
