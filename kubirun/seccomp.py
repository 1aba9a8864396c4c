"""``linux.seccomp``: a system call filter on the container's processes.

    1. ``parse``: the profile is checked with the rest of config.json; each
       error names its JSON path (``linux.seccomp.syscalls[3].action``)
    2. ``Profile.compile``, in the runtime (``create``): libseccomp turns
       the profile into a BPF program: names to numbers on every listed
       architecture, argument comparisons, the default action.  Syscall
       names libseccomp does not know are skipped with one warning (a
       profile lists other architectures' calls, or newer ones), as runc
       does; a rule whose action is the default one is dropped
    3. ``Program.load``: the container's init, and every process ``exec``
       starts, installs that program itself with one ``seccomp(2)`` call,
       as late as it can: right before ``execve`` (see ``must_load_early``)

Compiling in the runtime keeps libseccomp out of the init: nothing after
``pivot_root`` reaches for the host's files, warnings and errors come from
``create`` itself, and the program, kept in state.json, serves ``exec``
with no second compilation.  libseccomp is opened (``dlopen``) only here:
a container without a profile never loads it.

Calls newer than any the profile names fail with ENOSYS, not with the
default action (runc's patch of the program: ``kubirun.seccomp_bpf``).

A compiled program is kept in a cache (``cache_dir``), named by a hash of
the profile, the libseccomp version and the machine: compiling podman's
profile costs 11-15 ms, reading its program back well under one.

``SCMP_ACT_NOTIFY`` rules make the program ask for a listener
(``SECCOMP_FILTER_FLAG_NEW_LISTENER``): loading it gives an fd that
``kubirun.seccomp_notify`` passes to the seccomp agent at ``listenerPath``.
"""
from __future__ import annotations

import binascii
import errno
import os

from kubirun import _native
from kubirun.base import explain
from kubirun._native import ffi, lib
from kubirun.base.errors import ContainerStartError, KubirunError, describe

WHERE = "linux.seccomp"

# OCI action name: (libseccomp action, takes an errno in its low 16 bits).
ACTIONS = {
    "SCMP_ACT_KILL": (lib.SCMP_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_THREAD": (lib.SCMP_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (lib.SCMP_ACT_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (lib.SCMP_ACT_TRAP, False),
    "SCMP_ACT_ERRNO": (lib.KUBI_SCMP_ACT_ERRNO, True),
    "SCMP_ACT_TRACE": (lib.KUBI_SCMP_ACT_TRACE, True),
    "SCMP_ACT_ALLOW": (lib.SCMP_ACT_ALLOW, False),
    "SCMP_ACT_LOG": (lib.SCMP_ACT_LOG, False),
    "SCMP_ACT_NOTIFY": (lib.KUBI_SCMP_ACT_NOTIFY, False),  # libseccomp >= 2.5
}
NOTIFY = lib.KUBI_SCMP_ACT_NOTIFY
# A call the process makes between loading the filter and the agent having
# the listener (kubirun.seccomp_notify): notified, it would wait for ever,
# as runc's init would on `write`.
NOT_NOTIFIABLE = ("sendmsg",)
OPERATORS = {
    "SCMP_CMP_NE": lib.SCMP_CMP_NE,
    "SCMP_CMP_LT": lib.SCMP_CMP_LT,
    "SCMP_CMP_LE": lib.SCMP_CMP_LE,
    "SCMP_CMP_EQ": lib.SCMP_CMP_EQ,
    "SCMP_CMP_GE": lib.SCMP_CMP_GE,
    "SCMP_CMP_GT": lib.SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": lib.SCMP_CMP_MASKED_EQ,
}
# OCI architecture name: libseccomp's name (seccomp_arch_resolve_name).
# The last four need libseccomp 2.6; an older one refuses them at compile.
ARCHITECTURES = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}
# Filter flags, passed to seccomp(2) as they are.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _native.SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _native.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _native.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    # A notified call waits for the agent's answer killable, not interruptible
    # (Linux 5.19); only meaningful with a listener, dropped without one.
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _native.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}
EPERM = errno.EPERM  # errnoRet and defaultErrnoRet when not given
MAX_ARGUMENTS = 6
BPF_MAXINSNS = 4096  # the kernel's limit on one program
NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: unknown name
OPTIMIZE_ABOVE = 32  # rules: from there on, a binary tree (as runc)


