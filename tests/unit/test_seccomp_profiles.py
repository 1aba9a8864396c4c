"""Pieces of seccomp that need no container: the ENOSYS stub's jumps (run
through a small interpreter of the instructions it uses), docker-format
profiles (``includes``/``excludes``, ``archMap``) as runtime-spec ones, and
the cache of compiled programs."""
from __future__ import annotations

import os
import struct

import pytest

from kubirun import seccomp, seccomp_bpf, seccomp_default

AUDIT_I386, AUDIT_X86_64 = 0x40000003, seccomp_bpf.AUDIT_ARCH_X86_64
FILTER = "filter"  # the stub let the call through to libseccomp's program


def run_stub(stub: bytes, arch: int, nr: int) -> int | str:
    """Interpret the stub for one call: its return value, or FILTER when
    it falls off its end (into the filter)."""
    code = [struct.unpack("=HBBI", stub[i:i + 8]) for i in range(0, len(stub), 8)]
    data = {0: nr, 4: arch}
    acc, pc = 0, 0
    while pc < len(code):
        op, jt, jf, k = code[pc]
        if op == seccomp_bpf.LD_W_ABS:
            acc = data[k]
        elif op == seccomp_bpf.RET_K:
            return k
        elif op == seccomp_bpf.JMP_JA:
            pc += k
        else:
            taken = {seccomp_bpf.JMP_JEQ_K: acc == k, seccomp_bpf.JMP_JGT_K: acc > k,
                     seccomp_bpf.JMP_JSET_K: bool(acc & k)}[op]
            pc += jt if taken else jf
        pc += 1
    assert pc == len(code), "jumped past the end of the stub"
    return FILTER


ENOSYS = seccomp_bpf.RET_ENOSYS


def test_the_stub_answers_enosys_above_each_architectures_highest_call():
    stub = seccomp_bpf.enosys_stub({AUDIT_X86_64: {"native": 436}, AUDIT_I386: {"native": 400}})
    assert run_stub(stub, AUDIT_X86_64, 436) == FILTER
    assert run_stub(stub, AUDIT_X86_64, 437) == ENOSYS
    assert run_stub(stub, AUDIT_X86_64, 0) == FILTER
    assert run_stub(stub, AUDIT_I386, 401) == ENOSYS
    assert run_stub(stub, AUDIT_I386, 400) == FILTER
    assert run_stub(stub, 0xC00000B7, 9999) == FILTER  # aarch64: not in the profile


def test_x32_calls_are_compared_with_x32s_highest():
    bit = seccomp_bpf.X32_SYSCALL_BIT
    both = seccomp_bpf.enosys_stub({AUDIT_X86_64: {"native": 436, "x32": 547}})
    assert run_stub(both, AUDIT_X86_64, bit | 500) == FILTER  # above 436, but an x32 call
    assert run_stub(both, AUDIT_X86_64, bit | 548) == ENOSYS
    assert run_stub(both, AUDIT_X86_64, 437) == ENOSYS
    native_only = seccomp_bpf.enosys_stub({AUDIT_X86_64: {"native": 436}})
    assert run_stub(native_only, AUDIT_X86_64, bit | 9999) == FILTER  # the filter decides
    x32_only = seccomp_bpf.enosys_stub({AUDIT_X86_64: {"x32": 547}})
    assert run_stub(x32_only, AUDIT_X86_64, 9999) == FILTER
    assert run_stub(x32_only, AUDIT_X86_64, bit | 548) == ENOSYS


def test_s390_call_zero_is_enosys():
    stub = seccomp_bpf.enosys_stub({seccomp_bpf.AUDIT_ARCH_S390X: {"native": 400}})
    assert run_stub(stub, seccomp_bpf.AUDIT_ARCH_S390X, 0) == ENOSYS
    assert run_stub(stub, seccomp_bpf.AUDIT_ARCH_S390X, 1) == FILTER


def test_nothing_to_compare_is_no_stub():
    assert seccomp_bpf.enosys_stub({}) == b""
    assert seccomp_bpf.enosys_stub({AUDIT_X86_64: {}}) == b""


