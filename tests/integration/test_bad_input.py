"""`kubirun run` on bad images: one line on stderr that names the problem,
a failing exit status, nothing written outside, nothing left behind (no
container directory, no mount)."""
from __future__ import annotations

import os
import random
import tarfile
from pathlib import Path

import pytest

from tests.conftest import _mount_table, kubirun, make_tar, snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kubirun run needs root")


@pytest.fixture
def bad_run(tmp_path, private_store):
    """Run ``kubirun run IMAGE -- true``, check everything a refused image
    must leave as it was, and return the one line on stderr."""
    def run(image: Path) -> str:
        mounts_before = _mount_table()
        files_before = snapshot(tmp_path, skip=private_store)
        result = kubirun("run", str(image), "--", "true")
        assert result.returncode != 0
        assert result.stdout == ""
        assert result.stderr.startswith("kubirun: "), result.stderr
        assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
        assert snapshot(tmp_path, skip=private_store) == files_before
        assert _mount_table() == mounts_before
        containers = private_store / "containers"
        assert not containers.exists() or os.listdir(containers) == []
        return result.stderr.rstrip("\n")
    return run


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    info.linkname = linkname
    return info


def test_missing_image_is_reported(bad_run, tmp_path):
    image = tmp_path / "no-such-image.tar.gz"
    line = bad_run(image)
    assert str(image) in line and "no such file" in line


def test_file_that_is_not_a_tar_is_reported(bad_run, tmp_path):
    image = tmp_path / "random.bin"
    image.write_bytes(b"\x00" + random.Random(3).randbytes(8191))
    line = bad_run(image)
    assert str(image) in line and "not a directory or a tar archive" in line


def test_corrupt_gzip_is_reported(bad_run, tmp_path):
    image = tmp_path / "corrupt.tar.gz"
    image.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(4).randbytes(8192))
    line = bad_run(image)
    assert str(image) in line and "cannot unpack" in line


def test_truncated_gzip_is_reported(bad_run, tmp_path, busybox_tarball):
    image = tmp_path / "half.tar.gz"
    data = busybox_tarball.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    line = bad_run(image)
    assert str(image) in line and "cannot unpack" in line


def test_gzip_header_cut_short_is_reported_on_one_line(bad_run, tmp_path):
    image = tmp_path / "short-header.tar.gz"
    image.write_bytes(b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x00")  # FEXTRA, then nothing
    line = bad_run(image)
    assert str(image) in line


def test_dotdot_entry_is_refused(bad_run, tmp_path, outside):
    # the unpack root is STORE/containers/ID/rootfs: this aims at tmp_path/outside
    name = "../../../../outside/x"
    image = make_tar(tmp_path / "dotdot.tar.gz", [(entry(name), b"pwned")])
    line = bad_run(image)
    assert name in line
    assert os.listdir(outside) == []


def test_plain_dotdot_entry_is_refused(bad_run, tmp_path):
    image = make_tar(tmp_path / "dotdot.tar.gz", [(entry("../x"), b"pwned")])
    line = bad_run(image)
    assert "'../x'" in line


def test_write_through_absolute_symlink_is_refused(bad_run, tmp_path, outside):
    image = make_tar(tmp_path / "symlink.tar.gz", [
        entry("evil", tarfile.SYMTYPE, linkname=str(outside)), (entry("evil/pwned"), b"pwned")])
    line = bad_run(image)
    assert "evil/pwned" in line and "symlink" in line
    assert os.listdir(outside) == []


def test_hardlink_to_host_file_is_refused(bad_run, tmp_path, host_file):
    image = make_tar(tmp_path / "hardlink.tar.gz", [entry("h", tarfile.LNKTYPE, linkname=str(host_file))])
    line = bad_run(image)
    assert "'h'" in line and str(host_file) in line
    assert os.lstat(host_file).st_nlink == 1
    assert host_file.read_bytes() == b"host data\n"


# --- run's flags (issue 19) ------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["-w", "rel/dir"], "must be an absolute path"),
    (["-w", "/etc/passwd"], "not a directory in the container"),
    (["--network", "ns:/etc/passwd"], "is not a network namespace"),
])
def test_a_bad_run_flag_is_one_line(busybox_dir, args, says):
    result = kubirun("run", *args, str(busybox_dir), "--", "true")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines


def test_a_state_root_that_is_a_file_is_named(monkeypatch, busybox_dir):
    monkeypatch.setenv("KUBIRUN_ROOT", "/etc/passwd")
    for args in (["list"], ["run", str(busybox_dir), "--", "true"]):
        result = kubirun(*args)
        assert result.returncode != 0
        assert "state root /etc/passwd is not a directory" in result.stderr, result.stderr
