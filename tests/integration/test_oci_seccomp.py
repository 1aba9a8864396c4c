"""``linux.seccomp``: the filter the container's processes run under, one
behaviour per test, against kubirun and runc (``oci``).

Most tests run twice: with ``noNewPrivileges`` (the filter is loaded right
before ``execve``) and without it as user nobody, as podman runs
containers (the filter must then be loaded before the user switch drops
the capability loading it takes).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.oci_helpers import assert_nothing_left, base_config

PODMAN_PROFILE = Path("/usr/share/containers/seccomp.json")
NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}

# (noNewPrivileges, uid): the filter loaded last, or before the user switch.
PRIVILEGE_CASES = [pytest.param(True, 0, id="nnp"), pytest.param(False, 65534, id="no-nnp-nobody")]


def with_seccomp(profile: dict, no_new_privileges: bool = True, uid: int = 0):
    def edit(config):
        config["linux"]["seccomp"] = json.loads(json.dumps(profile))
        config["process"]["noNewPrivileges"] = no_new_privileges
        config["process"]["user"] = {"uid": uid, "gid": uid}

    return edit


def run(oci, b):
    return oci.cmd("run", "--bundle", str(b), oci.new_id())


def running(oci, b) -> str:
    cid = oci.new_id()
    oci.start_created(cid, b)
    return cid


def podman_default_profile(capabilities: list[str]) -> dict:
    """What podman sends for its default profile (containers/common's
    seccomp.json, in its own format): the entries for this architecture
    and these capabilities, as OCI ``linux.seccomp``."""
    if not PODMAN_PROFILE.exists() or os.uname().machine not in NATIVE_ARCH:
        pytest.skip(f"no podman default profile ({PODMAN_PROFILE}) for this machine")
    source = json.loads(PODMAN_PROFILE.read_text())
    native, goarch = NATIVE_ARCH[os.uname().machine], GOARCH[os.uname().machine]
    architectures = next(([m["architecture"], *m.get("subArchitectures", [])]
                          for m in source.get("archMap") or [] if m["architecture"] == native), [])
    syscalls = []
    for entry in source["syscalls"]:
        includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
        if includes.get("arches") and goarch not in includes["arches"]:
            continue
        if includes.get("caps") and not set(includes["caps"]) <= set(capabilities):
            continue
        if excludes.get("arches") and goarch in excludes["arches"]:
            continue
        if excludes.get("caps") and set(excludes["caps"]) & set(capabilities):
            continue
        rule = {"names": entry["names"], "action": entry["action"], "args": entry.get("args") or []}
        if "errnoRet" in entry:
            rule["errnoRet"] = entry["errnoRet"]
        syscalls.append(rule)
    profile = {"defaultAction": source["defaultAction"], "architectures": architectures,
               "syscalls": syscalls}
    if "defaultErrnoRet" in source:
        profile["defaultErrnoRet"] = source["defaultErrnoRet"]
    return profile


def podman_profile_for_bundles() -> dict:
    """Podman's profile for the capabilities of the bundles' config."""
    return podman_default_profile(base_config()["process"]["capabilities"]["bounding"])


# --- one syscall denied -----------------------------------------------------


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_a_denied_syscall_fails_with_its_errno_and_the_rest_works(oci, bundle, nnp, uid):
    script = "mkdir /tmp/x; echo mkdir=$?; echo written > /tmp/file && cat /tmp/file; id -u"
    result = run(oci, bundle(["sh", "-c", script], edit=with_seccomp(DENY_MKDIR, nnp, uid)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mkdir=1", "written", str(uid)]
    assert "Operation not permitted" in result.stderr


def test_the_program_runs_in_seccomp_filter_mode(oci, bundle):
    result = run(oci, bundle(["grep", "^Seccomp:", "/proc/self/status"],
                             edit=with_seccomp(DENY_MKDIR)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "2"]


def test_without_a_profile_there_is_no_filter(oci, bundle):
    result = run(oci, bundle(["grep", "^Seccomp:", "/proc/self/status"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "0"]


def test_kill_process_action_kills_with_sigsys(oci, bundle):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    result = run(oci, bundle(["mkdir", "/tmp/x"], edit=with_seccomp(profile)))
    assert result.returncode == 128 + 31, (result.returncode, result.stderr)  # SIGSYS


def seccomp_features(oci) -> dict:
    result = oci.cmd("features")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["linux"]["seccomp"]


def test_features_say_seccomp_is_enabled(oci):
    features = seccomp_features(oci)
    assert features["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"} <= set(features["actions"])
    assert {"SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ"} <= set(features["operators"])
    assert NATIVE_ARCH.get(os.uname().machine, "SCMP_ARCH_X86_64") in features["archs"]


def test_filter_flags_are_accepted(oci, bundle):
    flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
    if not set(flags) <= set(seccomp_features(oci).get("supportedFlags", [])):
        pytest.skip(f"{oci.name} does not support these seccomp flags (its features say so)")
    profile = dict(DENY_MKDIR, flags=flags)
    result = run(oci, bundle(["sh", "-c", "mkdir /tmp/x || echo denied"], edit=with_seccomp(profile)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "denied\n"


def test_unknown_syscall_names_are_skipped(oci, bundle):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["no_such_syscall", "mkdir", "mkdirat"],
                             "action": "SCMP_ACT_ERRNO"}]}
    result = run(oci, bundle(["sh", "-c", "mkdir /tmp/x || echo denied"], edit=with_seccomp(profile)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "denied\n"
    if oci.name == "kubirun":
        assert "no_such_syscall" in result.stderr  # a warning (runc logs it at debug level)


# --- when the filter is loaded ---------------------------------------------------

DENY_USER_SWITCH = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["setuid", "setgid", "setgroups", "setresuid", "setresgid", "capset"],
                  "action": "SCMP_ACT_ERRNO"}],
}


def test_with_no_new_privileges_the_filter_comes_after_the_user_switch(oci, bundle):
    result = run(oci, bundle(["id", "-u"], edit=with_seccomp(DENY_USER_SWITCH, True, 65534)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "65534\n"


def test_without_no_new_privileges_the_filter_comes_before_the_user_switch(oci, bundle):
    # Loading a filter then takes CAP_SYS_ADMIN, which the user switch drops.
    result = run(oci, bundle(["id", "-u"], edit=with_seccomp(DENY_USER_SWITCH, False, 65534)))
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""


# The startContainer hooks run in the container as its process does: as
# its user, under its filter (runc loads the filter, switches user, waits
# for `start`, then runs them).


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_start_container_hooks_run_under_the_filter(oci, bundle, tmp_path, nnp, uid):
    out = tmp_path / "hookout"
    out.mkdir()
    os.chmod(out, 0o777)
    script = "grep ^Seccomp: /proc/self/status > /hookout/said; id -u >> /hookout/said;" \
             " mkdir /hookout/made; echo mkdir=$? >> /hookout/said"

    def edit(config):
        with_seccomp(DENY_MKDIR, nnp, uid)(config)
        config["mounts"].append({"destination": "/hookout", "type": "bind", "source": str(out),
                                 "options": ["bind", "rw"]})
        config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", script],
                                               "env": ["PATH=/bin:/usr/bin"]}]}

    result = run(oci, bundle(["true"], edit=edit))
    assert result.returncode == 0, result.stderr
    assert (out / "said").read_text().split() == ["Seccomp:", "2", str(uid), "mkdir=1"]
    assert not (out / "made").exists()


# --- calls newer than the profile --------------------------------------------
# A call numbered above every one the profile names fails with ENOSYS, not
# the default action: a C library then falls back as on an older kernel
# (runc's patch of the filter).  Numbers are x86_64's.

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
SYSFS, CLOSE_RANGE, FACCESSAT2 = 139, 436, 439


def x86_64_calls_up_to(highest: int) -> list[str]:
    if os.uname().machine != "x86_64" or not UNISTD_64.exists():
        pytest.skip(f"needs x86_64 and its call numbers ({UNISTD_64}, from libc6-dev)")
    names = []
    for line in UNISTD_64.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "#define" and words[1].startswith("__NR_"):
            if int(words[2]) <= highest:
                names.append(words[1][len("__NR_"):])
    return names


def with_probe_root(probe_root, profile: dict | None):
    def edit(config):
        config["root"]["path"] = str(probe_root)
        if profile is not None:
            with_seccomp(profile)(config)

    return edit


def probe_calls(oci, bundle, probe_root, profile, *numbers: int) -> list[str]:
    script = "; ".join(f"syscall_probe {n}" for n in numbers)
    result = run(oci, bundle(["sh", "-c", script], edit=with_probe_root(probe_root, profile)))
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


def test_a_call_newer_than_any_the_profile_names_fails_with_enosys(oci, bundle, probe_root):
    names = [n for n in x86_64_calls_up_to(CLOSE_RANGE) if n != "sysfs"]
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
    # faccessat2(0, NULL, 0, 0): EFAULT from this kernel, without a filter
    assert probe_calls(oci, bundle, probe_root, None, FACCESSAT2) == ["errno 14"]
    assert probe_calls(oci, bundle, probe_root, profile, SYSFS, FACCESSAT2) == \
        ["errno 1", "errno 38"]  # unnamed but older: the default (EPERM); newer: ENOSYS


def test_with_a_default_that_allows_new_calls_are_not_stubbed(oci, bundle, probe_root):
    x86_64_calls_up_to(0)  # (skips off x86_64)
    assert probe_calls(oci, bundle, probe_root, DENY_MKDIR, FACCESSAT2) == ["errno 14"]


# --- argument filters --------------------------------------------------------


@pytest.mark.parametrize("arg", [
    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},  # PER_LINUX32
    {"index": 0, "value": 0xFF, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"},
    {"index": 0, "value": 0, "op": "SCMP_CMP_NE"},
], ids=["EQ", "MASKED_EQ", "NE"])
def test_an_argument_filter_denies_only_matching_calls(oci, bundle, arg):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": 13, "args": [arg]}]}
    script = "linux64 true; echo linux64=$?; linux32 true; echo linux32=$?"
    result = run(oci, bundle(["sh", "-c", script], edit=with_seccomp(profile)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["linux64=0", "linux32=1"]  # personality(0), personality(8)
    assert "Permission denied" in result.stderr  # EACCES, the rule's errnoRet


# --- podman's default profile ------------------------------------------------


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_podmans_default_profile_runs_a_shell(oci, bundle, nnp, uid):
    profile = podman_profile_for_bundles()
    result = run(oci, bundle(["sh", "-c", "echo ok; ls / > /dev/null && echo listed"],
                             edit=with_seccomp(profile, nnp, uid)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\nlisted\n"


def test_podmans_default_profile_denies_what_it_does_not_list(oci, bundle):
    profile = podman_profile_for_bundles()
    for rule in profile["syscalls"]:  # unlisted: the default action, ENOSYS
        rule["names"] = [n for n in rule["names"] if n not in ("mkdir", "mkdirat")]
    profile["syscalls"] = [rule for rule in profile["syscalls"] if rule["names"]]
    # chroot: without CAP_SYS_CHROOT, podman's profile returns EPERM
    script = "echo ok; mkdir /tmp/x; echo mkdir=$?; chroot / true; echo chroot=$?"
    result = run(oci, bundle(["sh", "-c", script], edit=with_seccomp(profile, False, 0)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "mkdir=1", "chroot=1"]
    assert "Function not implemented" in result.stderr  # defaultErrnoRet 38
    assert "Operation not permitted" in result.stderr


# --- exec ---------------------------------------------------------------------


@pytest.mark.parametrize("nnp, uid", PRIVILEGE_CASES)
def test_exec_runs_under_the_containers_filter(oci, bundle, nnp, uid):
    cid = running(oci, bundle(edit=with_seccomp(DENY_MKDIR, nnp, uid)))
    denied = oci.cmd("exec", cid, "mkdir", "/tmp/x")
    assert denied.returncode == 1, denied.stderr
    assert "Operation not permitted" in denied.stderr
    status = oci.cmd("exec", cid, "grep", "^Seccomp:", "/proc/self/status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.split() == ["Seccomp:", "2"]
    allowed = oci.cmd("exec", cid, "sh", "-c", "echo fine > /tmp/file && cat /tmp/file")
    assert (allowed.returncode, allowed.stdout) == (0, "fine\n"), allowed.stderr


def test_exec_with_a_process_file_runs_under_the_filter(oci, bundle, tmp_path):
    cid = running(oci, bundle(edit=with_seccomp(DENY_MKDIR)))
    process = {"args": ["mkdir", "/tmp/x"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"],
               "user": {"uid": 0, "gid": 0}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    result = oci.cmd("exec", "--process", str(path), cid)
    assert result.returncode == 1, result.stderr
    assert "Operation not permitted" in result.stderr


def test_exec_with_podmans_default_profile(oci, bundle):
    cid = running(oci, bundle(edit=with_seccomp(podman_profile_for_bundles(), False, 65534)))
    result = oci.cmd("exec", cid, "sh", "-c", "echo ok; id -u")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n65534\n"


# --- bad profiles ---------------------------------------------------------------


@pytest.mark.parametrize("profile, where", [
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]},
     "linux.seccomp.syscalls[0].action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_BOGUS"]},
     "linux.seccomp.architectures[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_BOGUS"}]}]},
     "linux.seccomp.syscalls[0].args[0].op"),
], ids=["default-action", "action", "architecture", "operator"])
def test_a_bad_profile_fails_create_and_leaves_nothing(oci, bundle, profile, where):
    b = bundle(edit=with_seccomp(profile))
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0, result.stdout
    if oci.name == "kubirun":
        assert where in result.stderr, result.stderr
    assert_nothing_left(oci, cid, b)
