"""Rootless with subordinate ids: a user with /etc/subuid and /etc/subgid
entries maps ranges through newuidmap/newgidmap, so a container has users
besides root; ranges outside the entries, or without the helpers, are
refused with one line before anything is made.

The test user is nobody (as in test_rootless.py); its entries are added
for each test and the files restored byte for byte (owner, mode and times
too) afterwards, or removed if there were none."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.integration.rootless_helpers import NOBODY, as_user, user_home

SUB_START, SUB_COUNT = 3_000_000, 65536  # far from any real user's ids
OUTSIDE = 4_000_000


def _save(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    with open(path, "rb") as f:
        return f.read(), st


def _restore(path: str, saved) -> None:
    if saved is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    data, st = saved
    with open(path, "wb") as f:  # the same inode: links and labels stay
        f.write(data)
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def subids():
    """nobody gets SUB_COUNT ids from SUB_START: in /etc/subuid by name, in
    /etc/subgid by uid number (shadow-utils takes both)."""
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.skip("newuidmap/newgidmap are not installed (apt install uidmap)")
    entries = {"/etc/subuid": f"nobody:{SUB_START}:{SUB_COUNT}\n",
               "/etc/subgid": f"{NOBODY}:{SUB_START}:{SUB_COUNT}\n"}
    saved = {path: _save(path) for path in entries}
    try:
        for path, line in entries.items():
            data = saved[path][0] if saved[path] else b""
            if data and not data.endswith(b"\n"):
                data += b"\n"
            with open(path, "wb") as f:
                f.write(data + line.encode())
            if saved[path] is None:
                os.chmod(path, 0o644)
        yield
    finally:
        for path in entries:
            _restore(path, saved[path])
    for path in entries:
        after = _save(path)
        assert (after and after[0]) == (saved[path] and saved[path][0]), f"{path} not restored"


@pytest.fixture
def home(busybox_dir, busybox_tarball):
    """A directory of nobody's: bundle/rootfs, the image, run/ for state."""
    for top in user_home(busybox_dir, "kubirun-subids-"):
        shutil.copy(busybox_tarball, os.path.join(top, "busybox.tar.gz"))
        os.chown(os.path.join(top, "busybox.tar.gz"), NOBODY, NOBODY)
        yield top