class Rule:
    """One ``syscalls[]`` entry: its names, the action (with its errno),
    the argument comparisons ``(index, op, value, valueTwo)``."""

    __slots__ = ("names", "action", "args", "where")

    def __init__(self, names: list[str], action: int, args: list[tuple[int, int, int, int]],
                 where: str) -> None:
        self.names, self.action, self.args, self.where = names, action, args, where


class Profile:
    """A ``linux.seccomp``, validated, or known valid because its program
    is cached (the same profile was checked and compiled before): then its
    fields are only parsed if something asks for them."""

    def __init__(self, raw: dict, where: str = WHERE) -> None:
        self.raw = raw  # the profile as given: what the cache is keyed by
        self.where = where
        # Warn of syscall names libseccomp does not know (kubirun's own
        # default profile names calls newer than some libseccomp releases).
        self.warn_unknown = True
        self._fields: tuple | None = None  # default action, architectures, flags, rules
        self._program: Program | None = None
        self._unknown: Unknown | None = None  # names libseccomp skipped, and its version
        self._cache_path: str | None = None  # where its compiled program goes

    def fields(self) -> tuple:
        if self._fields is None:
            self._fields = _parse_fields(self.raw, self.where)
        return self._fields

    @property
    def default_action(self) -> int:
        return self.fields()[0]

    @property
    def architectures(self) -> list[tuple[str, str]]:
        """(OCI name, JSON path) of each listed architecture."""
        return self.fields()[1]

    @property
    def flags(self) -> int:
        return self.fields()[2]

    @property
    def rules(self) -> list[Rule]:
        return self.fields()[3]

    @property
    def listener_path(self) -> str:
        """Where the seccomp agent listens ("" for none): read from the raw
        profile, which parse checked, so a cache hit does not parse it all."""
        return self.raw.get("listenerPath") or ""

    @property
    def listener_metadata(self) -> str:
        return self.raw.get("listenerMetadata") or ""

    def compile(self, warn=None) -> "Program":
        """The BPF program (compiled once, or read from the cache); the
        names libseccomp does not know are said to ``warn``, by default
        kubirun's log."""
        if self._program is None:
            if self.flags and not _native.seccomp_flags_supported(self.flags):
                from kubirun.base.jsonshape import fail

                raise fail(f"{self.where}.flags", "not supported by this kernel")
            self._program, self._unknown = _compile(self)
            if self._cache_path is not None:
                _write_cache(self._cache_path, self._program, self._unknown)
            self._say_unknown(warn)
        elif self._unknown is not None:
            self._say_unknown(warn)
        self._unknown = None  # said once
        return self._program

    def _say_unknown(self, warn) -> None:
        version, names = self._unknown or ("", [])
        if names and self.warn_unknown:
            if warn is None:
                from kubirun.base import log

                warn = log.warning
            warn(f"{self.where}: skipped {len(names)} syscall(s) unknown to libseccomp"
                 f" {version} on {os.uname().machine}: {', '.join(names)}")


Unknown = tuple  # (libseccomp's version, [syscall names it does not know])


