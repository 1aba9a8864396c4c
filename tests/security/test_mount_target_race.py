"""CVE-2021-30465 class: a mount's destination inside the root is swapped
between a directory and a symlink (renameat2 RENAME_EXCHANGE, in a loop)
while containers are created.  kubirun resolves the destination once, with
openat2(RESOLVE_IN_ROOT), and mounts on the fd it got: whatever the race,
the mount lands inside the container's root, never where the symlink
points on the host, and the host is left as it was."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading

import pytest

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT, _mount_table

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchanger(libc, a: bytes, b: bytes, stop: threading.Event) -> None:
    while not stop.is_set():
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)


def test_a_raced_mount_destination_never_escapes_the_root(tmp_path, busybox_dir):
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("no renameat2 in this libc")
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    (root / "root-marker").write_text("the container's root\n")
    (root / "mnt").mkdir(exist_ok=True)  # other tests may have made it in the shared root
    os.symlink("/etc", root / "mnt-link")  # what an attacker would want mounted over
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "volume-marker").write_text("the volume\n")
    host_etc = sorted(os.listdir("/etc"))

    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["root"] = {"path": "rootfs"}
    config["process"].update(terminal=False, args=["sh", "-c", "cat /root-marker; ls /mnt /etc"])
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(volume),
                             "options": ["rbind", "ro"]})
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/race-{os.getpid()}"
    (tmp_path / "config.json").write_text(json.dumps(config))

    mounts_before = _mount_table()
    stop = threading.Event()
    racer = threading.Thread(target=_exchanger, args=(libc, bytes(root / "mnt"), bytes(root / "mnt-link"), stop))
    racer.start()
    outcomes = []
    try:
        for i in range(40):
            result = subprocess.run([str(KUBIRUN_SCRIPT), "--root", str(tmp_path / "state"), "run",
                                     "--bundle", str(tmp_path), f"race{i}"],
                                    capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            outcomes.append(result)
    finally:
        stop.set()
        racer.join()
    for result in outcomes:
        if result.stderr.startswith("kubirun:"):
            # The runtime refused (the destination was a symlink it would
            # not follow when resolved): one clear line.
            assert result.stderr.count("\n") == 1, result.stderr
            continue
        # It ran, in its own root (`ls` itself may trip over the swapping
        # directory, which the racer keeps going).  The volume is at /mnt,
        # or, when the destination was the symlink at that moment, where
        # the symlink leads *inside the root* (its /etc, as runc's
        # securejoin would): the attacker only rearranges its own
        # container.  The host's /etc is never what it sees.
        assert result.stdout.startswith("the container's root\n"), (result.stdout, result.stderr)
        assert "debian_version" not in result.stdout, result.stdout
    assert any(r.stdout.startswith("the container's root") for r in outcomes)
    assert _mount_table() == mounts_before
    assert sorted(os.listdir("/etc")) == host_etc
    assert sorted(os.listdir(volume)) == ["volume-marker"]
    assert not os.listdir(tmp_path / "state") if (tmp_path / "state").exists() else True
