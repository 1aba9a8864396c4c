"""Fixtures and helpers of the library's tests (test_api.py,
test_api_async.py): ``make_bundle`` (a factory of busybox bundles, each in
a cgroup of its own under the suite's parent), ``runtime`` (a
``kubirun.api.Runtime`` of the test's own, its containers deleted after),
``own_cgroup`` and ``cgroup_dirs``."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import TEST_CGROUP_PARENT


@pytest.fixture
def make_bundle(tmp_path, busybox_dir):
    """``make_bundle(args, hooks=None)``: a bundle running ``args`` in the
    busybox root, in cgroup ``TEST_CGROUP_PARENT/api-N`` (N counts from 1)."""
    count = 0

    def make(args: list[str], hooks: dict | None = None) -> str:
        nonlocal count
        count += 1
        directory = tmp_path / f"bundle{count}"
        directory.mkdir()
        from kubirun.spec import default_config

        config = default_config()
        config["root"] = {"path": str(busybox_dir), "readonly": True}
        config["process"].update(terminal=False, args=args)
        config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/api-{count}"
        if hooks:
            config["hooks"] = hooks
        (directory / "config.json").write_text(json.dumps(config))
        return str(directory)

    return make


@pytest.fixture
def runtime(tmp_path):
    from kubirun.api import Runtime

    with Runtime(root=str(tmp_path / "api-root")) as rt:
        yield rt
        for container_id in rt.list():
            rt.load(container_id).delete(force=True)


def own_cgroup(bundle: str, name: str) -> dict:
    """The bundle's config with cgroup ``TEST_CGROUP_PARENT/api-NAME``."""
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/api-{name}"
    return config


def cgroup_dirs(name: str) -> list[str]:
    """The directories of cgroup ``TEST_CGROUP_PARENT/api-NAME`` that exist."""
    relative = f"{TEST_CGROUP_PARENT}/api-{name}".strip("/")
    hierarchies = [""] if os.path.exists("/sys/fs/cgroup/cgroup.controllers") \
        else os.listdir("/sys/fs/cgroup")
    return [path for path in (os.path.join("/sys/fs/cgroup", h, relative) for h in hierarchies)
            if os.path.isdir(path)]
