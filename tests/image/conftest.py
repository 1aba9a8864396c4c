"""Fixtures for the image tests: the demo image as a base layer, a check
that no overlay outlives its test, and images made by real tools (podman,
skopeo, umoci) with private configuration."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import kubirun



def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture(autouse=True)
def no_mount_left(tmp_path) -> Iterator[None]:
    """Every overlay a test makes is gone when it ends (unmounted here as a
    last resort, so that one failure does not leak into the session)."""
    yield
    left = mounts_under(tmp_path)
    for target in reversed(left):
        subprocess.run(["umount", "-l", target], check=False)
    assert not left, f"mounts left behind: {left}"


@pytest.fixture(scope="session")
def base_tar(busybox_tarball) -> bytes:
    """The demo image as an uncompressed layer: a base that runs."""
    return gzip.decompress(busybox_tarball.read_bytes())


def run(image, *command: str, options: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """``kubirun run [OPTIONS] IMAGE -- COMMAND``."""
    return kubirun("run", *options, str(image), *(["--", *command] if command else []), **kwargs)


def ok(image, *command: str, options: tuple[str, ...] = ()) -> str:
    result = run(image, *command, options=options)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- images made by tools no one here wrote ------------------------------------------

def _need(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make test-deps installs them)")


@pytest.fixture(scope="session")
def host_paths():
    """Host paths podman and skopeo create whatever they are told
    (/var/lib/containers/cache), removed at the end if they were absent."""
    from tests.engines.harness import HostPaths

    paths = HostPaths()
    yield paths
    left = paths.restore()
    assert not left, f"image tools left host paths behind: {left}"


@pytest.fixture(scope="session")
def tool_images(tmp_path_factory, busybox_tarball, host_paths) -> dict[str, Path]:
    """``podman save`` of the demo image imported into a private podman:
    a docker-archive and an oci-archive."""
    _need("podman")
    from tests.engines.harness import IMAGE, PodmanSetup

    base = tmp_path_factory.mktemp("podman")
    setup = PodmanSetup(base / "engine")
    try:
        setup.import_image(busybox_tarball)
        made = {}
        for fmt, name in (("docker-archive", "docker.tar"), ("oci-archive", "oci.tar")):
            done = setup.podman("save", "--format", fmt, "-o", str(base / name), IMAGE, timeout=120)
            assert done.returncode == 0, done.stderr
            made[fmt] = base / name
    finally:
        problems = setup.teardown()
    assert not problems, problems
    return made


def tool_env(base: Path) -> dict[str, str]:
    """skopeo with podman's private configuration files, nothing of the host's."""
    from tests.engines.harness import engine_environment

    (base / "tmp").mkdir(exist_ok=True)
    (base / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    (base / "registries.conf").write_text("unqualified-search-registries = []\n")
    return {**engine_environment(), "TMPDIR": str(base / "tmp"),
            "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf")}


@pytest.fixture(scope="session")
def skopeo_layout(tmp_path_factory, tool_images) -> Path:
    """``skopeo copy oci-archive:… oci:DIR:busybox``: an OCI layout directory."""
    _need("skopeo")
    base = tmp_path_factory.mktemp("skopeo")
    layout = base / "layout"
    done = subprocess.run(
        ["skopeo", "--policy", str(base / "policy.json"), "copy",
         f"oci-archive:{tool_images['oci-archive']}", f"oci:{layout}:busybox"],
        env=tool_env(base), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return layout


@pytest.fixture(scope="session")
def umoci_layout(tmp_path_factory, busybox_tarball) -> Path:
    """An OCI layout made by umoci: tag ``v1`` the demo image plus /data and
    a setuid copy of busybox; tag ``v2`` one more layer that deletes
    /data/a (a whiteout) and the directory /gone, and adds /data/c."""
    _need("umoci")
    base = tmp_path_factory.mktemp("umoci")
    layout = base / "layout"

    def umoci(*args: str) -> None:
        done = subprocess.run(["umoci", *args], capture_output=True, text=True, timeout=120,
                              check=False, env={**os.environ, "TMPDIR": str(base)})
        assert done.returncode == 0, done.stderr

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:v1")
    umoci("unpack", "--image", f"{layout}:v1", str(base / "b1"))
    root = base / "b1" / "rootfs"
    subprocess.run(["tar", "--numeric-owner", "-xzf", str(busybox_tarball), "-C", str(root)],
                   check=True)
    (root / "data").mkdir()
    for name in "ab":
        (root / "data" / name).write_text(name + "\n")
    (root / "gone").mkdir()
    (root / "gone" / "x").write_text("x\n")
    shutil.copy(root / "bin" / "busybox", root / "bin" / "suid")
    os.chmod(root / "bin" / "suid", 0o4755)
    umoci("repack", "--image", f"{layout}:v1", str(base / "b1"))
    umoci("unpack", "--image", f"{layout}:v1", str(base / "b2"))
    root = base / "b2" / "rootfs"
    (root / "data" / "a").unlink()
    shutil.rmtree(root / "gone")
    (root / "data" / "c").write_text("c\n")
    umoci("repack", "--image", f"{layout}:v2", str(base / "b2"))
    umoci("config", "--image", f"{layout}:v2", "--config.env", "MADE_BY=umoci",
          "--config.workingdir", "/data")
    return layout
