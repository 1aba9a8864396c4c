"""``kubirun.api``'s image containers and pod sandboxes: ``run_image``
(the image's process completed as ``kubirun run`` does, detached, its
store directory owned by its state) and ``sandbox`` (a PID 1 that only
holds namespaces for a pod's containers to join)."""
from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TEST_CGROUP_PARENT, remove_cgroup_parent
from tests.image.builders import docker_archive

KUBIRUN = str(REPO / ".venv" / "bin" / "kubirun")


def _mounts_under(path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture
def runtime(tmp_path):
    from kubirun.api import Runtime

    parent = f"{TEST_CGROUP_PARENT}/api-images"
    with Runtime(root=str(tmp_path / "root"), store=str(tmp_path / "store"),
                 cgroup_parent=parent) as rt:
        try:
            yield rt
        finally:
            for container_id in rt.list():
                rt.load(container_id).delete(force=True)
            for target in reversed(_mounts_under(tmp_path)):
                subprocess.run(["umount", "-l", target], check=False)
            remove_cgroup_parent(parent)


@pytest.fixture
def app_image(tmp_path, busybox_tarball):
    """A docker archive of the busybox root with a config of its own."""
    return str(docker_archive(tmp_path / "app.tar", [gzip.decompress(busybox_tarball.read_bytes())],
                              config={"Env": ["GREETING=hello", "PATH=/bin:/usr/bin"],
                                      "WorkingDir": "/srv", "User": "nobody",
                                      "Entrypoint": ["sh", "-c"], "Cmd": ["echo default"],
                                      "StopSignal": "SIGQUIT", "Labels": {"tier": "web"}}))


def _output(box) -> tuple[str, str]:
    return box.stdout.read().decode(), box.stderr.read().decode()


def test_an_image_container_runs_with_the_images_env_workdir_user_and_entrypoint(runtime, app_image):
    from kubirun.api import ExitStatus, Stdio

    box = runtime.run_image(app_image, ['echo "$GREETING $EXTRA" $(pwd) $(id -un)'],
                            env={"EXTRA": "there"}, stdio=Stdio(stdout=Stdio.PIPE, stderr=Stdio.PIPE))
    assert _output(box) == ("hello there /srv nobody\n", "")
    assert box.wait(timeout=30) == ExitStatus(0)
    box.delete()


def test_the_images_cmd_runs_when_no_command_is_given(runtime, app_image):
    from kubirun.api import Stdio

    box = runtime.run_image(app_image, stdio=Stdio(stdout=Stdio.PIPE))
    assert box.stdout.read() == b"default\n"
    assert box.wait(timeout=30).code == 0
    box.delete()


def test_the_caller_overrides_the_images_workdir_user_and_entrypoint(runtime, app_image):
    from kubirun.api import Stdio

    box = runtime.run_image(app_image, ["-c", "echo $(pwd) $(id -u)"], entrypoint=["sh"],
                            workdir="/tmp", user="0", stdio=Stdio(stdout=Stdio.PIPE))
    assert box.stdout.read() == b"/tmp 0\n"
    assert box.wait(timeout=30).code == 0
    box.delete()


def test_an_image_containers_config_and_stop_signal_come_from_its_image(runtime, app_image):
    box = runtime.run_image(app_image, ["sleep 30"], name="configured")
    assert box.stop_signal == signal.SIGQUIT
    assert box.image_config["Labels"] == {"tier": "web"}
    # as read back by anyone from its state
    assert runtime.load("configured").stop_signal == signal.SIGQUIT
    box.delete(force=True)


def test_a_root_filesystem_tarball_has_sigterm_for_stop_signal(runtime, busybox_tarball):
    box = runtime.run_image(str(busybox_tarball), ["true"], start=False)
    assert box.state()["status"] == "created"
    assert box.stop_signal == signal.SIGTERM
    box.delete(force=True)


def test_deleting_an_image_container_leaves_nothing_in_the_store(runtime, busybox_tarball, tmp_path):
    box = runtime.run_image(str(busybox_tarball), ["sleep", "30"], name="tidy")
    assert os.listdir(tmp_path / "store" / "containers") == ["tidy"]
    assert _mounts_under(tmp_path / "store")  # its overlay
    box.delete(force=True)
    assert os.listdir(tmp_path / "store" / "containers") == []
    assert _mounts_under(tmp_path / "store") == []
    assert runtime.list() == []


def test_a_bind_mount_and_a_read_only_root(runtime, busybox_tarball, tmp_path):
    from kubirun.api import Stdio

    volume = tmp_path / "volume"
    volume.mkdir()
    box = runtime.run_image(str(busybox_tarball),
                            ["sh", "-c", "echo kept > /data/file; touch /rootfile || echo read-only"],
                            mounts=[{"destination": "/data", "type": "bind", "source": str(volume),
                                     "options": ["rbind", "rw"]}],
                            read_only=True, stdio=Stdio(stdout=Stdio.PIPE, stderr=Stdio.DEVNULL))
    assert box.stdout.read() == b"read-only\n"
    assert box.wait(timeout=30).code == 0
    box.delete()
    assert (volume / "file").read_text() == "kept\n"


def test_an_exec_into_an_image_container_runs_as_its_process(runtime, app_image):
    from kubirun.api import Stdio

    box = runtime.run_image(app_image, ["sleep 30"])
    process = box.exec(["sh", "-c", "echo $GREETING $(id -un)"], stdio=Stdio(stdout=Stdio.PIPE))
    assert process.stdout.read() == b"hello nobody\n"
    assert process.wait(timeout=30).code == 0
    box.delete(force=True)


def test_two_containers_of_one_sandbox_share_its_network_and_talk_over_localhost(runtime,
                                                                                 busybox_tarball):
    from kubirun.api import Stdio

    pod = runtime.sandbox("pod", hostname="podhost")
    pod_net = os.readlink(f"/proc/{pod.state()['pid']}/ns/net")
    server = runtime.run_image(str(busybox_tarball),
                               ["sh", "-c", "readlink /proc/self/ns/net; hostname;"
                                " nc -l -p 8080"],
                               # stdin open until the test closes it: busybox's nc ends
                               # at the end of its stdin, maybe before "hi" came
                               sandbox=pod, stdio=Stdio(stdin=Stdio.PIPE, stdout=Stdio.PIPE))
    assert server.stdout.readline().decode().strip() == pod_net
    assert server.stdout.readline() == b"podhost\n"
    client = runtime.run_image(str(busybox_tarball),
                               ["sh", "-c", "readlink /proc/self/ns/net; for i in $(seq 50); do"
                                " echo hi | nc 127.0.0.1 8080 && exit; sleep 0.1; done; exit 1"],
                               sandbox=pod, stdio=Stdio(stdout=Stdio.PIPE))
    assert client.stdout.readline().decode().strip() == pod_net
    assert client.wait(timeout=30).code == 0
    assert server.stdout.readline() == b"hi\n"
    server.stdin.close()
    assert server.wait(timeout=30).code == 0
    for box in (client, server):
        box.delete()
    pod.delete(force=True)
    assert runtime.list() == []


def test_a_sandbox_needs_no_image_and_ends_at_sigterm(runtime, tmp_path):
    from kubirun.api import ExitStatus

    pod = runtime.sandbox("lonely")
    assert pod.state()["status"] == "running"
    assert pod.image_config is None
    pod.kill(signal.SIGTERM)
    assert pod.wait(timeout=30) == ExitStatus(0)
    pod.delete()
    assert os.listdir(tmp_path / "store" / "containers") == []


def test_a_sandbox_refuses_a_network_of_the_containers_own(runtime, busybox_tarball):
    from kubirun.api import KubirunError

    pod = runtime.sandbox("strict")
    with pytest.raises(KubirunError, match="sandbox's"):
        runtime.run_image(str(busybox_tarball), ["true"], sandbox=pod, hostname="mine")
    pod.delete(force=True)


ORPHANING = """
import os, sys
from kubirun.api import Runtime
rt = Runtime(root=sys.argv[1], store=sys.argv[2], cgroup_parent=sys.argv[4])
rt.run_image(sys.argv[3], ["sleep", "60"], name="orphan")
os.kill(os.getpid(), 9)
"""


def test_delete_force_removes_what_a_killed_orchestrators_image_container_had(tmp_path,
                                                                             busybox_tarball):
    root, store = tmp_path / "root", tmp_path / "store"
    parent = f"{TEST_CGROUP_PARENT}/orphans"
    try:
        killed = subprocess.run([sys.executable, "-c", ORPHANING, str(root), str(store),
                                 str(busybox_tarball), parent], cwd=str(REPO), timeout=120,
                                capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert os.listdir(store / "containers") == ["orphan"]
        deleted = subprocess.run([KUBIRUN, "--root", str(root), "delete", "--force", "orphan"],
                                 env=dict(os.environ, KUBIRUN_STORE=str(store)),
                                 capture_output=True, text=True, timeout=60)
        assert deleted.returncode == 0, deleted.stderr
        assert os.listdir(store / "containers") == []
        assert _mounts_under(store) == []
        assert not (root / "orphan").exists()
    finally:
        for target in reversed(_mounts_under(tmp_path)):
            subprocess.run(["umount", "-l", target], check=False)
        subprocess.run([KUBIRUN, "--root", str(root), "delete", "--force", "orphan"],
                       capture_output=True, timeout=60)
        remove_cgroup_parent(parent)


def test_gc_leaves_a_live_detached_image_container_alone(runtime, busybox_tarball, tmp_path):
    box = runtime.run_image(str(busybox_tarball), ["sleep", "30"], name="alive")
    time.sleep(0.1)
    result = subprocess.run([KUBIRUN, "--root", runtime.root, "gc", "--store", runtime.store],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert box.state()["status"] == "running"
    assert os.listdir(tmp_path / "store" / "containers") == ["alive"]
    box.delete(force=True)


def test_the_readmes_example_orchestrator_runs_as_written(tmp_path, busybox_tarball):
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- example: orchestrator -->\n```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(block)
    parent = f"{TEST_CGROUP_PARENT}/example-pods"
    try:
        result = subprocess.run([sys.executable, str(tmp_path / "example.py"),
                                 str(busybox_tarball), str(tmp_path / "root"), parent],
                                env=dict(os.environ, KUBIRUN_STORE=str(tmp_path / "store")),
                                capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    finally:
        for target in reversed(_mounts_under(tmp_path)):
            subprocess.run(["umount", "-l", target], check=False)
        remove_cgroup_parent(parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["pod: ExitStatus(code=0, signal=None, oom_killed=False)",
                                          "server: served", "client: hello from web"]
    # a client that came before the server listened was restarted, and said so
    assert all("restarting" in line for line in result.stderr.splitlines())
    assert os.listdir(tmp_path / "root") == [] and os.listdir(tmp_path / "store" / "containers") == []


@pytest.mark.parametrize("image, options, message", [
    ("/nonexistent/image.tar", {}, "no such file or directory"),
    (None, {"user": "nosuchuser"}, "nosuchuser"),
    (None, {"network": "bridged"}, "expected none, host or bridge"),
])
def test_a_bad_image_container_is_one_error_and_leaves_nothing(runtime, busybox_tarball, tmp_path,
                                                              image, options, message):
    from kubirun.api import KubirunError

    with pytest.raises(KubirunError, match=message) as raised:
        runtime.run_image(image or str(busybox_tarball), ["true"], name="bad", **options)
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)
    assert runtime.list() == []
    assert os.listdir(tmp_path / "store" / "containers") == [] \
        if (tmp_path / "store" / "containers").exists() else True
    assert _mounts_under(tmp_path / "store") == []


def test_an_image_container_from_asyncio_runs_and_its_delete_empties_the_store(runtime,
                                                                               busybox_tarball,
                                                                               tmp_path):
    import asyncio

    from kubirun.api import Stdio

    async def main() -> tuple[bytes, int]:
        box = await runtime.run_image_async(str(busybox_tarball), ["sh", "-c", "echo hi"],
                                            stdio=Stdio(stdout=Stdio.PIPE))
        status = await box.wait_async()
        output = box.stdout.read()
        await box.delete_async()
        return output, status.code

    assert asyncio.run(main()) == (b"hi\n", 0)
    assert os.listdir(tmp_path / "store" / "containers") == []
    assert _mounts_under(tmp_path / "store") == []


def test_an_awaited_run_of_a_missing_image_raises_a_kubirun_error_and_leaves_nothing(runtime,
                                                                                     tmp_path):
    import asyncio

    from kubirun.api import KubirunError

    with pytest.raises(KubirunError):
        asyncio.run(runtime.run_image_async(str(tmp_path / "missing.tar"), ["true"]))
    assert runtime.list() == []
    assert os.listdir(tmp_path / "store" / "containers") == []
