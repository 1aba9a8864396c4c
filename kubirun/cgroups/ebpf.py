"""Device access control on cgroup v2: an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup.

cgroup v2 has no devices controller. Instead the kernel runs every
BPF_CGROUP_DEVICE program attached to the cgroup of a process (and to its
ancestors) on each open(2) and mknod(2) of a device node; each program gets
a ``struct bpf_cgroup_dev_ctx`` and returns 1 (allow) or 0 (deny), and all of
them must allow.

The semantics are v1's, as in runc (libcontainer's devicefilter): the OCI
rules go through the same emulator as on v1 (``devices.Emulator``: rules
applied in order, an "a" rule resetting everything, refusing to punch a
hole in a wildcard exception), which leaves a default (allow or deny) and
exceptions that all have the other action. The program tests the
exceptions one by one and falls back to the default. Because every
exception has the same action their order does not matter.

An exception matches a request when the type matches, the major and minor
match (or the rule's is the wildcard) and, for the access:

- in allow-list mode (default deny), the rule grants every access asked
  for (an O_RDWR open needs a rule with both r and w), as v1's
  match_exception and as runc;
- in deny-list mode (default allow), the rule denies any access asked for,
  as v1's match_exception_partial. runc's program checks the subset here
  too, so that O_RDWR passes a "deny w" rule; we keep v1's meaning.

The program (all registers 32-bit values from the context)::

    r2 = ctx->access_type & 0xffff      device type: 1 block, 2 char
    r3 = ctx->access_type >> 16         access: 1 mknod, 2 read, 4 write
    r4 = ctx->major
    r5 = ctx->minor
    for each exception:                 a block that falls through to the next
        if r2 != TYPE: next
        allow: if r3 & ~ACCESS: next    (left out when ACCESS is rwm)
        deny:  if !(r3 & ACCESS): next  (left out when ACCESS is rwm)
        if r4 != MAJOR: next            (left out for the wildcard)
        if r5 != MINOR: next            (left out for the wildcard)
        return ACTION
    return DEFAULT

Loading and attaching use bpf(2) through kubirun._native (the one door to
the kernel), imported on first use: importing this module costs only
``struct``. A new program is attached
(BPF_F_ALLOW_MULTI) before the old ones are detached, so a running
container never goes without a filter during an update. The attachment
holds the program: it outlives our process and goes away with the cgroup.
"""
from __future__ import annotations

import errno as _errno
import os
import struct
import sys

from kubirun.base.errors import KubirunError

from .devices import WILDCARD, DeviceRuleError, Emulator

# --- uapi constants (include/uapi/linux/bpf.h) --------------------------------

# bpf(2) commands
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # attach type
BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx: access_type is type | access << 16
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
ACC_ALL = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE

DEV_TYPE = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}

# instruction classes, sizes, modes, operations and sources
BPF_LDX, BPF_ALU, BPF_JMP, BPF_ALU64 = 0x01, 0x04, 0x05, 0x07
BPF_W, BPF_MEM = 0x00, 0x60
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JA, BPF_JNE, BPF_JSET, BPF_EXIT = 0x00, 0x50, 0x40, 0x90
BPF_K, BPF_X = 0x00, 0x08

R0, R1, R2, R3, R4, R5 = range(6)

LICENSE = "Apache"
PROG_NAME = "kubirun_devices"  # at most 15 characters: [A-Za-z0-9_.]


class BPFError(KubirunError):
    """A bpf(2) call failed; ``errno`` is its errno, ``log`` the verifier's
    log for a program the kernel refused ("" otherwise)."""

    def __init__(self, message: str, errno: int | None = None, log: str = "") -> None:
        super().__init__(message, errno=errno, syscall="bpf")
        self.log = log


# --- instructions ----------------------------------------------------------------

# An instruction is (code, dst, src, off, imm); encoded as struct bpf_insn:
# u8 code, u8 dst_reg:4 + src_reg:4, s16 off, s32 imm.

def _ldx_w(dst: int, src: int, off: int) -> tuple:
    return (BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)


def _alu32_k(op: int, dst: int, imm: int) -> tuple:
    return (BPF_ALU | op | BPF_K, dst, 0, 0, imm)


def _mov32_k(dst: int, value: int) -> tuple:
    # imm is signed: a u32 above 2**31 - 1 is given as its negative twin,
    # and the 32-bit move zero-extends it back
    return (BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, value - (1 << 32) if value >= 1 << 31 else value)


def _mov64_k(dst: int, imm: int) -> tuple:
    return (BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)


def _jmp_k(op: int, dst: int, imm: int, off: int) -> tuple:
    return (BPF_JMP | op | BPF_K, dst, 0, off, imm)


def _jmp_x(op: int, dst: int, src: int, off: int) -> tuple:
    return (BPF_JMP | op | BPF_X, dst, src, off, 0)


