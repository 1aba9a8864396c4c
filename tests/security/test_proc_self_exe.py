"""CVE-2019-5736 through ``#!/proc/self/exe``: until its last ``execve``, a
process kubirun sets up (an init, an ``exec`` process) is the runtime's own
Python interpreter, so ``/proc/self/exe`` is the host's Python binary.  A
container program that is ``#!/proc/self/exe`` (or /proc/self/exe itself)
would have the kernel start that host binary inside the container, dumpable,
and any container process could open it through /proc/PID/exe and, once it
exits, write to it: runc's original exploit, with our interpreter as the
prize.  kubirun's answer is the exec helper (``kubirun/_native/exec_helper.c``,
exec'd from a sealed memfd), so that path leads to a sealed copy of the
helper, which refuses to run.

The root here has a libc (the host's loader and the libraries of its
Python), as any real image does: without one the kernel could not start the
host's Python inside at all.  The attacker (attacker.c, ``exe`` mode) runs in
the container, keeps /proc/PID/exe of every process it sees, and reports
any that is the host's interpreter (same device and inode) or that opens for
writing, while it runs and after it exited."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT
from tests.security.test_exec_process import _bundle, attacker  # noqa: F401 - the fixture

ROUNDS = 15
REFUSAL = "kubirun-exec: this is kubirun's exec helper, not a program to run"


def runtime_interpreter() -> str:
    """The host binary that runs kubirun: its launcher's interpreter."""
    with open(KUBIRUN_SCRIPT) as f:
        shebang = f.readline()[2:].split()[0]
    return os.path.realpath(shebang)


@pytest.fixture(scope="module")
def root_with_libc(busybox_dir, tmp_path_factory):
    """busybox plus the loader and libraries of the runtime's interpreter,
    and the target: a script whose interpreter is /proc/self/exe."""
    root = tmp_path_factory.mktemp("libc") / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    libraries = subprocess.run(["ldd", runtime_interpreter()], capture_output=True, text=True,
                               check=True).stdout
    for path in re.findall(r"(/\S+\.so[.\d]*)", libraries):
        real = os.path.realpath(path)
        for name in {path, os.path.join(os.path.dirname(path), os.path.basename(real))}:
            target = root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(real, target)
    target = root / "target"
    target.write_text("#!/proc/self/exe\nimport time\ntime.sleep(3)\n")
    target.chmod(0o755)
    return root


def _attack(tmp_path, root, attacker, actions) -> list[str]:  # noqa: F811
    interpreter = os.stat(runtime_interpreter())
    state = ["--root", str(tmp_path / "state")]
    victim = _bundle(tmp_path / "victim", root,
                     ["/attacker", "exe", "20", str(interpreter.st_dev), str(interpreter.st_ino)],
                     attacker)
    out_path = tmp_path / "attack.out"
    names = ["victim"]
    try:
        with open(out_path, "w") as out:
            started = subprocess.run([str(KUBIRUN_SCRIPT), *state, "run", "-d", "--bundle", victim,
                                      "victim"], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, timeout=30)
        assert started.returncode == 0, out_path.read_text()
        deadline = time.monotonic() + 10
        while "ready" not in out_path.read_text():
            assert time.monotonic() < deadline, "the attacker did not start"
            time.sleep(0.02)
        pid = json.loads(subprocess.run([str(KUBIRUN_SCRIPT), *state, "state", "victim"],
                                        capture_output=True, text=True).stdout)["pid"]
        actions(state, pid, names)
        deadline = time.monotonic() + 30
        while "done" not in out_path.read_text():
            assert time.monotonic() < deadline, "the attacker did not finish"
            time.sleep(0.1)
    finally:
        for name in names:
            subprocess.run([str(KUBIRUN_SCRIPT), *state, "delete", "--force", name], timeout=30,
                           capture_output=True)
    lines = out_path.read_text().splitlines()
    assert any(line.startswith("saw ") for line in lines), "the attacker never saw a process"
    return [line for line in lines if line.split()[0] not in ("ready", "saw", "done")]


