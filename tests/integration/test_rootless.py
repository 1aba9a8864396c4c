"""Rootless: a user without privileges runs a container from a bundle it
owns and is root inside (its own uid mapped to 0), with state under its
$XDG_RUNTIME_DIR and a clear warning when no cgroup is delegated to it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import KUBIRUN_SCRIPT
from tests.integration import rootless_helpers
from tests.integration.rootless_helpers import AS_NOBODY, NOBODY, as_user



@pytest.fixture
def user_home(busybox_dir):
    yield from rootless_helpers.user_home(busybox_dir, "kubirun-rootless-")


def _as_user(home: str, *args: str):
    return as_user(home, *args)


def test_spec_rootless_gives_a_working_config(user_home):
    bundle = os.path.join(user_home, "bundle")
    assert _as_user(user_home, "spec", "--rootless", "--bundle", bundle).returncode == 0
    path = os.path.join(bundle, "config.json")
    config = json.loads(open(path).read())
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": NOBODY, "size": 1}]
    config["process"].update(terminal=False, args=["sh", "-c", "id; cat /proc/self/uid_map"])
    config["root"]["readonly"] = False
    with open(path, "w") as f:
        json.dump(config, f)
    result = _as_user(user_home, "run", "--bundle", bundle, "r1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    assert lines[1].split() == ["0", str(NOBODY), "1"]
    # no limits were asked for: nothing is lost, nothing to warn of (--debug says it)
    assert "no cgroup this user may write" not in result.stderr
    assert os.listdir(os.path.join(user_home, "run", "kubirun")) == []


def test_mapping_someone_elses_ids_is_refused(user_home):
    bundle = os.path.join(user_home, "bundle")
    _as_user(user_home, "spec", "--rootless", "--bundle", bundle)
    path = os.path.join(bundle, "config.json")
    config = json.loads(open(path).read())
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    with open(path, "w") as f:
        json.dump(config, f)
    result = _as_user(user_home, "run", "--bundle", bundle, "r3")
    assert result.returncode != 0
    assert "linux.uidMappings" in result.stderr


def test_a_user_runs_an_image_tarball_and_is_root_inside(user_home, busybox_tarball):
    """The issue's own words: a non-root user runs `kubirun run
    rootfs/busybox.tar.gz -- id` and sees uid 0 inside.  The store is the
    user's ($XDG_DATA_HOME/kubirun), owners in the image become the user
    (root inside), and nothing is left behind."""
    image = os.path.join(user_home, "busybox.tar.gz")
    shutil.copy(busybox_tarball, image)
    os.chown(image, NOBODY, NOBODY)
    env = {"XDG_RUNTIME_DIR": os.path.join(user_home, "run"), "PATH": "/usr/bin:/bin",
           "XDG_DATA_HOME": os.path.join(user_home, "data"), "HOME": user_home}
    result = subprocess.run([*AS_NOBODY, str(KUBIRUN_SCRIPT), "run", image, "--", "sh", "-c",
                             "id; stat -c %U /bin/busybox; cat /proc/self/uid_map"],
                            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    assert lines[1] == "root"
    assert lines[2].split() == ["0", str(NOBODY), "1"]
    assert os.listdir(os.path.join(user_home, "data", "kubirun", "containers")) == []
    assert os.listdir(os.path.join(user_home, "run", "kubirun")) == []
