"""`kubirun run IMAGE` runs its program under a seccomp filter, as `docker
run` and `podman run` do: the calls that reach past the container (keyrings,
namespaces, kernel modules, the clock, BPF...) fail with EPERM unless the
container holds the capability they ask for; `--security-opt` replaces the
profile or turns it off.  Before, an image run had no filter at all
(`Seccomp: 0`), whatever the README said."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, kubirun

# x86_64 numbers of the calls probed (asm/unistd_64.h)
KEYCTL, UNSHARE, CLONE3, ADD_KEY, USERFAULTFD = 250, 272, 435, 248, 323
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38


def run(image, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return kubirun("run", *options, str(image), "--", *args)


def probe(root, *calls: tuple[int, ...], options: tuple[str, ...] = ()) -> list[str]:
    """What each call answered ("ok RESULT" or "errno N"), in one container."""
    if os.uname().machine != "x86_64":
        pytest.skip("the probed call numbers are x86_64's")
    script = "; ".join("syscall_probe " + " ".join(str(a) for a in call) for call in calls)
    result = run(root, "sh", "-c", script, options=options)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_an_image_run_has_a_seccomp_filter(busybox_tarball):
    result = run(busybox_tarball, "grep", "^Seccomp:", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "2"]


def test_seccomp_unconfined_runs_without_one(busybox_tarball):
    result = run(busybox_tarball, "grep", "^Seccomp:", "/proc/self/status",
                 options=("--security-opt", "seccomp=unconfined"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "0"]


def test_the_default_profile_denies_keyrings_new_namespaces_and_userfaultfd(probe_root):
    calls = [(KEYCTL, 0), (ADD_KEY,), (UNSHARE, CLONE_NEWUSER), (USERFAULTFD,)]
    assert probe(probe_root, *calls) == [f"errno {EPERM}"] * 4
    unconfined = probe(probe_root, *calls, options=("--security-opt", "seccomp=unconfined"))
    assert unconfined[2] == "ok 0", unconfined  # the kernel itself lets root in the container unshare


def test_clone3_fails_with_enosys_so_the_c_library_forks_with_clone(probe_root):
    assert probe(probe_root, (CLONE3,)) == [f"errno {ENOSYS}"]
    result = run(probe_root, "sh", "-c", "sleep 0 & wait $! && echo forked")
    assert (result.returncode, result.stdout) == (0, "forked\n"), result.stderr


def test_the_program_still_does_everyday_things(busybox_tarball):
    script = ("mkdir /tmp/d && echo x > /tmp/d/f && ln -s f /tmp/d/l && cat /tmp/d/l && "
              "chown 65534 /tmp/d/f && su -s /bin/sh nobody -c 'id -u' && "
              "ps -o pid,comm | grep -c ps && date +%Y >/dev/null && echo done")
    result = run(busybox_tarball, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["x", "65534", "1", "done"]


def test_a_runtime_spec_profile_file_replaces_the_default(probe_root, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    options = ("--security-opt", f"seccomp={profile}")
    result = run(probe_root, "sh", "-c", "mkdir /tmp/x || echo denied", options=options)
    assert (result.returncode, result.stdout) == (0, "denied\n"), result.stderr
    assert "Permission denied" in result.stderr  # its errnoRet, 13
    # the default's denials are gone with it
    assert probe(probe_root, (UNSHARE, CLONE_NEWUSER), options=options) == ["ok 0"]


def test_a_docker_format_profile_applies_the_rules_for_the_containers_capabilities(
        busybox_tarball, tmp_path):
    # An image run has docker's default capabilities: no CAP_SYS_ADMIN.
    profile = tmp_path / "docker.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "comment": "applies here"},
            {"names": ["unlink", "unlinkat"], "action": "SCMP_ACT_ERRNO",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}, "comment": "does not"},
        ]}))
    script = "mkdir /tmp/x || echo mkdir-denied; touch /tmp/f && rm /tmp/f && echo rm-ok"
    result = run(busybox_tarball, "sh", "-c", script, options=("--security-opt", f"seccomp={profile}"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mkdir-denied", "rm-ok"]


def test_no_new_privileges(busybox_tarball):
    result = run(busybox_tarball, "grep", "^NoNewPrivs:", "/proc/self/status",
                 options=("--security-opt", "no-new-privileges"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NoNewPrivs:", "1"]


@pytest.mark.parametrize("option, says", [
    ("seccomp=/no/such/profile.json", "cannot read it: No such file or directory"),
    ("seccomp={tmp}/bad.json", "malformed JSON"),
    ("seccomp={tmp}/action.json", "unknown action 'SCMP_ACT_BOGUS'"),
    ("apparmor=my-profile", "expected seccomp=unconfined"),
], ids=["missing", "malformed", "bad-action", "apparmor"])
def test_a_bad_security_opt_is_one_clear_line_and_leaves_nothing(busybox_tarball, tmp_path,
                                                                  private_store, option, says):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "action.json").write_text('{"defaultAction": "SCMP_ACT_BOGUS"}')
    result = run(busybox_tarball, "true", options=("--security-opt", option.format(tmp=tmp_path)))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kubirun: "), result.stderr
    assert says in result.stderr and "internal error" not in result.stderr, result.stderr
    # (private_store checks that no container directory is left)


def test_exec_into_an_image_run_gets_its_filter(busybox_tarball):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", "filtered", str(busybox_tarball),
                             "--", "sleep", "60"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while '"running"' not in kubirun("state", "filtered").stdout:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.05)
        result = kubirun("exec", "filtered", "sh", "-c",
                         "grep ^Seccomp: /proc/self/status; unshare -U true || echo denied")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["Seccomp:", "2", "denied"]
    finally:
        kubirun("kill", "filtered", "KILL")
        proc.wait(timeout=20)
