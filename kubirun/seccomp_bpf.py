"""The ENOSYS stub put in front of a compiled seccomp filter.

A profile lists the calls it knows.  A call newer than all of them (a
kernel newer than the profile, or a C library trying ``clone3``,
``faccessat2``, ``statx``...) would get the profile's default action,
typically EPERM, and a C library takes EPERM as "you may not", not as "this
kernel does not have it": it does not fall back to the older call.  So, as
runc does, calls numbered above the highest one the profile names, on each
of its architectures, fail with ENOSYS before the filter is consulted:

    ld  [4]                      the architecture
    jeq ARCH, 0, next            for each architecture of the profile:
    ld  [0]                        the call's number
    jgt HIGHEST, enosys, filter
  next: ...
    ja  filter                   an architecture the profile does not have
  enosys: ret ERRNO(ENOSYS)
  filter: the program libseccomp made

On x86_64, x32 calls come under the same audit architecture with bit 30 of
the number set: each ABI is compared with its own highest number.  On s390,
call 0 is where unknown numbers end up (the kernel's multiplexer): ENOSYS.

Pure: instructions in, bytes out (``struct sock_filter``, host order).
"""
from __future__ import annotations

import errno
import struct

# BPF opcodes (linux/filter.h) that the stub uses.
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JMP_JA = 0x05  # BPF_JMP | BPF_JA
JMP_JEQ_K = 0x15
JMP_JGT_K = 0x25
JMP_JSET_K = 0x45
RET_K = 0x06
SECCOMP_RET_ERRNO = 0x00050000
RET_ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
OFFSET_NR, OFFSET_ARCH = 0, 4  # struct seccomp_data
X32_SYSCALL_BIT = 0x40000000
MAX_JUMP = 255  # a conditional jump's offsets are one byte each

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_S390 = 0x00000016
AUDIT_ARCH_S390X = 0x80000016
INSTRUCTION = struct.Struct("=HBBI")


class Label:
    """A place in the stub, resolved when it is assembled."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


ENOSYS, FILTER = Label("enosys"), Label("filter")


def enosys_stub(highest: dict[int, dict[str, int]]) -> bytes:
    """The stub for ``highest``: audit architecture -> {"x32" or "native":
    the highest call number the profile names there}.  Empty bytes when
    there is nothing to compare."""
    highest = {arch: numbers for arch, numbers in highest.items() if numbers}
    if not highest:
        return b""
    code: list = [(LD_W_ABS, None, None, OFFSET_ARCH)]
    for arch, numbers in sorted(highest.items()):
        following = Label(f"after {arch:#x}")
        code.append((JMP_JEQ_K, None, following, arch))
        code.append((LD_W_ABS, None, None, OFFSET_NR))
        if arch in (AUDIT_ARCH_S390, AUDIT_ARCH_S390X):
            code.append((JMP_JEQ_K, ENOSYS, None, 0))
        if arch == AUDIT_ARCH_X86_64:
            code += _x86_64(numbers)
        else:
            code.append((JMP_JGT_K, ENOSYS, FILTER, numbers["native"]))
        code.append(following)
    code.append((JMP_JA, None, None, FILTER))
    code.append(ENOSYS)
    code.append((RET_K, None, None, RET_ENOSYS))
    code.append(FILTER)
    return _assemble(code)


def _x86_64(numbers: dict[str, int]) -> list:
    """x86_64 and x32 share an audit architecture: bit 30 tells them apart."""
    native, x32 = numbers.get("native"), numbers.get("x32")
    x32_part = Label("x32")
    code = [(JMP_JSET_K, x32_part if x32 is not None else FILTER, None, X32_SYSCALL_BIT)]
    if native is not None:
        code.append((JMP_JGT_K, ENOSYS, FILTER, native))
    else:
        code.append((JMP_JA, None, None, FILTER))
    code.append(x32_part)
    if x32 is not None:
        code.append((JMP_JGT_K, ENOSYS, FILTER, x32 | X32_SYSCALL_BIT))
    return code


def _assemble(code: list) -> bytes:
    """Labels to offsets: a conditional jump's target None is the next
    instruction; ``ja``'s K is its target label."""
    places, index = {}, 0
    for item in code:
        if isinstance(item, Label):
            places[item.name] = index
        else:
            index += 1
    out, index = [], 0
    for item in code:
        if isinstance(item, Label):
            continue
        op, true, false, k = item
        if op == JMP_JA:
            out.append(INSTRUCTION.pack(op, 0, 0, _offset(places, k, index, 1 << 32)))
        elif true is not None or false is not None:
            out.append(INSTRUCTION.pack(op, _offset(places, true, index, MAX_JUMP + 1),
                                        _offset(places, false, index, MAX_JUMP + 1), k))
        else:
            out.append(INSTRUCTION.pack(op, 0, 0, k))
        index += 1
    return b"".join(out)


def _offset(places: dict[str, int], label: Label | None, index: int, limit: int) -> int:
    if label is None:
        return 0
    offset = places[label.name] - index - 1
    if not 0 <= offset < limit:
        raise ValueError(f"seccomp ENOSYS stub: jump to {label.name} out of range ({offset})")
    return offset


def with_stub(stub: bytes, program: bytes) -> bytes:
    """The filter with the stub in front (the stub's last jumps land on
    the filter's first instruction)."""
    return stub + program
