"""Device access is decided by ``linux.resources.devices`` (plus runc's
default devices), never by a node's presence in ``linux.devices``: a config
that denies every device and lists /dev/kmsg gets the node, not the host's
kernel log.  Against kubirun and runc (``oci``)."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.integration.oci_helpers import assert_nothing_left

KMSG = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o620,
        "uid": 0, "gid": 0}
# Opening /dev/kmsg write-only passes the driver's own checks and writes
# nothing: what refuses it, or not, is the devices cgroup.
OPEN_KMSG = "ls /dev/kmsg && (exec 3>/dev/kmsg) 2>/dev/null && echo opened || echo denied"


def _run(oci, bundle, rules):
    def edit(config):
        config["linux"]["devices"] = [dict(KMSG)]
        config["linux"].setdefault("resources", {})["devices"] = rules
    return oci.cmd("run", "--bundle", str(bundle(["sh", "-c", OPEN_KMSG], edit=edit)), oci.new_id())


def test_a_listed_device_is_not_allowed_by_that_alone(oci, bundle):
    result = _run(oci, bundle, [{"allow": False, "access": "rwm"}])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/dev/kmsg", "denied"]


def test_a_listed_device_that_the_rules_allow_can_be_opened(oci, bundle):
    result = _run(oci, bundle, [{"allow": False, "access": "rwm"},
                                {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/dev/kmsg", "opened"]


def test_access_letters_other_than_r_w_and_m_are_ignored(oci, bundle):
    # runc takes them (engines pass what runc took): "wX" is "w"
    result = _run(oci, bundle, [{"allow": False, "access": "rwm"},
                                {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "wX"}])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/dev/kmsg", "opened"]


def test_a_rule_with_none_of_the_access_letters_r_w_and_m_is_refused(oci, bundle):
    cid = oci.new_id()
    b = bundle(edit=lambda config: config["linux"].setdefault("resources", {}).update(devices=[
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "W"}]))
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode != 0
    assert_nothing_left(oci, cid, b)


# --- a config with no /dev mount -------------------------------------------------
# The container's /dev is then the image's own directory: the default
# devices and /dev links are made there, as runc makes them.

USE_DEVICES = ("echo x > /dev/null && test -c /dev/null && head -c 4 /dev/zero | wc -c"
               " && ls -l /dev/fd/ > /dev/null && echo ok")


@pytest.mark.parametrize("readonly", [False, True], ids=["rw-root", "ro-root"])
def test_without_a_dev_mount_the_image_dev_gets_the_default_devices(oci, bundle, busybox_dir,
                                                                    tmp_path, readonly):
    root = tmp_path / "root"
    shutil.copytree(busybox_dir, root, symlinks=True)

    def edit(config):
        config["root"] = {"path": str(root), "readonly": readonly}
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]

    result = oci.cmd("run", "--bundle", str(bundle(["sh", "-c", USE_DEVICES], edit=edit)),
                     oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "ok"]
    assert os.major(os.stat(root / "dev" / "null").st_rdev) == 1
