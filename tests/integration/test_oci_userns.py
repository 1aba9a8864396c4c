"""User namespaces: the container's root is an unprivileged host uid.
Against kubirun and runc (``oci``)."""
from __future__ import annotations

import os

import pytest

MAPPING = [{"containerID": 0, "hostID": 100000, "size": 65536}]


@pytest.fixture
def _userns(reachable_root):
    def edit(config):
        config["root"]["path"] = reachable_root
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = list(MAPPING)
        config["linux"]["gidMappings"] = list(MAPPING)
    return edit


def test_root_inside_is_an_unprivileged_uid_outside(oci, bundle, _userns):
    b = bundle(["sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %U /bin/busybox"], edit=_userns)
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] in ("nobody", "65534")  # the host's root is not mapped inside


def test_the_host_sees_the_mapped_uid(oci, bundle, _userns):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle(["sleep", "100"], edit=_userns))["pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4


def test_exec_joins_the_user_namespace(oci, bundle, _userns):
    cid = oci.new_id()
    pid = oci.start_created(cid, bundle(["sleep", "100"], edit=_userns))["pid"]
    result = oci.cmd("exec", cid, "sh", "-c", "id -u; readlink /proc/self/ns/user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", os.readlink(f"/proc/{pid}/ns/user")]


def test_mappings_without_a_user_namespace_are_refused(oci, bundle):
    if oci.name == "runc":
        pytest.skip("runc 1.1 ignores mappings without a user namespace; kubirun refuses them")

    def edit(config):
        config["linux"]["uidMappings"] = list(MAPPING)
        config["linux"]["gidMappings"] = list(MAPPING)
    result = oci.cmd("run", "--bundle", str(bundle(["true"], edit=edit)), oci.new_id())
    assert result.returncode != 0


def test_a_user_namespace_without_mappings_is_refused(oci, bundle):
    result = oci.cmd("run", "--bundle", str(bundle(["true"], edit=lambda c: c["linux"]["namespaces"].append(
        {"type": "user"}))), oci.new_id())
    assert result.returncode != 0


def test_a_relative_bind_source_is_in_the_bundle_in_a_user_namespace_too(oci, bundle, _userns,
                                                                         reachable_root):
    import shutil
    import uuid
    from pathlib import Path

    def edit(config):
        _userns(config)
        # on the tmpfs at /tmp: the mapped root may make its mount point there
        config["mounts"].append({"destination": "/tmp/bundle", "type": "bind", "source": ".",
                                 "options": ["rbind", "ro"]})
    made = bundle(["cat", "/tmp/bundle/config.json"], edit=edit)
    # where the mapped root (host uid 100000) can reach it: pytest's are 0700
    b = Path(reachable_root).parent / f"bundle-{uuid.uuid4().hex[:8]}"
    b.mkdir(mode=0o755)
    try:
        shutil.copy(made / "config.json", b / "config.json")
        os.chmod(b / "config.json", 0o644)
        result = oci.cmd("run", "--bundle", str(b), oci.new_id())
        assert result.returncode == 0, result.stderr
        assert result.stdout == (b / "config.json").read_text()
    finally:
        shutil.rmtree(b)