def _as_user(home: str, *args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    return as_user(home, *args, path=path)


def _left_behind(home: str) -> list[str]:
    found = []
    for sub in ("run/kubirun", "data/kubirun/containers"):
        d = os.path.join(home, sub)
        if os.path.isdir(d):
            found += [os.path.join(sub, name) for name in os.listdir(d)]
    return found


def _processes_mapping(host_id: int) -> list[int]:
    """Processes in a user namespace (not ours) that maps ``host_id``."""
    found, ours = [], os.readlink("/proc/self/ns/user")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/user") == ours:
                continue
            with open(f"/proc/{pid}/uid_map") as f:
                lines = [line.split() for line in f]
        except OSError:
            continue
        if any(int(o) <= host_id < int(o) + int(n) for _, o, n in lines):
            found.append(int(pid))
    return found


def _bundle(home: str, uid_mappings: list, gid_mappings: list, **process) -> str:
    bundle = os.path.join(home, "bundle")
    if os.path.exists(os.path.join(bundle, "config.json")):
        os.unlink(os.path.join(bundle, "config.json"))  # a test's second bundle
    result = _as_user(home, "spec", "--rootless", "--bundle", bundle)
    assert result.returncode == 0, result.stderr
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    linux = config["linux"]
    linux["uidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in uid_mappings]
    linux["gidMappings"] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in gid_mappings]
    config["process"].update(terminal=False, **process)
    config["root"]["readonly"] = False
    with open(path, "w") as f:
        json.dump(config, f)
    return bundle


RANGES = [(0, NOBODY, 1), (1, SUB_START, SUB_COUNT)]


def test_run_maps_the_user_and_its_subordinate_range(subids, home):
    """`kubirun run IMAGE` as a user with entries: 0 is the user, 1.. its
    range (as podman maps); the image's other users exist, what they make
    is removed with the container, setgroups stays allowed, and the ptys
    get gid 5 (mapped now)."""
    image = os.path.join(home, "busybox.tar.gz")
    script = ("cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups;"
              " su nobody -s /bin/sh -c 'id -u; mkdir /tmp/made; touch /tmp/made/file';"
              " stat -c %u:%g /tmp/made/file; grep -o ' devpts .*' /proc/self/mountinfo")
    result = _as_user(home, "run", image, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[:4] == [["0", str(NOBODY), "1"], ["1", str(SUB_START), str(SUB_COUNT)]] * 2
    assert lines[4:7] == [["allow"], [str(NOBODY)], [f"{NOBODY}:{NOBODY}"]]
    assert f"gid={SUB_START + 4}," in lines[7][-1]  # mountinfo shows the host's gid
    assert _left_behind(home) == []  # /tmp/made belonged to SUB_START+65533 on the host


def test_a_bundle_runs_its_process_as_a_subordinate_user(subids, home):
    """process.user 1000:1000 with additionalGids, all mapped from the range:
    the process is that user, with those groups (setgroups allowed)."""
    bundle = _bundle(home, RANGES, RANGES, args=["sh", "-c", "id -u; id -g; id -G; cat /proc/self/uid_map"],
                     user={"uid": 1000, "gid": 1000, "additionalGids": [2000]})
    result = _as_user(home, "run", "--bundle", bundle, "s1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["1000", "1000", "1000 2000"]
    assert [line.split() for line in lines[3:]] == [["0", str(NOBODY), "1"], ["1", str(SUB_START), str(SUB_COUNT)]]
    assert _left_behind(home) == []


@pytest.mark.parametrize("key", ["uidMappings", "gidMappings"])
def test_a_range_outside_the_entries_is_refused_and_nothing_is_left(subids, home, key):
    outside = [(0, NOBODY, 1), (1, OUTSIDE, SUB_COUNT)]
    uids, gids = (outside, RANGES) if key == "uidMappings" else (RANGES, outside)
    bundle = _bundle(home, uids, gids, args=["true"])
    result = _as_user(home, "run", "--bundle", bundle, "s2")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    where, path = f"linux.{key}[1]", "/etc/subuid" if key == "uidMappings" else "/etc/subgid"
    assert where in lines[0] and path in lines[0] and str(OUTSIDE) in lines[0], lines[0]
    assert f"{SUB_START}-{SUB_START + SUB_COUNT - 1}" in lines[0]  # what the user does have
    assert _left_behind(home) == []
    assert _processes_mapping(OUTSIDE) == [] and _processes_mapping(SUB_START) == []


def test_a_user_without_entries_is_told_so(home):
    if not shutil.which("newuidmap"):
        pytest.skip("newuidmap is not installed (apt install uidmap)")
    saved = _save("/etc/subuid")
    if saved and any(line.split(b":")[0] in (b"nobody", str(NOBODY).encode()) for line in saved[0].splitlines()):
        pytest.skip("nobody has /etc/subuid entries on this host")
    bundle = _bundle(home, RANGES, [(0, NOBODY, 1)], args=["true"])
    result = _as_user(home, "run", "--bundle", bundle, "s3")
    assert result.returncode != 0
    assert "linux.uidMappings[1]" in result.stderr
    assert "/etc/subuid has no entry for nobody (uid 65534)" in result.stderr
    assert _left_behind(home) == []


def test_without_newuidmap_ranges_are_refused_and_one_id_still_works(subids, home):
    """No newuidmap in $PATH (as if uidmap were not installed): a range is
    refused saying what to install; the single mapping needs no helper;
    `kubirun run` falls back to it."""
    no_helpers = tempfile.mkdtemp(prefix="kubirun-nopath-", dir="/tmp")
    try:
        bundle = _bundle(home, RANGES, RANGES, args=["sh", "-c", "cat /proc/self/uid_map"])
        result = _as_user(home, "run", "--bundle", bundle, "s4", path=no_helpers)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "linux.uidMappings[1]" in lines[0]
        assert "newuidmap, which is not installed (apt install uidmap)" in lines[0]
        assert _left_behind(home) == []

        single = [(0, NOBODY, 1)]
        bundle = _bundle(home, single, single, args=["sh", "-c", "cat /proc/self/uid_map"])
        result = _as_user(home, "run", "--bundle", bundle, "s5", path=no_helpers)
        assert result.returncode == 0, result.stderr
        assert [line.split() for line in result.stdout.splitlines()] == [["0", str(NOBODY), "1"]]

        image = os.path.join(home, "busybox.tar.gz")
        result = _as_user(home, "run", image, "--", "cat", "/proc/self/uid_map", path=no_helpers)
        assert result.returncode == 0, result.stderr
        assert [line.split() for line in result.stdout.splitlines()] == [["0", str(NOBODY), "1"]]
        assert _left_behind(home) == []
    finally:
        os.rmdir(no_helpers)
