"""``--explain``: a run, a create/start and an exec narrated on stderr, one
line per step, in the order the code does them; nothing when not asked."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT, kubirun

# What a run must narrate, in this order (each a regular expression).
RUN_STEPS = (
    r"kubirun/image/overlay\.py: mount +mount\('overlay', .*lowerdir=",
    r"unshare\(CLONE_NEWPID\)",
    r"(clone3|fork)\(",
    r"^kubirun/init\.py: step 1 +prctl\(PR_SET_PDEATHSIG, SIGKILL\)",
    r"^kubirun/init\.py: step 2 +unshare\(CLONE_NEWNS\|CLONE_NEWUTS\|CLONE_NEWIPC\|CLONE_NEWNET\)",
    r"^kubirun/ns/mounts\.py: _mount \(step 5\) +mount\('proc', 'ROOT/proc', 'proc', 0\)",
    r"^kubirun/init\.py: step 7 ",
    r"^kubirun/init\.py: step 9 ",
    r"pivot_root\('\.', '\.'\)",
    r"umount2\('\.', MNT_DETACH\)",
    r"^kubirun/ns/rootfs\.py: _mask \(step 10\) +mount\('/dev/null', '/proc/keys'",
    r"^kubirun/init\.py: step 11 +sethostname\(",
    r"^kubirun/init\.py: step 12 ",
    r"^kubirun/init\.py: step 15 +close_range\(3, ",
    r"seccomp\(SECCOMP_SET_MODE_FILTER, ",
    r"prctl\(PR_CAPBSET_DROP, n\) for \d+ of \d+ capabilities",
    r"setuid\(0\)",
    r"capset\(effective=0x[0-9a-f]+, ",
    r"^kubirun/process\.py: exec_program \(step 18\) +execveat\(.*execve\('/bin/true', \['true'\]\)",
)


def _in_order(lines: list[str], patterns) -> list[str]:
    """The patterns not found in order (each after the previous one's line)."""
    missing, at = [], 0
    for pattern in patterns:
        found = next((i for i in range(at, len(lines)) if re.search(pattern, lines[i])), None)
        if found is None:
            missing.append(pattern)
        else:
            at = found + 1
    return missing


def test_explain_narrates_a_run_from_fork_to_execve_in_order(busybox_tarball):
    result = kubirun("run", "--explain", "--network", "none", "--memory", "16m",
                     str(busybox_tarball), "--", "true")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not _in_order(lines, RUN_STEPS), (_in_order(lines, RUN_STEPS), result.stderr)
    # The cgroup's limit is written by the runtime once the init was told
    # to join (runc's Set after its Apply), while the init finishes, and
    # before the program runs.
    limit = next(i for i, line in enumerate(lines)
                 if re.search(r"write\('[^']*memory\.(max|limit_in_bytes)', '16777216'\)", line))
    assert limit < next(i for i, line in enumerate(lines) if "execve('/bin/true'" in line)
    # Plain when stderr is not a terminal; every line says why.
    assert "\033[" not in result.stderr
    assert all("  # " in line for line in lines), [line for line in lines if "  # " not in line]


def test_a_run_without_explain_says_nothing_on_stderr(busybox_tarball):
    result = kubirun("run", "--network", "none", str(busybox_tarball), "--", "true")
    assert result.returncode == 0 and result.stderr == ""


def test_explain_is_in_colour_on_a_terminal(busybox_tarball):
    import threading

    master, slave = os.openpty()
    out = bytearray()

    def drain() -> None:  # a pty's buffer is small: read while it runs
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                return
            if not chunk:
                return
            out.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        result = subprocess.run([str(KUBIRUN_SCRIPT), "run", "--explain", "--network", "none",
                                 str(busybox_tarball), "--", "true"], stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    assert result.returncode == 0
    assert b"\033[1;36mpivot_root('.', '.')" in out


def test_explain_narrates_create_until_it_waits_and_start_the_rest(tmp_path, busybox_dir):
    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["true"])
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/explain-{os.getpid()}"
    (tmp_path / "config.json").write_text(json.dumps(config))
    root = ["--root", str(tmp_path / "state")]
    with open(tmp_path / "err", "w") as err:  # the container keeps create's stderr
        created = subprocess.run([str(KUBIRUN_SCRIPT), *root, "create", "--explain", "--bundle",
                                  str(tmp_path), "c1"], stdout=subprocess.DEVNULL, stderr=err,
                                 stdin=subprocess.DEVNULL, timeout=30)
    try:
        assert created.returncode == 0, (tmp_path / "err").read_text()
        waiting = (tmp_path / "err").read_text()
        assert "kubirun/init.py: step 14 " in waiting and "step 15" not in waiting
        assert kubirun(*root, "start", "c1").returncode == 0
        deadline = time.monotonic() + 30
        while "execve('/bin/true'" not in (tmp_path / "err").read_text():
            assert time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.05)
        assert not _in_order((tmp_path / "err").read_text().splitlines(), (
            r"step 2 ", r"step 9 ", r"pivot_root", r"step 14 ", r"step 15 ", r"setuid\(0\)",
            r"execve\('/bin/true'"))
    finally:
        kubirun(*root, "delete", "--force", "c1")


def test_explain_narrates_an_exec_joining_the_containers_namespaces(busybox_tarball):
    server = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--network", "none", "--name",
                               "explained", str(busybox_tarball), "--", "sleep", "60"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            result = kubirun("exec", "--explain", "explained", "true")
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result.returncode == 0, result.stderr
        assert not _in_order(result.stderr.splitlines(), (
            r"setns\(pid, CLONE_NEWPID\)", r"setns\(network, CLONE_NEWNET\)",
            r"setns\(mount, CLONE_NEWNS\)", r"setuid\(0\)", r"execve\('/bin/true'")), result.stderr
    finally:
        kubirun("kill", "explained", "KILL")
        server.wait(timeout=30)
