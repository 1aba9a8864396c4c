"""Fixtures and helpers of the library's tests (test_api.py,
test_api_async.py): ``make_bundle`` (a factory of busybox bundles, each in
a cgroup of its own under the suite's parent), ``runtime`` (a
``kubirun.api.Runtime`` of the test's own, its containers deleted after),
``own_cgroup`` and ``cgroup_dirs``; ``MANY_HEAD`` and ``run_many`` for the
tests of many containers from a child interpreter of 256 fds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TEST_CGROUP_PARENT


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


# The head of a script run by ``run_many``: its arguments (state root,
# bundle, cgroup parent), ``own(name)`` (the bundle's config in a cgroup of
# its own under that parent), 256 fds at most, and a Runtime whose fork
# server is warm, with the fds and threads open before the test's part
# (indented in its ``with``) for it to compare.
MANY_HEAD = """\
import asyncio, json, os, resource, sys, threading
from kubirun.api import Runtime, Stdio
from tests.procs import children

root, bundle, parent = sys.argv[1], sys.argv[2], sys.argv[3]
config = json.load(open(os.path.join(bundle, "config.json")))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

def own(name):
    return dict(config, linux=dict(config["linux"], cgroupsPath=f"{parent}/{name}"))

with Runtime(root=root) as rt:
    rt.create("warm", bundle, config=own("warm")).delete(force=True)
    fds, threads = set(os.listdir("/proc/self/fd")), threading.active_count()
"""


def run_many(script: str, tmp_path, bundle: str, name: str) -> tuple[dict, dict]:
    """Run ``script`` (``MANY_HEAD`` and the test's part) in a child
    interpreter, its containers under cgroup ``TEST_CGROUP_PARENT/NAME``
    (removed after); the two JSON lines it prints, parsed."""
    from tests.conftest import remove_cgroup_parent

    parent = f"{TEST_CGROUP_PARENT}/{name}"
    try:
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "root"), bundle,
                                 parent], capture_output=True, text=True, timeout=600,
                                cwd=str(REPO))
    finally:
        remove_cgroup_parent(parent)
    assert result.returncode == 0, result.stderr[-2000:]
    report, after = (json.loads(line) for line in result.stdout.splitlines())
    return report, after