def _exit() -> tuple:
    return (BPF_JMP | BPF_EXIT, 0, 0, 0, 0)


_NEXT = object()  # a jump offset to resolve: the instruction after the block


def _access_bits(perms: int) -> int:
    """devices.Rule permission bits (r 1, w 2, m 4) as BPF_DEVCG_ACC_*."""
    return ((BPF_DEVCG_ACC_READ if perms & 1 else 0) | (BPF_DEVCG_ACC_WRITE if perms & 2 else 0)
            | (BPF_DEVCG_ACC_MKNOD if perms & 4 else 0))


def _number_test(reg: int, value: int, what: str, meta) -> list:
    if value == WILDCARD:
        return []
    if not 0 <= value <= 0xFFFFFFFF:
        raise DeviceRuleError(f"device rule {meta[0]} {meta[1]}:{meta[2]}: {what} {value} does not fit "
                              f"in 32 bits")
    if value < 1 << 31:
        return [_jmp_k(BPF_JNE, reg, value, _NEXT)]
    # a 64-bit compare sign-extends imm: compare with a zero-extended register
    return [_mov32_k(R1, value), _jmp_x(BPF_JNE, reg, R1, _NEXT)]


def _block(meta, perms: int, allow: bool) -> list[tuple]:
    dtype, major, minor = meta
    insns = [_jmp_k(BPF_JNE, R2, DEV_TYPE[dtype], _NEXT)]
    access = _access_bits(perms)
    if access != ACC_ALL:
        if allow:
            # the request asks for something the rule does not grant
            insns.append(_jmp_k(BPF_JSET, R3, ~access & 0xFFFF, _NEXT))
        else:
            # the request asks for nothing the rule denies
            insns += [_jmp_k(BPF_JSET, R3, access, 1), (BPF_JMP | BPF_JA, 0, 0, _NEXT, 0)]
    insns += _number_test(R4, major, "major", meta)
    insns += _number_test(R5, minor, "minor", meta)
    insns += [_mov64_k(R0, int(allow)), _exit()]
    end = len(insns)
    return [(code, dst, src, end - i - 1 if off is _NEXT else off, imm)
            for i, (code, dst, src, off, imm) in enumerate(insns)]


def program(emu: Emulator) -> list[tuple]:
    """The instructions for the state ``emu`` (from ``devices.from_rules``)."""
    insns: list[tuple] = []
    exceptions = emu.ordered()
    if exceptions:
        insns += [
            _ldx_w(R2, R1, 0), _alu32_k(BPF_AND, R2, 0xFFFF),
            _ldx_w(R3, R1, 0), _alu32_k(BPF_RSH, R3, 16),
            _ldx_w(R4, R1, 4),
            _ldx_w(R5, R1, 8),
        ]
    for meta, perms in exceptions:
        if meta[0] not in DEV_TYPE:
            raise DeviceRuleError(f"[internal error] device exception of type {meta[0]!r}")
        insns += _block(meta, perms, not emu.default_allow)
    insns += [_mov64_k(R0, int(emu.default_allow)), _exit()]
    return insns


_INSN = struct.Struct("<BBhi")


def encode(insns: list[tuple]) -> bytes:
    """struct bpf_insn[] (little-endian: dst_reg is the low nibble)."""
    return b"".join(_INSN.pack(code, dst | src << 4, off, imm) for code, dst, src, off, imm in insns)


def decode(data: bytes) -> list[tuple]:
    out = []
    for code, regs, off, imm in _INSN.iter_unpack(data):
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def device_filter(rules) -> bytes | None:
    """The program for a list of ``devices.Rule`` (an OCI rule list through
    ``devices.rules_from_oci``), or None when the rules allow everything:
    then no program is needed. Raises DeviceRuleError."""
    from .devices import from_rules

    emu = from_rules(rules)
    if emu.is_allow_all():
        return None
    return encode(program(emu))


# --- bpf(2) ------------------------------------------------------------------------

def _bpf(cmd: int, attr: bytearray) -> int:
    """bpf(2): its result or -errno."""
    if sys.byteorder != "little":  # the attrs below are packed little-endian
        raise BPFError("bpf(2): big-endian machines are not supported", _errno.ENOSYS)
    from kubirun import _native

    return _native.bpf(cmd, attr)


def _attr(size: int = 128) -> bytearray:
    """A zeroed union bpf_attr (the kernel checks that what it does not know
    is zero)."""
    return bytearray(size)


def _address(buf: bytearray) -> int:
    from kubirun import _native

    return _native.buffer_address(buf)


def _describe(err: int) -> str:
    return f"{os.strerror(err)} ({_errno.errorcode.get(err, err)})"


