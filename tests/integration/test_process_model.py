"""The process model: one fork from the CLI's own interpreter, a
non-dumpable init, nothing heavy imported on the way to ``execve``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kubirun import _native
from kubirun.ns.namespaces import fork_into_new_pid_namespace
from tests.conftest import KUBIRUN_SCRIPT, REPO, kubirun

PR_GET_DUMPABLE = 3


def test_child_is_pid_1_and_born_non_dumpable():
    read_end, write_end = os.pipe()
    dumpable_before = _native.prctl(PR_GET_DUMPABLE)
    pid = fork_into_new_pid_namespace()
    if pid == 0:
        os.write(write_end, f"{os.getpid()} {_native.prctl(PR_GET_DUMPABLE)}".encode())
        os._exit(0)
    os.close(write_end)
    try:
        own_pid, dumpable = os.read(read_end, 100).decode().split()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
        _native.prctl(4, dumpable_before)  # PR_SET_DUMPABLE: restore pytest's own state
    assert own_pid == "1"
    assert dumpable == "0"


def test_runtime_returns_to_its_own_pid_namespace():
    before = os.readlink("/proc/self/ns/pid_for_children")
    dumpable_before = _native.prctl(PR_GET_DUMPABLE)
    pid = fork_into_new_pid_namespace()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    _native.prctl(4, dumpable_before)
    assert os.readlink("/proc/self/ns/pid_for_children") == before


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_no_second_interpreter_is_started(busybox_dir, tmp_path):
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(log),
                    str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "/bin/true"],
                   check=True, capture_output=True)
    execs = [line for line in log.read_text().splitlines() if "execve(" in line and "= 0" in line]
    assert len(execs) == 2, execs  # the kubirun script, then the container's program
    assert '"/bin/true"' in execs[1]


def test_start_path_imports_neither_click_nor_pyroute2(busybox_dir):
    result = subprocess.run([sys.executable, "-X", "importtime", str(KUBIRUN_SCRIPT), "run",
                             str(busybox_dir), "--", "/bin/true"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "pyroute2" not in imported
    assert "click" not in imported
    assert "tarfile" not in imported  # a directory root unpacks nothing


def test_console_script_works_with_an_empty_environment(busybox_dir, private_store):
    result = subprocess.run([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "/bin/echo", "ok"],
                            # no PATH (engines call runtimes so); a private state root, and
                            # no bridge in the host's namespace
                            env={"KUBIRUN_STORE": str(private_store), "KUBIRUN_NETWORK": "none",
                                 "KUBIRUN_ROOT": os.environ["KUBIRUN_ROOT"]},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_shebang_is_an_absolute_interpreter():
    first_line = KUBIRUN_SCRIPT.read_text().splitlines()[0]
    assert first_line.startswith("#!/")
    assert os.access(first_line[2:].split()[0], os.X_OK)


def _every_command_line() -> list[list[str]]:
    from kubirun.cli.table import COMMANDS, GROUPS

    lines = [[name] for name in COMMANDS]
    for group, (_, members) in GROUPS.items():
        lines += [[group]] + [[group, name] for name in members]
    return lines


@pytest.mark.parametrize("words", _every_command_line(), ids=" ".join)
def test_help_on_every_command_is_in_runcs_layout(words):
    # kubirun's own commands (image runs, demo, images, gc, bundle) too
    result = kubirun(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"NAME:\n   kubirun {' '.join(words)} - ")
    assert f"\n\nUSAGE:\n   kubirun {' '.join(words)}" in result.stdout


def test_help_does_not_import_click():
    # help is generated from the table: one interpreter start, not click's import too
    result = subprocess.run([sys.executable, "-X", "importtime", str(KUBIRUN_SCRIPT), "state", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NAME:")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "click" not in imported


def test_version_is_runc_like():
    result = kubirun("--version")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kubirun version ")
    assert lines[1].startswith("spec: 1.")


def test_sigpipe_is_default_again_in_the_container(busybox_dir):
    # Python ignores SIGPIPE; the container's program must not inherit that.
    result = kubirun("run", str(busybox_dir), "--", "sh", "-c", "grep SigIgn /proc/self/status")
    ignored = int(result.stdout.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), "SIGPIPE is ignored inside the container"


def test_demo_ps_shows_both_sides(busybox_tarball):
    result = kubirun("demo", "ps", "--image", str(busybox_tarball))
    assert result.returncode == 0, result.stderr
    host, _, inside = result.stdout.partition("=== ps aux inside a container")
    assert "=== ps aux on the host ===" in host
    inside_rows = [line for line in inside.splitlines() if line.strip()[:1].isdigit()]
    assert inside_rows and inside_rows[0].split()[0] == "1"
    assert "ps aux" in inside_rows[0]


def test_demo_ps_without_a_checkout_makes_its_root_from_the_hosts_busybox(tmp_path, private_store):
    # As after `pip install`: the package alone, no rootfs/ beside it.
    if not any(os.path.exists(p) for p in ("/bin/busybox", "/usr/bin/busybox")):
        pytest.skip("no busybox on the host (apt install busybox-static)")
    shutil.copytree(REPO / "kubirun", tmp_path / "site" / "kubirun", symlinks=True)
    result = subprocess.run([sys.executable, "-c", "from kubirun.cli import main; main()",
                             "demo", "ps"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    inside = result.stdout.partition("=== ps aux inside a container")[2]
    assert [line.split()[0] for line in inside.splitlines() if line.strip()[:1].isdigit()] == ["1"]
    assert (private_store / "demo" / "busybox" / "bin" / "busybox").exists()


def test_demo_namespaces_shows_every_namespace_differ(busybox_tarball):
    result = kubirun("demo", "namespaces", "--image", str(busybox_tarball))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("ns ")}
    assert len(rows) == 6 and all(line.endswith("*") for line in rows.values()), rows
    # The network links differ unless the host has only lo too (a bare VM).
    same_links = sorted(os.listdir("/sys/class/net")) == ["lo"]
    assert f"{10 if same_links else 11} of 11 answers differ" in result.stdout
    pid_1 = next(line for line in result.stdout.splitlines() if line.startswith("pid-1 "))
    assert pid_1.split()[-2:] == ["sh", "*"]  # inside, PID 1 is the demo's own shell


def test_demo_cgroups_shows_the_oom_killer(busybox_tarball):
    from pathlib import Path

    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    has_memory = Path("/sys/fs/cgroup/memory").is_dir() or (
        v2.exists() and "memory" in v2.read_text().split())
    if not has_memory:
        pytest.skip("no memory controller here")
    result = kubirun("demo", "cgroups", "--image", str(busybox_tarball))
    assert result.returncode == 0, result.stderr
    assert "limit 16777216" in result.stdout and "exit status: 137" in result.stdout


def test_the_program_gets_default_signal_dispositions_whatever_its_caller_ignored(busybox_dir):
    # A CI job, nohup or a background job ignores SIGINT, SIGQUIT or SIGHUP,
    # and an ignored disposition survives execve: not into the container.
    import signal

    def ignore_some():
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        # and 32, the C library's own, which only a raw rt_sigaction reaches
        number = {"x86_64": 13, "aarch64": 134}.get(os.uname().machine)
        if number is not None:
            import ctypes

            ignore = (ctypes.c_long * 4)(1, 0, 0, 0)  # SIG_IGN
            ctypes.CDLL(None).syscall(number, 32, ctypes.byref(ignore), None, 8)

    result = subprocess.run([str(KUBIRUN_SCRIPT), "run", str(busybox_dir), "--", "grep", "-E",
                             "SigIgn|SigBlk", "/proc/self/status"], capture_output=True,
                            text=True, timeout=60, preexec_fn=ignore_some)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]