def test_exec_of_a_proc_self_exe_script_never_runs_the_host_interpreter(
        tmp_path, root_with_libc, attacker):  # noqa: F811
    def exec_target(state, _pid, _names):
        for program in ["/target", "/proc/self/exe"] * ROUNDS:
            result = subprocess.run([str(KUBIRUN_SCRIPT), *state, "exec", "victim", program],
                                    capture_output=True, text=True, timeout=30)
            # the helper, not Python, is what /proc/self/exe leads to
            assert (result.returncode, result.stderr.strip()) == (126, REFUSAL)

    assert _attack(tmp_path, root_with_libc, attacker, exec_target) == []


def test_an_init_running_a_proc_self_exe_script_never_runs_the_host_interpreter(
        tmp_path, root_with_libc, attacker):  # noqa: F811
    """`run` of the script, by inits that join the attacker's PID namespace."""
    def run_target(state, pid, names):
        def join_pid_namespace(config):
            config["linux"]["namespaces"] = [
                dict(ns, path=f"/proc/{pid}/ns/pid") if ns["type"] == "pid" else ns
                for ns in config["linux"]["namespaces"]]
        for i in range(ROUNDS):
            name = f"joiner{i}"
            names.append(name)
            bundle = _bundle(tmp_path / name, root_with_libc, ["/target"], edit=join_pid_namespace)
            result = subprocess.run([str(KUBIRUN_SCRIPT), *state, "run", "--bundle", bundle, name],
                                    capture_output=True, text=True, timeout=30,
                                    stdin=subprocess.DEVNULL)
            assert (result.returncode, result.stderr.strip()) == (126, REFUSAL)

    assert _attack(tmp_path, root_with_libc, attacker, run_target) == []


def test_the_helper_is_a_sealed_memfd(tmp_path, busybox_dir):
    """What /proc/PID/exe of a process between the runtime and the program
    is: a memfd nobody can write to (seen from the host here)."""
    probe = ("import os, fcntl; from kubirun import _native; fd = _native.exec_helper_fd();"
             "print(os.readlink(f'/proc/self/fd/{fd}'), fcntl.fcntl(fd, fcntl.F_GET_SEALS));"
             "w = os.open(f'/proc/self/fd/{fd}', os.O_WRONLY)\n"
             "try:\n os.write(w, b'x'); print('written')\n"
             "except PermissionError: print('EPERM')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    *link, seals, write = result.stdout.split()
    assert link[0] == "/memfd:kubirun-exec", link
    assert int(seals) & 0x1 and int(seals) & 0x8  # F_SEAL_SEAL, F_SEAL_WRITE
    assert write == "EPERM"


def test_inits_and_execs_of_the_library_fork_server_never_run_the_host_interpreter(
        tmp_path, root_with_libc, attacker):  # noqa: F811
    """kubirun.api: the fork server forks the inits (joining the attacker's
    PID namespace) and the exec'd processes."""
    from kubirun.api import Runtime, Stdio

    def through_the_library(state, pid, names):
        def join_pid_namespace(config):
            config["linux"]["namespaces"] = [
                dict(ns, path=f"/proc/{pid}/ns/pid") if ns["type"] == "pid" else ns
                for ns in config["linux"]["namespaces"]]
        with Runtime(root=state[1]) as runtime:
            for i in range(ROUNDS):
                name = f"served{i}"
                names.append(name)
                bundle = _bundle(tmp_path / name, root_with_libc, ["/target"], edit=join_pid_namespace)
                box = runtime.create(name, bundle, stdio=Stdio(stderr=Stdio.PIPE))
                box.start()
                assert box.stderr.read().decode().strip() == REFUSAL
                assert box.wait(timeout=30).code == 126
                process = runtime.load("victim").exec(["/target"], stdio=Stdio(stderr=Stdio.PIPE))
                assert process.stderr.read().decode().strip() == REFUSAL
                assert process.wait(timeout=30).code == 126

    assert _attack(tmp_path, root_with_libc, attacker, through_the_library) == []
