"""``linux.seccomp``: validation (errors name the JSON path), compilation
by libseccomp (unknown syscalls skipped with a warning), the compiled
program (loaded in a forked child), and what it costs a container without
a profile (nothing: libseccomp is never loaded)."""
from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import sys

import pytest

from kubirun import _native, seccomp
from kubirun.base.errors import ContainerStartError
from kubirun.process import ProcessSpec
from kubirun.spec import SpecError, default_config, parse

ALLOW = seccomp.ACTIONS["SCMP_ACT_ALLOW"][0]
ERRNO = seccomp.ACTIONS["SCMP_ACT_ERRNO"][0]

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def _config(profile) -> dict:
    config = copy.deepcopy(default_config())
    config["linux"]["seccomp"] = copy.deepcopy(profile)
    return config


def _profile(**fields) -> dict:
    profile = {"defaultAction": "SCMP_ACT_ALLOW"}
    profile.update(fields)
    return profile


def _compile(profile: dict):
    warnings = []
    program = seccomp.parse(copy.deepcopy(profile)).compile(warn=warnings.append)
    return program, warnings


# --- parsing ------------------------------------------------------------------


def test_a_profile_is_attached_to_the_spec(bundle):
    spec = parse(_config(DENY_MKDIR), str(bundle))
    profile = spec.seccomp
    assert profile.default_action == ALLOW
    assert [rule.names for rule in profile.rules] == [["mkdir", "mkdirat"]]
    assert profile.rules[0].action == ERRNO | 1


def test_no_profile_no_seccomp(bundle):
    assert parse(copy.deepcopy(default_config()), str(bundle)).seccomp is None


def test_an_empty_profile_is_no_filter(bundle):
    # runc: neither a default action nor rules means seccomp disabled
    assert parse(_config({}), str(bundle)).seccomp is None


@pytest.mark.parametrize("action, errno_ret, expected", [
    ("SCMP_ACT_ERRNO", None, ERRNO | errno.EPERM),
    ("SCMP_ACT_ERRNO", 38, ERRNO | 38),
    ("SCMP_ACT_TRACE", None, seccomp.ACTIONS["SCMP_ACT_TRACE"][0] | errno.EPERM),
    ("SCMP_ACT_KILL", None, seccomp.ACTIONS["SCMP_ACT_KILL_THREAD"][0]),
    ("SCMP_ACT_KILL_PROCESS", None, seccomp.ACTIONS["SCMP_ACT_KILL_PROCESS"][0]),
    ("SCMP_ACT_LOG", None, seccomp.ACTIONS["SCMP_ACT_LOG"][0]),
])
def test_actions_and_their_errno(action, errno_ret, expected):
    raw = {"defaultAction": action}
    if errno_ret is not None:
        raw["defaultErrnoRet"] = errno_ret
    assert seccomp.parse(raw).default_action == expected


def test_flags_are_or_ed():
    profile = seccomp.parse(_profile(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]))
    assert profile.flags == _native.SECCOMP_FILTER_FLAG_LOG | _native.SECCOMP_FILTER_FLAG_TSYNC