class Program:
    """A compiled filter: BPF instructions and seccomp(2) flags (with
    ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` when a rule notifies an agent).
    Plain bytes, so a forked init holds all it needs without libseccomp."""

    __slots__ = ("bpf", "flags", "execveat_allowed")

    def __init__(self, bpf: bytes, flags: int = 0, execveat_allowed: bool = False) -> None:
        self.bpf, self.flags = bpf, flags
        # Does the filter surely let execveat through?  The exec helper is
        # exec'd with it (else with execve of /proc/self/fd/N).
        self.execveat_allowed = execveat_allowed

    @property
    def listener(self) -> bool:
        """Does loading it give a listener fd for a seccomp agent?"""
        return bool(self.flags & _native.SECCOMP_FILTER_FLAG_NEW_LISTENER)

    def load(self, kernel=None) -> int | None:
        """Install the filter on this process (and so on what it execs),
        through ``kernel`` (a ``_native.Kernel``; this module's seam when
        None); the listener fd (close-on-exec) if it has one."""
        explain.say("seccomp(SECCOMP_SET_MODE_FILTER, {:#x}, {} BPF instructions)", "the system"
                    " calls the program may make, checked by the kernel", self.flags,
                    len(self.bpf) // 8)
        try:
            return (kernel or _native).seccomp_set_filter(self.bpf, self.flags)
        except OSError as err:
            raise ContainerStartError(f"cannot load the seccomp filter: {describe(err)}") from None

    @staticmethod
    def must_load_early(process) -> bool:
        """Loading a filter takes no_new_privs or CAP_SYS_ADMIN.  A process
        that has neither once it runs as its user must load it before
        ``process.become`` (as runc does): the filter then sees that step's
        calls too (setgroups, setgid, setuid, capset, prctl, chdir...).
        Otherwise it is loaded right before ``execve``."""
        if process.no_new_privileges:
            return False
        if process.capabilities is None:
            return not process.oci or process.uid != 0  # a uid switch clears them
        return "CAP_SYS_ADMIN" not in process.capabilities.get("effective", [])

    def to_state(self) -> dict:
        return {"bpf": binascii.b2a_base64(self.bpf, newline=False).decode(), "flags": self.flags,
                "execveat": self.execveat_allowed}

    @classmethod
    def from_state(cls, state: dict) -> "Program":
        return cls(binascii.a2b_base64(state["bpf"]), state.get("flags", 0),
                   state.get("execveat", False) is True)


# --- 1. parse ----------------------------------------------------------------

def parse(raw: object, where: str = WHERE) -> Profile | None:
    """The profile; None for one with neither a default action nor rules
    (runc takes that as seccomp disabled)."""
    from kubirun.base.jsonshape import expect

    expect(raw, dict, where)
    if not raw.get("defaultAction") and not raw.get("syscalls"):
        return None
    profile = Profile(raw, where)
    profile._cache_path = _cache_path(raw)
    cached = _read_cache(profile._cache_path) if profile._cache_path else None
    if cached is not None:
        profile._program, profile._unknown = cached
    else:
        profile.fields()  # its errors now, with the rest of config.json's
    return profile


def _parse_fields(raw: dict, where: str) -> tuple[int, list[tuple[str, str]], int, list[Rule]]:
    from kubirun.base.jsonshape import expect, fail, get, strings

    listener_path = get(raw, "listenerPath", str, where, "")
    if get(raw, "listenerMetadata", str, where, "") and not listener_path:
        raise fail(f"{where}.listenerMetadata", "set without listenerPath (it is sent to the"
                    " seccomp agent listening there)")
    default_action = _action(raw, "defaultAction", "defaultErrnoRet", where)
    if default_action == NOTIFY:
        # Every call of the process would wait for an agent that does not
        # have the listener yet (runc refuses it too).
        raise fail(f"{where}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")

    architectures = []
    for i, name in enumerate(strings(raw, "architectures", where)):
        if name not in ARCHITECTURES:
            raise fail(f"{where}.architectures[{i}]",
                        f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
        architectures.append((name, f"{where}.architectures[{i}]"))

    flags = 0
    for i, name in enumerate(strings(raw, "flags", where)):
        if name not in FLAGS:
            raise fail(f"{where}.flags[{i}]", f"unknown flag {name!r}"
                        f" (known: {', '.join(FLAGS)})")
        flags |= FLAGS[name]

    rules = []
    for i, call in enumerate(get(raw, "syscalls", list, where, [])):
        here = f"{where}.syscalls[{i}]"
        expect(call, dict, here)
        names = strings(call, "names", here)
        if not names:
            raise fail(f"{here}.names", "missing or empty: a rule names at least one syscall")
        for j, name in enumerate(names):
            if not name:
                raise fail(f"{here}.names[{j}]", "empty syscall name")
        action = _action(call, "action", "errnoRet", here)
        if action == NOTIFY:
            if not listener_path:
                # As runc ("listenerPath is not set"), but before anything is made.
                raise fail(f"{where}.listenerPath", f"missing: {here} notifies a seccomp agent"
                            " (SCMP_ACT_NOTIFY), which must listen there")
            for j, name in enumerate(names):
                if name in NOT_NOTIFIABLE:
                    raise fail(f"{here}.names[{j}]", f"SCMP_ACT_NOTIFY cannot be used for"
                                f" {name}: kubirun passes the listener to the agent with it")
        args = [_argument(arg, f"{here}.args[{k}]")
                for k, arg in enumerate(get(call, "args", list, here, []))]
        rules.append(Rule(names, action, args, here))
    return default_action, architectures, _listener_flags(flags, rules), rules


def _listener_flags(flags: int, rules: list[Rule]) -> int:
    """The seccomp(2) flags, with a listener when a rule notifies (as
    runc: even if libseccomp skips that rule's calls).  A listener with
    TSYNC needs TSYNC_ESRCH (the kernel refuses the pair otherwise: both
    would return an fd or a thread id); WAIT_KILLABLE_RECV needs a
    listener, and without one it changes nothing: dropped."""
    if any(rule.action == NOTIFY for rule in rules):
        flags |= _native.SECCOMP_FILTER_FLAG_NEW_LISTENER
        if flags & _native.SECCOMP_FILTER_FLAG_TSYNC:
            flags |= _native.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
    else:
        flags &= ~_native.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    return flags


def _action(obj: dict, key: str, errno_key: str, where: str) -> int:
    """An action and its errno, as the libseccomp action value."""
    from kubirun.base.jsonshape import fail, get, uint

    name = get(obj, key, str, where)
    if not name:
        raise fail(f"{where}.{key}", "missing (an action is required)")
    if name not in ACTIONS:
        raise fail(f"{where}.{key}", f"unknown action {name!r} (known: {', '.join(ACTIONS)})")
    value, takes_errno = ACTIONS[name]
    errno_ret = uint(obj, errno_key, where)
    if errno_ret is not None:
        if not takes_errno:
            raise fail(f"{where}.{errno_key}", f"{name} returns no errno"
                        " (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)")
        if errno_ret > 0xFFFF:
            raise fail(f"{where}.{errno_key}", f"must be at most 65535, got {errno_ret}")
    if takes_errno:
        value |= EPERM if errno_ret is None else errno_ret
    return value


def _argument(arg: object, where: str) -> tuple[int, int, int, int]:
    from kubirun.base.jsonshape import expect, fail, get, uint

    expect(arg, dict, where)
    index = uint(arg, "index", where)
    if index is None:
        raise fail(f"{where}.index", "missing")
    if index >= MAX_ARGUMENTS:
        raise fail(f"{where}.index", f"a syscall has arguments 0 to 5, got {index}")
    value = uint(arg, "value", where)
    if value is None:
        raise fail(f"{where}.value", "missing")
    value_two = uint(arg, "valueTwo", where, 0)
    for key, number in (("value", value), ("valueTwo", value_two)):
        if number >= 1 << 64:
            raise fail(f"{where}.{key}", f"does not fit in 64 bits: {number}")
    op = get(arg, "op", str, where)
    if op not in OPERATORS:
        raise fail(f"{where}.op", f"unknown operator {op!r} (known: {', '.join(OPERATORS)})")
    return index, OPERATORS[op], value, value_two


# --- 2. compile --------------------------------------------------------------

def _compile(profile: Profile) -> tuple[Program, Unknown]:
    from kubirun.base.jsonshape import fail

    try:
        seccomp = _native.libseccomp()
    except OSError as err:
        raise KubirunError(f"config.json: {profile.where}: {err.strerror}") from None
    version = _version(seccomp)
    ctx = seccomp.kubi_seccomp_init(profile.default_action)
    if ctx == ffi.NULL:
        raise fail(f"{profile.where}.defaultAction",
                    f"libseccomp {version} refuses this action on this kernel")
    try:
        for name, where in profile.architectures:
            token = seccomp.kubi_seccomp_arch_resolve_name(ARCHITECTURES[name].encode())
            if not token:
                raise fail(where, f"{name} is not supported by libseccomp {version}")
            rc = seccomp.kubi_seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -errno.EEXIST:
                raise fail(where, f"libseccomp cannot add {name}: {os.strerror(-rc)}")
        unknown: dict[str, None] = {}
        added = 0
        for rule in profile.rules:
            if rule.action == profile.default_action:
                continue  # changes nothing, and libseccomp refuses it
            for name in rule.names:
                number = seccomp.kubi_seccomp_syscall_resolve_name(name.encode())
                if number == NR_SCMP_ERROR:
                    unknown[name] = None
                    continue
                for conditions in _condition_sets(rule.args):
                    rc = seccomp.kubi_seccomp_rule_add_array(
                        ctx, rule.action, number, len(conditions), _arg_array(conditions))
                    if rc < 0:
                        raise fail(rule.where, f"libseccomp {version} refuses the rule for"
                                    f" {name}: {os.strerror(-rc)}")
                    added += 1
        if added > OPTIMIZE_ABOVE:
            # A binary tree instead of a list: fewer comparisons per call.
            # (libseccomp up to 2.5.4 misbehaves with it on an empty filter.)
            seccomp.kubi_seccomp_attr_set(ctx, seccomp.SCMP_FLTATR_CTL_OPTIMIZE, 2)
        bpf = _export(seccomp, ctx, profile.where)
    finally:
        seccomp.kubi_seccomp_release(ctx)
    if _wants_enosys_stub(profile):
        from kubirun import seccomp_bpf

        stub = seccomp_bpf.enosys_stub(_highest_numbers(seccomp, profile))
        if (len(stub) + len(bpf)) // 8 <= BPF_MAXINSNS:
            bpf = seccomp_bpf.with_stub(stub, bpf)
    program = Program(bpf, profile.flags, _allows_unconditionally(profile, "execveat"))
    return program, (version, list(unknown))


def _wants_enosys_stub(profile: Profile) -> bool:
    """As runc: not when the default lets calls through (allow, log,
    trace: a tracer handles new calls itself) or is ENOSYS already."""
    action = profile.default_action
    if action in ALLOWING or action & 0xFFFF0000 == lib.KUBI_SCMP_ACT_TRACE & 0xFFFF0000:
        return False
    return action != lib.KUBI_SCMP_ACT_ERRNO | errno.ENOSYS


def _highest_numbers(seccomp, profile: Profile) -> dict[int, dict[str, int]]:
    """For each architecture of the filter (the profile's, and the
    machine's own, which libseccomp always adds): the highest call number
    the profile names there, by audit architecture and ABI."""
    from kubirun import seccomp_bpf

    tokens = {seccomp.kubi_seccomp_arch_native()}
    tokens.update(seccomp.kubi_seccomp_arch_resolve_name(ARCHITECTURES[name].encode())
                  for name, _ in profile.architectures)
    x32 = seccomp.kubi_seccomp_arch_resolve_name(b"x32")
    names = {name.encode() for rule in profile.rules for name in rule.names}
    highest: dict[int, dict[str, int]] = {}
    for token in tokens:
        numbers = [seccomp.kubi_seccomp_syscall_resolve_name_arch(token, name) for name in names]
        top = max((n for n in numbers if n >= 0), default=None)
        if top is None:
            continue
        if token == x32:
            highest.setdefault(seccomp_bpf.AUDIT_ARCH_X86_64, {})["x32"] = \
                top & ~seccomp_bpf.X32_SYSCALL_BIT
        else:
            highest.setdefault(token, {})["native"] = top
    return highest


# --- the cache of compiled programs ------------------------------------------

# Part of the key: bump when parse refuses, or _compile makes, other things.
# 2: SCMP_ACT_NOTIFY and listenerPath accepted; NEW_LISTENER in the flags.
CACHE_FORMAT = 2


def cache_dir() -> str | None:
    """Where compiled programs are kept: a tmpfs, so a reboot (or a new
    kernel) starts afresh; None when there is no place of the user's own."""
    if os.geteuid() == 0:
        return "/run/kubirun-cache/seccomp"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "kubirun-cache", "seccomp") if runtime else None


def _cache_path(raw: dict) -> str | None:
    """Where the program of ``raw`` is (or goes): named by a hash of the
    profile, libseccomp's version and the machine.  None: no cache."""
    directory = cache_dir()
    if directory is None:
        return None
    from kubirun.base import jsonio

    try:
        version = _version(_native.libseccomp())
    except OSError:
        return None  # _compile says why
    text = jsonio.dumps([CACHE_FORMAT, version, os.uname().machine, raw])
    return os.path.join(directory, _sha256(text.encode()).hexdigest())


def _sha256(data: bytes):
    # The builtin module: hashlib would cost ~3 ms of OpenSSL at start-up.
    try:
        from _sha256 import sha256  # Python <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # Python >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def _read_cache(path: str) -> tuple[Program, Unknown] | None:
    """A cached program, if its file and directory are the user's own and
    no one else may write them (a program from elsewhere would be loaded
    into the container); None for anything else, which is compiled anew."""
    from kubirun.base import jsonio

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not (_trusted(os.fstat(fd)) and _trusted(os.stat(os.path.dirname(path)))):
            return None
        entry = jsonio.loads(os.read(fd, 1 << 20))
        program = Program.from_state(entry["program"])
        version, names = entry["unknown"]
        unknown = (str(version), [str(name) for name in names])
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        return None
    finally:
        os.close(fd)
    return program, unknown


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _write_cache(path: str, program: Program, unknown: Unknown) -> None:
    """Keep the program (atomically: another kubirun may read it now);
    a cache that cannot be written is no error, only slower next time."""
    from kubirun.base import jsonio

    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
        if not _trusted(os.stat(directory)):
            return
        jsonio.write_atomically(path, {"program": program.to_state(), "unknown": list(unknown)})
    except OSError:
        pass


ALLOWING = (lib.SCMP_ACT_ALLOW, lib.SCMP_ACT_LOG)


def _allows_unconditionally(profile: Profile, name: str) -> bool:
    """Whether the profile surely lets ``name`` through, whatever its
    arguments: a rule without conditions allows it, or the default does
    and no rule names it."""
    rules = [rule for rule in profile.rules if name in rule.names]
    if any(rule.action in ALLOWING and not rule.args for rule in rules):
        return True
    return not rules and profile.default_action in ALLOWING


def _condition_sets(args: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """The comparisons of one rule, or (as runc does) one rule for each
    comparison when an argument is compared twice: libseccomp cannot AND
    two comparisons of one argument, so such an entry matches if any does."""
    indexes = [index for index, _, _, _ in args]
    if len(set(indexes)) < len(indexes):
        return [[arg] for arg in args]
    return [args]


def _arg_array(conditions: list[tuple[int, int, int, int]]):
    if not conditions:
        return ffi.NULL
    array = ffi.new("struct scmp_arg_cmp[]", len(conditions))
    for item, (index, op, value, value_two) in zip(array, conditions):
        item.arg, item.op, item.datum_a, item.datum_b = index, op, value, value_two
    return array


def _export(seccomp, ctx, where: str) -> bytes:
    """The BPF program, through a memfd (libseccomp 2.5 writes to an fd)."""
    fd = os.memfd_create("kubirun-seccomp", os.MFD_CLOEXEC)
    try:
        rc = seccomp.kubi_seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise KubirunError(f"config.json: {where}: libseccomp cannot generate the filter:"
                               f" {os.strerror(-rc)}")
        size = os.lseek(fd, 0, os.SEEK_CUR)
        bpf = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not bpf or len(bpf) % 8 or len(bpf) // 8 > BPF_MAXINSNS:
        raise KubirunError(f"config.json: {where}: the filter has {len(bpf) / 8:g} BPF"
                           f" instructions; the kernel takes 1 to {BPF_MAXINSNS}")
    return bpf


def _version(seccomp) -> str:
    v = seccomp.kubi_seccomp_version()
    return f"{v.major}.{v.minor}.{v.micro}"


# --- kubirun features --------------------------------------------------------

def features() -> dict:
    """The ``linux.seccomp`` part of ``kubirun features``."""
    try:
        seccomp = _native.libseccomp()
    except OSError:
        return {"enabled": False}
    notify = (seccomp.kubi_seccomp_version().major, seccomp.kubi_seccomp_version().minor) >= (2, 5)
    return {
        "enabled": True,
        "actions": [name for name in ACTIONS if notify or name != "SCMP_ACT_NOTIFY"],
        "operators": list(OPERATORS),
        "archs": [name for name, scmp in ARCHITECTURES.items()
                  if seccomp.kubi_seccomp_arch_resolve_name(scmp.encode())],
        "knownFlags": list(FLAGS),
        "supportedFlags": [name for name, bit in FLAGS.items()
                           if _native.seccomp_flags_supported(_probe_bits(bit))],
    }


def _probe_bits(bit: int) -> int:
    """What to ask the kernel for to learn whether it supports ``bit``:
    WAIT_KILLABLE_RECV is refused without a listener."""
    if bit == _native.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
        return bit | _native.SECCOMP_FILTER_FLAG_NEW_LISTENER
    return bit