def _prog_load(code: bytes, log_size: int) -> tuple[int, str]:
    """(fd or -errno, the verifier's log when log_size)."""
    insns = bytearray(code)
    license = bytearray(LICENSE.encode() + b"\0")
    log = bytearray(log_size) if log_size else None
    attr = _attr()
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     _address(insns), _address(license), 1 if log else 0, log_size,
                     _address(log) if log else 0)
    attr[48:48 + len(PROG_NAME)] = PROG_NAME.encode()  # prog_name
    fd = _bpf(BPF_PROG_LOAD, attr)
    return fd, (log.split(b"\0", 1)[0].decode(errors="replace").strip() if log else "")


def load(code: bytes) -> int:
    """BPF_PROG_LOAD a BPF_PROG_TYPE_CGROUP_DEVICE program; its fd (close it
    once attached). On failure the error has the verifier's log."""
    fd, _ = _prog_load(code, 0)
    if fd == -_errno.EPERM:
        # before 5.11 the kernel charges programs to RLIMIT_MEMLOCK (runc
        # raises it for good; we only for this call)
        fd = _with_memlock_unlimited(lambda: _prog_load(code, 0)[0])
    if fd >= 0:
        return fd
    err = -fd
    # again, with the verifier's log for the message
    again, log = _prog_load(code, 1 << 20)
    if again >= 0:  # passed this time after all
        return again
    message = f"cannot load the device eBPF program: BPF_PROG_LOAD: {_describe(err)}"
    if log:
        message += f"; verifier log:\n{log}"
    raise BPFError(message, err, log)


def _with_memlock_unlimited(call):
    import resource

    try:
        old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        return call()
    try:
        return call()
    finally:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, old)
        except (OSError, ValueError):
            pass


def query(dir_fd: int) -> list[int]:
    """The ids of the BPF_CGROUP_DEVICE programs attached to the cgroup
    itself (not those its ancestors run)."""
    count = 64  # the kernel's limit per cgroup and attach type, today
    for _ in range(10):
        ids = bytearray(4 * count)
        attr = _attr()
        struct.pack_into("<IIIIQI", attr, 0, dir_fd, BPF_CGROUP_DEVICE, 0, 0, _address(ids), count)
        ret = _bpf(BPF_PROG_QUERY, attr)
        got = struct.unpack_from("<I", attr, 24)[0]  # prog_cnt: how many there are
        if ret == -_errno.ENOSPC:
            count = max(got, count * 2)
            continue
        if ret < 0:
            raise BPFError(f"BPF_PROG_QUERY (BPF_CGROUP_DEVICE): {_describe(-ret)}", -ret)
        return list(struct.unpack_from(f"<{got}I", ids))
    raise BPFError("BPF_PROG_QUERY (BPF_CGROUP_DEVICE): the list of programs keeps growing", _errno.ENOSPC)


def attach(dir_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
    ret = _bpf(BPF_PROG_ATTACH, attr)
    if ret < 0:
        raise BPFError(f"BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI): {_describe(-ret)}", -ret)


def detach(dir_fd: int, prog_id: int) -> bool:
    """Detach the program with that id; False when it was gone already."""
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    if fd == -_errno.ENOENT:
        return False
    if fd < 0:
        raise BPFError(f"BPF_PROG_GET_FD_BY_ID {prog_id}: {_describe(-fd)}", -fd)
    try:
        attr = _attr()
        struct.pack_into("<III", attr, 0, dir_fd, fd, BPF_CGROUP_DEVICE)
        ret = _bpf(BPF_PROG_DETACH, attr)
    finally:
        os.close(fd)
    if ret == -_errno.ENOENT:
        return False
    if ret < 0:
        raise BPFError(f"BPF_PROG_DETACH (BPF_CGROUP_DEVICE) of program {prog_id}: {_describe(-ret)}", -ret)
    return True


def _open_dir(dirpath: str) -> int:
    try:
        return os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise BPFError(f"cannot open {dirpath}: {_describe(e.errno)}", e.errno) from None


def install(dirpath: str, prog_fd: int) -> None:
    """Attach the loaded program to the cgroup directory, then detach the
    device programs that were attached there before: there is no moment
    without a filter (for that moment both apply: a request needs both)."""
    dir_fd = _open_dir(dirpath)
    try:
        old = query(dir_fd)
        attach(dir_fd, prog_fd)
        for prog_id in old:
            detach(dir_fd, prog_id)
    finally:
        os.close(dir_fd)


def remove_all(dirpath: str) -> int:
    """Detach every device program attached to the cgroup directory (the
    rules allow everything now); how many there were."""
    dir_fd = _open_dir(dirpath)
    try:
        return sum(detach(dir_fd, prog_id) for prog_id in query(dir_fd))
    finally:
        os.close(dir_fd)


def attached(dirpath: str) -> list[int]:
    """The ids of the device programs attached to the cgroup directory."""
    dir_fd = _open_dir(dirpath)
    try:
        return query(dir_fd)
    finally:
        os.close(dir_fd)
