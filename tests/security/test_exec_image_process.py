"""`exec` into a container run from an image starts from that container's
process, as `docker exec` does: its capabilities (docker's default set, not
the runtime's own), user, environment and working directory.  Before, an
exec'd process got every capability kubirun had (CAP_SYS_ADMIN included:
`mount -o remount,rw /sys` worked from it) and ran as root in /."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, kubirun


@pytest.fixture
def image_container(busybox_tarball):
    name = "execme"
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", name, "-u", "nobody",
                             "-e", "FOO=bar", "-w", "/tmp", str(busybox_tarball), "--",
                             "sleep", "60"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while '"running"' not in kubirun("state", name).stdout:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the container did not start"
        time.sleep(0.05)
    yield name
    kubirun("kill", name, "KILL")
    proc.wait(timeout=20)


def _status_field(text: str, field: str) -> list[str]:
    return [line.split()[-1] for line in text.splitlines() if line.startswith(field)]


def test_exec_gets_the_containers_capabilities_not_the_runtimes(image_container):
    result = kubirun("exec", image_container, "sh", "-c",
                     "grep -h CapEff /proc/1/status /proc/self/status;"
                     " grep -h CapBnd /proc/1/status /proc/self/status")
    assert result.returncode == 0, result.stderr
    effective = _status_field(result.stdout, "CapEff")
    bounding = _status_field(result.stdout, "CapBnd")
    assert bounding[0] == bounding[1], result.stdout
    assert int(bounding[1], 16) & (1 << 21) == 0, "CAP_SYS_ADMIN in the exec'd process's bounding set"
    assert effective[1] == effective[0] == "0000000000000000", result.stdout  # user nobody


def test_exec_runs_as_the_containers_user_in_its_directory_with_its_environment(image_container):
    result = kubirun("exec", image_container, "sh", "-c", 'id -un; pwd; echo "$FOO"; echo "$HOSTNAME"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nobody", "/tmp", "bar", image_container]


def test_exec_flags_still_override_the_containers_process(image_container):
    result = kubirun("exec", "-u", "0", "--cwd", "/", "-e", "FOO=baz", image_container, "sh", "-c",
                     'id -u; pwd; echo "$FOO"; mount -o remount,rw /sys && echo remounted')
    assert result.stdout.split() == ["0", "/", "baz"], (result.stdout, result.stderr)