def _rule(**fields) -> dict:
    rule = {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
    rule.update(fields)
    return rule


@pytest.mark.parametrize("profile, where, words", [
    ("allow", "linux.seccomp", "expected an object"),
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "linux.seccomp.defaultAction", "unknown action"),
    ({"syscalls": [_rule()]}, "linux.seccomp.defaultAction", "missing"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"},
     "linux.seccomp.defaultAction", "cannot be the default action"),
    (_profile(syscalls=[_rule(), _rule(action="SCMP_ACT_BOGUS")]),
     "linux.seccomp.syscalls[1].action", "unknown action 'SCMP_ACT_BOGUS'"),
    (_profile(syscalls=[_rule(action="SCMP_ACT_NOTIFY")]),
     "linux.seccomp.listenerPath", "missing: linux.seccomp.syscalls[0] notifies a seccomp agent"),
    (_profile(listenerPath="/run/agent.sock", syscalls=[_rule(names=["mkdir", "sendmsg"],
                                                              action="SCMP_ACT_NOTIFY")]),
     "linux.seccomp.syscalls[0].names[1]", "cannot be used for sendmsg"),
    (_profile(listenerPath=5), "linux.seccomp.listenerPath", "expected a string"),
    (_profile(syscalls=[_rule(action=None)]), "linux.seccomp.syscalls[0].action", "missing"),
    (_profile(syscalls=[_rule(names=[])]), "linux.seccomp.syscalls[0].names", "at least one"),
    (_profile(syscalls=[_rule(names=["mkdir", ""])]), "linux.seccomp.syscalls[0].names[1]", "empty"),
    (_profile(syscalls=[_rule(names=["mkdir", 5])]), "linux.seccomp.syscalls[0].names[1]",
     "expected a string"),
    (_profile(syscalls=[_rule(action="SCMP_ACT_ALLOW", errnoRet=1)]),
     "linux.seccomp.syscalls[0].errnoRet", "returns no errno"),
    (_profile(syscalls=[_rule(errnoRet=-1)]), "linux.seccomp.syscalls[0].errnoRet", "negative"),
    (_profile(syscalls=[_rule(errnoRet=70000)]), "linux.seccomp.syscalls[0].errnoRet", "65535"),
    ({"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1}, "linux.seccomp.defaultErrnoRet",
     "returns no errno"),
    (_profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_BOGUS"]),
     "linux.seccomp.architectures[1]", "unknown architecture 'SCMP_ARCH_BOGUS'"),
    (_profile(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "linux.seccomp.flags[0]", "unknown flag"),
    (_profile(listenerMetadata="x"), "linux.seccomp.listenerMetadata", "without listenerPath"),
    (_profile(syscalls=[_rule(args=[{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}])]),
     "linux.seccomp.syscalls[0].args[0].index", "0 to 5"),
    (_profile(syscalls=[_rule(args=[{"value": 0, "op": "SCMP_CMP_EQ"}])]),
     "linux.seccomp.syscalls[0].args[0].index", "missing"),
    (_profile(syscalls=[_rule(args=[{"index": 0, "op": "SCMP_CMP_EQ"}])]),
     "linux.seccomp.syscalls[0].args[0].value", "missing"),
    (_profile(syscalls=[_rule(args=[{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}])]),
     "linux.seccomp.syscalls[0].args[0].value", "64 bits"),
    (_profile(syscalls=[_rule(args=[{"index": 0, "value": 0, "op": "SCMP_CMP_BOGUS"}])]),
     "linux.seccomp.syscalls[0].args[0].op", "unknown operator"),
    (_profile(syscalls=[_rule(args=[{"index": 0, "value": 0}])]),
     "linux.seccomp.syscalls[0].args[0].op", "unknown operator"),
])
def test_errors_name_the_json_path(bundle, profile, where, words):
    with pytest.raises(SpecError) as err:
        parse(_config(profile), str(bundle))
    assert str(err.value).startswith(f"config.json: {where}:"), str(err.value)
    assert words in str(err.value)


# --- compiling ------------------------------------------------------------------


def test_compiles_to_a_bpf_program():
    program, warnings = _compile(DENY_MKDIR)
    assert warnings == []
    assert len(program.bpf) % 8 == 0 and 0 < len(program.bpf) // 8 <= seccomp.BPF_MAXINSNS
    assert program.flags == 0


def test_a_profile_is_compiled_once():
    profile = seccomp.parse(copy.deepcopy(DENY_MKDIR))
    assert profile.compile(warn=print) is profile.compile(warn=print)


def test_unknown_syscalls_are_skipped_with_one_warning():
    profile = _profile(syscalls=[_rule(names=["no_such_syscall", "mkdir", "nor_this_one"])])
    program, warnings = _compile(profile)
    assert len(warnings) == 1, warnings
    assert "no_such_syscall, nor_this_one" in warnings[0]
    assert warnings[0].startswith("linux.seccomp: skipped 2 syscall(s) unknown to libseccomp")
    assert program.bpf == _compile(_profile(syscalls=[_rule()]))[0].bpf


def test_the_warning_goes_to_kubiruns_log(capsys):
    seccomp.parse(_profile(syscalls=[_rule(names=["no_such_syscall"])])).compile()
    assert "no_such_syscall" in capsys.readouterr().err


def test_a_rule_with_the_default_action_is_dropped():
    # libseccomp refuses such a rule; runc drops it
    # (read is numbered below mkdir everywhere: the ENOSYS stub, which
    # counts every name, is the same for both)
    profile = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                            {"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}]}
    program, _ = _compile(profile)
    only_mkdir = _compile({"defaultAction": "SCMP_ACT_ERRNO",
                           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}]})[0]
    assert program.bpf == only_mkdir.bpf


def test_a_different_errno_is_not_the_default_action():
    profile = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
    assert _compile(profile)[0].bpf != _compile({"defaultAction": "SCMP_ACT_ERRNO"})[0].bpf


def test_architectures_are_added():
    native, _ = _compile(DENY_MKDIR)
    both, _ = _compile(dict(DENY_MKDIR, architectures=["SCMP_ARCH_X86", "SCMP_ARCH_X32"]))
    assert len(both.bpf) > len(native.bpf)


def test_an_architecture_libseccomp_lacks_is_an_error_naming_it():
    newer = [name for name in ("SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SHEB")
             if name not in seccomp.features()["archs"]]
    if not newer:
        pytest.skip("this libseccomp knows every architecture kubirun names")
    with pytest.raises(SpecError, match=r"linux.seccomp.architectures\[1\]: .* not supported"):
        _compile(_profile(architectures=["SCMP_ARCH_X86_64", newer[0]]))


def test_comparisons_of_one_argument_become_separate_rules():
    # libseccomp cannot AND two comparisons of one argument: as runc, each
    # becomes its own rule (the entry matches if any does)
    args = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]
    twice, _ = _compile(_profile(syscalls=[_rule(args=args)]))
    separate, _ = _compile(_profile(syscalls=[_rule(args=args[:1]), _rule(args=args[1:])]))
    assert twice.bpf == separate.bpf