# --- docker's format ------------------------------------------------------------

DOCKER = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "everyone"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
         "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"name": "ptrace", "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
    ],
}


def _names(oci: dict) -> list[str]:
    return [name for rule in oci["syscalls"] for name in rule["names"]]


def test_a_docker_profile_keeps_the_rules_for_the_capabilities_arch_and_kernel():
    oci = seccomp_default.to_oci(DOCKER, ["CAP_CHOWN"], machine="x86_64", kernel="6.1.0-57-amd64")
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert _names(oci) == ["read", "clone", "arch_prctl", "bpf"]
    assert oci["syscalls"][1]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    assert "comment" not in oci["syscalls"][0] and "archMap" not in oci
    assert (oci["defaultAction"], oci["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_with_cap_sys_admin_on_arm64_under_an_old_kernel():
    oci = seccomp_default.to_oci(DOCKER, ["CAP_SYS_ADMIN"], machine="aarch64", kernel="5.4.0")
    assert oci["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert _names(oci) == ["read", "mount", "set_tls", "ptrace"]


def test_which_profiles_are_dockers():
    assert seccomp_default.is_docker_format(DOCKER)
    assert not seccomp_default.is_docker_format({"defaultAction": "SCMP_ACT_ALLOW",
                                                 "syscalls": [{"names": ["read"],
                                                               "action": "SCMP_ACT_ERRNO"}]})


def test_the_default_profile_is_a_valid_runtime_spec_profile_for_docker_capabilities():
    from kubirun.capabilities import CONTAINER_DEFAULTS

    oci = seccomp_default.to_oci(seccomp_default.default_profile(), list(CONTAINER_DEFAULTS))
    profile = seccomp.parse(oci)
    names = set(_names(oci))
    assert {"read", "execve", "execveat", "close_range", "clone", "clone3"} <= names
    assert not {"mount", "unshare", "setns", "keyctl", "add_key", "bpf", "init_module",
                "kexec_load", "reboot", "userfaultfd", "settimeofday"} & names
    assert profile.compile(warn=lambda message: None).bpf


# --- the cache --------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setattr(seccomp, "cache_dir", lambda: str(directory))
    return directory


DENY_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW",
              "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
ALLOW_ALL = {"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}


def test_a_compiled_program_is_kept_and_read_back(cache):
    first = seccomp.parse(dict(DENY_MKDIR)).compile()
    entries = os.listdir(cache)
    assert len(entries) == 1 and os.stat(cache).st_mode & 0o777 == 0o700
    # Put another program under its name: the next compile reads it.
    other = seccomp.parse(dict(ALLOW_ALL)).compile()
    os.replace(cache / sorted(set(os.listdir(cache)) - set(entries))[0], cache / entries[0])
    again = seccomp.parse(dict(DENY_MKDIR)).compile()
    assert again.bpf == other.bpf != first.bpf


def test_a_cached_program_anyone_else_may_write_is_not_used(cache):
    first = seccomp.parse(dict(DENY_MKDIR)).compile()
    (entry,) = os.listdir(cache)
    text = (cache / entry).read_text().replace(first.to_state()["bpf"],
                                               seccomp.parse(dict(ALLOW_ALL)).compile().to_state()["bpf"])
    (cache / entry).write_text(text)
    os.chmod(cache / entry, 0o666)
    assert seccomp.parse(dict(DENY_MKDIR)).compile().bpf == first.bpf


def test_a_warning_is_said_again_from_the_cache(cache):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["no_such_call", "mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    for _ in range(2):
        said = []
        seccomp.parse(dict(profile)).compile(warn=said.append)
        assert len(said) == 1 and "no_such_call" in said[0]


def test_a_cached_program_keeps_its_listener(cache):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
               "listenerMetadata": "m",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    first = seccomp.parse(dict(profile))
    assert first.compile().listener
    again = seccomp.parse(dict(profile))
    assert again._fields is None  # read from the cache, not parsed
    assert again.compile().listener
    assert (again.listener_path, again.listener_metadata) == ("/run/agent.sock", "m")
