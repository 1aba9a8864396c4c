"""Fixtures for the engine tests: real podman and containerd drive an OCI
runtime binary, runc or kubirun (see harness.py for how the host is kept
clean, and ENGINE_CALLS.md for what the engines call).

Set KUBIRUN_ENGINE_TRACE=FILE to have every runtime call (argv, cwd, the
caller, open fds, PATH and the environment's names) appended to FILE.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import runtimes
from tests.engines.harness import (
    VIEWS,
    Containerd,
    Ctr,
    HostPaths,
    Podman,
    PodmanSetup,
    trace_wrapper,
)
from tests.runtimes import CoveredUnified, unified_is_mounted
from tests.engines.cri import CriClient


def _need(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make test-deps installs them)")


@pytest.fixture(scope="session")
def engine_host_paths() -> Iterator[HostPaths]:
    """Host paths the engines create regardless of configuration, removed at
    the end of the session if they were not there at its start."""
    paths = HostPaths()
    yield paths
    left = paths.restore()
    assert not left, f"engine tests left host paths behind: {left}"


@pytest.fixture(scope="session")
def _trace_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trace")


@pytest.fixture(params=runtimes.params("runc"))
def oci_runtime(request, _trace_dir) -> str:
    """The absolute path of the runtime binary under test (the engine
    gives it its own --root)."""
    path = runtimes.binary(request.param)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{request.param} is not executable at {path}")
    trace = os.environ.get("KUBIRUN_ENGINE_TRACE")
    if trace:
        return trace_wrapper(path, Path(trace).resolve(), _trace_dir)
    return path


def _view(name: str) -> CoveredUnified | None:
    """The engine's view of the host: as it is, or with the unified cgroup2
    mount covered by a tmpfs (see tests/runtimes.py: CoveredUnified)."""
    if name == "host":
        return None
    if not unified_is_mounted():
        pytest.skip("no unified cgroup2 mount at /sys/fs/cgroup/unified to cover")
    _need("unshare", "nsenter")
    return CoveredUnified()


# --- podman -----------------------------------------------------------------

@pytest.fixture(scope="session", params=VIEWS)
def podman_setup(request, tmp_path_factory, busybox_tarball, engine_host_paths) -> Iterator[PodmanSetup]:
    """The private podman of the session, with the busybox image imported;
    once per view of the host."""
    _need("podman", "conmon")
    view = _view(request.param)
    setup = PodmanSetup(tmp_path_factory.mktemp("podman"), view)
    try:
        setup.import_image(busybox_tarball)
        yield setup
    finally:
        problems = setup.teardown()
        if view is not None:
            view.close()
        assert not problems, f"podman clean-up: {problems}"


@pytest.fixture
def podman(podman_setup, oci_runtime) -> Iterator[Podman]:
    """``podman(*args)`` driving the runtime under test; ``podman.run``,
    ``podman.start``... for the usual shapes. Containers are removed after
    each test."""
    engine = Podman(podman_setup, oci_runtime)
    yield engine
    engine.remove_all()


# --- containerd ------------------------------------------------------------------

@pytest.fixture(scope="session", params=VIEWS)
def containerd(request, tmp_path_factory, busybox_tarball, engine_host_paths) -> Iterator[Containerd]:
    """The private containerd daemon of the session, image imported; once
    per view of the host."""
    _need("containerd", "ctr", "containerd-shim-runc-v2")
    # Unix socket paths are limited to 108 bytes: keep the base short.
    yield from _running_containerd(request.param, tmp_path_factory.mktemp("ctrd"),
                                   busybox_tarball, "containerd")


def _running_containerd(view_name, base: Path, image: Path, what: str,
                        **options) -> Iterator[Containerd]:
    """A started daemon in view ``view_name`` with ``image`` imported, for
    the fixture's lifetime; whatever it leaves behind fails the session."""
    view = _view(view_name)
    daemon = Containerd(base, view, **options)
    try:
        daemon.start()
        daemon.import_image(image)
        yield daemon
    finally:
        problems = daemon.teardown()
        if view is not None:
            view.close()
        assert not problems, f"{what} clean-up: {problems}"


@pytest.fixture
def ctr(containerd, oci_runtime) -> Iterator[Ctr]:
    """``ctr(*args)`` against our daemon; ``ctr.run``/``ctr.start`` use the
    runtime under test. The test's containers are removed afterwards."""
    client = Ctr(containerd, oci_runtime)
    yield client
    client.remove_all()


# --- containerd's CRI -------------------------------------------------------------

@pytest.fixture(scope="session", params=VIEWS)
def cri_containerd(request, tmp_path_factory, busybox_tarball, engine_host_paths) -> Iterator[Containerd]:
    """A containerd of the session with its CRI plugin on, one runtime
    handler per runtime under test ("runc", "kubirun"), images imported;
    once per view of the host."""
    _need("containerd", "ctr", "containerd-shim-runc-v2")
    pytest.importorskip("grpc", reason="grpcio is not installed (make test-deps installs it)")
    handlers = {name: runtimes.binary(name) for name in ("kubirun", "runc")
                if runtimes.binary(name) is not None}
    yield from _running_containerd(request.param, tmp_path_factory.mktemp("cri"),
                                   busybox_tarball, "containerd (CRI)", cri_runtimes=handlers)


@pytest.fixture
def cri(cri_containerd, oci_runtime) -> Iterator[tuple[CriClient, str]]:
    """A CRI client of that containerd, and the runtime handler of the
    runtime under test."""
    handler = os.path.basename(oci_runtime)
    if handler not in cri_containerd.cri_runtimes:
        pytest.skip(f"no CRI runtime handler for {handler}")
    client = CriClient(cri_containerd.address)
    yield client, handler
    client.close()