NOTIFY_MKDIR = _profile(listenerPath="/run/agent.sock",
                        syscalls=[_rule(names=["mkdir", "mkdirat"], action="SCMP_ACT_NOTIFY")])


def test_a_notify_rule_asks_for_a_listener():
    program, _ = _compile(NOTIFY_MKDIR)
    assert program.listener
    assert program.flags == _native.SECCOMP_FILTER_FLAG_NEW_LISTENER
    again = seccomp.Program.from_state(program.to_state())
    assert again.listener and again.bpf == program.bpf


def test_a_listener_path_without_notify_rules_asks_for_no_listener():
    program, _ = _compile(dict(DENY_MKDIR, listenerPath="/run/agent.sock", listenerMetadata="x"))
    assert not program.listener and program.flags == 0


def test_tsync_with_a_listener_reports_a_thread_as_esrch():
    # The kernel refuses TSYNC with NEW_LISTENER alone (both would return a number).
    program, _ = _compile(dict(NOTIFY_MKDIR, flags=["SECCOMP_FILTER_FLAG_TSYNC"]))
    assert program.flags == (_native.SECCOMP_FILTER_FLAG_TSYNC | _native.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
                             | _native.SECCOMP_FILTER_FLAG_NEW_LISTENER)


def test_wait_killable_recv_is_kept_with_a_listener_and_dropped_without():
    flag = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    assert seccomp.parse(dict(NOTIFY_MKDIR, flags=flag)).flags == (
        _native.SECCOMP_FILTER_FLAG_NEW_LISTENER | _native.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
    assert seccomp.parse(dict(DENY_MKDIR, flags=flag)).flags == 0


def test_program_round_trips_through_the_state_file():
    program, _ = _compile(dict(DENY_MKDIR, flags=["SECCOMP_FILTER_FLAG_LOG"]))
    again = seccomp.Program.from_state(program.to_state())
    assert (again.bpf, again.flags) == (program.bpf, program.flags)


# --- loading ------------------------------------------------------------------


def _in_child(body) -> int:
    """Run ``body`` in a forked child; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(body())
        except BaseException:  # noqa: BLE001
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_loaded_program_filters_this_process(tmp_path):
    program, _ = _compile({"defaultAction": "SCMP_ACT_ALLOW",
                           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                         "errnoRet": errno.EXDEV}]})

    def body():
        _native.prctl(_native.PR_SET_NO_NEW_PRIVS, 1)
        program.load()
        try:
            os.mkdir(tmp_path / "x")
        except OSError as err:
            return 10 if err.errno == errno.EXDEV else 11
        return 12

    assert _in_child(body) == 10
    assert not (tmp_path / "x").exists()


def test_an_argument_filter_matches_only_its_value():
    program, _ = _compile(_profile(syscalls=[{
        "names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV,
        "args": [{"index": 1, "value": 4242, "op": "SCMP_CMP_EQ"}]}]))

    def body():
        _native.prctl(_native.PR_SET_NO_NEW_PRIVS, 1)
        program.load()
        os.getpriority(os.PRIO_PROCESS, 0)  # allowed
        try:
            os.getpriority(os.PRIO_PROCESS, 4242)
        except OSError as err:
            return 20 if err.errno == errno.EXDEV else 21
        return 22

    assert _in_child(body) == 20


def test_a_loaded_program_with_a_listener_returns_it_and_without_an_agent_calls_fail_enosys(tmp_path):
    program, _ = _compile(NOTIFY_MKDIR)

    def body():
        _native.prctl(_native.PR_SET_NO_NEW_PRIVS, 1)
        listener = program.load()
        if not isinstance(listener, int) or os.get_inheritable(listener):
            return 31
        os.close(listener)  # the last holder: nobody can answer
        try:
            os.mkdir(tmp_path / "x")
        except OSError as err:
            return 30 if err.errno == errno.ENOSYS else 32
        return 33

    assert _in_child(body) == 30
    assert not (tmp_path / "x").exists()


def test_a_load_failure_is_a_start_error():
    with pytest.raises(ContainerStartError, match="cannot load the seccomp filter"):
        seccomp.Program(b"\0" * 4).load()  # not a whole instruction


@pytest.mark.parametrize("nnp, uid, caps, early", [
    (True, 1000, None, False),
    (False, 0, None, False),  # root keeps CAP_SYS_ADMIN
    (False, 1000, None, True),  # the uid switch clears the capabilities
    (False, 0, ["CAP_KILL"], True),
    (False, 1000, ["CAP_SYS_ADMIN"], False),
    (True, 0, ["CAP_KILL"], False),
])
def test_when_the_filter_must_be_loaded_before_the_user_switch(nnp, uid, caps, early):
    process = ProcessSpec(args=["true"])
    process.oci, process.uid, process.no_new_privileges = True, uid, nnp
    if caps is not None:
        process.capabilities = {"effective": caps}
    assert seccomp.Program.must_load_early(process) is early


# --- features, and the cost for containers without a profile -------------------


def test_features_list_what_is_supported():
    features = seccomp.features()
    assert features["enabled"] is True
    assert set(features["actions"]) == set(seccomp.ACTIONS)  # libseccomp >= 2.5 here
    assert "SCMP_ACT_NOTIFY" in features["actions"]
    assert set(features["operators"]) == set(seccomp.OPERATORS)
    assert "SCMP_ARCH_X86_64" in features["archs"]
    assert set(features["knownFlags"]) == set(seccomp.FLAGS)
    assert "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in features["knownFlags"]
    assert set(features["supportedFlags"]) <= set(seccomp.FLAGS)
    # Linux 5.19 and later; the probe asks for a listener with it
    major, minor = (int(n) for n in os.uname().release.split(".")[:2])
    if (major, minor) >= (5, 19):
        assert "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in features["supportedFlags"]


def test_a_config_without_seccomp_never_loads_libseccomp(bundle):
    code = (
        "import json, sys\n"
        "from kubirun.spec import parse\n"
        "import kubirun.container, kubirun.creation, kubirun.init, kubirun.exec_into\n"
        f"parse(json.loads({json.dumps(default_config())!r}), {str(bundle)!r})\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('kubirun.seccomp' in sys.modules, 'libseccomp' in maps)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
