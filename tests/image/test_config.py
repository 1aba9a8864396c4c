"""The image config applied to the container, and platform selection in
(nested) indexes."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import KUBIRUN_SCRIPT, kubirun
from tests.image import builders as b
from tests.image.conftest import ok, run

CONFIG = {
    "Entrypoint": ["/bin/echo", "ep"],
    "Cmd": ["cmd1", "cmd2"],
    "Env": ["FOO=from-image", "PATH=/usr/bin:/bin:/image-bin"],
    "WorkingDir": "/srv/app",
    "User": "nobody",
    "Labels": {"org.opencontainers.image.title": "demo", "maintainer": "someone"},
    "StopSignal": "SIGQUIT",
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
}


@pytest.fixture
def configured(tmp_path, base_tar):
    return b.oci_image(tmp_path / "configured.tar", [base_tar], CONFIG)


def test_entrypoint_and_cmd(configured):
    assert ok(configured) == "ep cmd1 cmd2\n"


def test_arguments_replace_cmd(configured):
    assert ok(configured, "x", "y") == "ep x y\n"


def test_entrypoint_option_replaces_entrypoint_and_cmd(configured):
    out = ok(configured, "-c", "echo $FOO; pwd; id -un", options=("--entrypoint", "/bin/sh"))
    assert out.splitlines() == ["from-image", "/srv/app", "nobody"]


def test_empty_entrypoint_option_runs_the_command_alone(configured):
    assert ok(configured, "echo", "alone", options=("--entrypoint", "")) == "alone\n"


def test_command_line_wins_over_env_workdir_and_user(configured):
    out = ok(configured, "-c", "echo $FOO $PATH; pwd; id -u",
             options=("--entrypoint", "/bin/sh", "-e", "FOO=mine", "-w", "/tmp", "-u", "0"))
    assert out.splitlines() == ["mine /usr/bin:/bin:/image-bin", "/tmp", "0"]


def test_no_config_means_sh(tmp_path, base_tar):
    image = b.oci_image(tmp_path / "bare.tar", [base_tar])
    result = run(image, input="echo $0\n")
    assert result.returncode == 0 and result.stdout == "/bin/sh\n", result.stderr


def test_labels_stop_signal_and_ports_become_annotations(configured, tmp_path):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", "annotated", "--entrypoint",
                             "/bin/sleep", str(configured), "--", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        state = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = kubirun("state", "annotated")
            if done.returncode == 0 and json.loads(done.stdout)["status"] == "running":
                state = json.loads(done.stdout)
                break
            time.sleep(0.05)
        assert state is not None
        assert state["annotations"] == {
            "org.opencontainers.image.title": "demo", "maintainer": "someone",
            "org.opencontainers.image.stopSignal": "SIGQUIT",
            "org.opencontainers.image.exposedPorts": "53/udp,8080/tcp",
        }
    finally:
        kubirun("kill", "annotated", "KILL")
        proc.communicate(timeout=30)


# --- platforms --------------------------------------------------------------------------------

@pytest.fixture
def multi_platform(tmp_path, base_tar):
    """index.json -> a nested index -> amd64 and arm64 manifests (both run
    here: the arm64 one is a busybox root too, with a marker file)."""
    oci = b.Oci()
    amd64 = oci.image([oci.layer(base_tar), oci.layer(b.tar_bytes([b.file("arch", b"amd64\n")]))])
    arm64 = oci.image([oci.layer(base_tar), oci.layer(b.tar_bytes([b.file("arch", b"arm64\n")]))],
                      arch="arm64")
    attestation = {**oci.image([oci.layer(b.tar_bytes([b.file("x", b"x")]))], arch="unknown",
                               os_name="unknown"),
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
    nested = oci.index([oci.with_platform(arm64, "arm64"), attestation,
                        oci.with_platform(amd64, "amd64")])
    return oci.write_tar(tmp_path / "multi.tar", [oci.named(nested, "multi")])


def host_arch() -> str:
    import platform

    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def test_the_host_platform_is_chosen(multi_platform):
    if host_arch() not in ("amd64", "arm64"):
        pytest.skip("neither amd64 nor arm64")
    assert ok(multi_platform, "cat", "/arch") == f"{host_arch()}\n"


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_platform_option_chooses(multi_platform, platform):
    # The marker file is read by the busybox of this host either way.
    assert ok(multi_platform, "cat", "/arch", options=("--platform", platform)) == \
        platform.split("/")[1] + "\n"


def test_unknown_platform_lists_what_there_is(multi_platform):
    result = run(multi_platform, "true", options=("--platform", "linux/s390x"))
    assert result.returncode != 0
    assert "linux/s390x" in result.stderr and "linux/amd64" in result.stderr \
        and "linux/arm64" in result.stderr, result.stderr


def test_platform_and_name_together(multi_platform):
    assert ok(f"{multi_platform}:multi", "cat", "/arch", options=("--platform", "linux/arm64")) == "arm64\n"


def test_platform_is_checked_against_a_single_image_config(tmp_path, base_tar):
    image = b.oci_image(tmp_path / "amd.tar", [base_tar])
    other = "linux/arm64" if host_arch() != "arm64" else "linux/amd64"
    result = run(image, "true", options=("--platform", other))
    assert result.returncode != 0 and "not " + other in result.stderr, result.stderr


def test_platform_on_a_directory_root_is_refused(busybox_dir):
    result = run(busybox_dir, "true", options=("--platform", "linux/amd64"))
    assert result.returncode != 0 and "root directory" in result.stderr
