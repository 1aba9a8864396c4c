"""Hostile images: refused with one clear line, nothing written outside the
store, no container left, no mount left, no half-unpacked layer kept."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.conftest import _mount_table, kubirun, snapshot
from tests.image import builders as b


@pytest.fixture
def refused(tmp_path, private_store):
    """Run IMAGE; it must fail with one line on stderr, leave everything
    outside the store as it was, and leave no container, mount or
    unfinished layer.  Returns the line."""
    def check(image: Path, env: dict | None = None) -> str:
        mounts = _mount_table()
        files = snapshot(tmp_path, skip=private_store)
        result = kubirun("run", str(image), "--", "true",
                         env={**os.environ, **(env or {})})
        assert result.returncode != 0
        assert result.stderr.startswith("kubirun: ") and result.stderr.count("\n") == 1, result.stderr
        assert snapshot(tmp_path, skip=private_store) == files
        assert _mount_table() == mounts
        containers = private_store / "containers"
        assert not containers.exists() or os.listdir(containers) == []
        if (private_store / "tmp").exists():
            assert os.listdir(private_store / "tmp") == []
        return result.stderr.rstrip("\n")
    return check


def layers_image(tmp_path: Path, *layers: list, name: str = "hostile.tar") -> Path:
    return b.oci_image(tmp_path / name, [b.tar_bytes(layer) for layer in layers])


def test_absolute_path_in_a_layer(refused, tmp_path, outside):
    line = refused(layers_image(tmp_path, [b.file(f"{outside}/x", b"pwned")]))
    assert "absolute path" in line
    assert os.listdir(outside) == []


def test_dotdot_in_a_layer(refused, tmp_path, outside):
    line = refused(layers_image(tmp_path, [b.file("../../../../../../outside/x", b"pwned")]))
    assert "'..'" in line
    assert os.listdir(outside) == []


def test_symlink_then_write_in_one_layer(refused, tmp_path, outside):
    line = refused(layers_image(tmp_path, [b.symlink("evil", str(outside)),
                                           b.file("evil/pwned", b"pwned")]))
    assert "symlink" in line and "evil/pwned" in line
    assert os.listdir(outside) == []


def test_a_path_an_earlier_layer_made_a_symlink(refused, tmp_path, outside):
    """Layer 1: etc -> OUTSIDE; layer 2 writes etc/passwd (no etc/ entry)."""
    line = refused(layers_image(tmp_path, [b.symlink("etc", str(outside))],
                                [b.file("etc/passwd", b"pwned")]))
    assert "symlink" in line and "earlier layer" in line
    assert os.listdir(outside) == []


def test_a_relative_symlink_of_an_earlier_layer(refused, tmp_path, outside):
    line = refused(layers_image(tmp_path, [b.directory("a/"), b.symlink("a/up", "../../../..")],
                                [b.file("a/up/pwned", b"pwned")]))
    assert "symlink" in line
    assert not (tmp_path.parent / "pwned").exists()


def test_hardlink_to_a_host_file(refused, tmp_path, host_file):
    line = refused(layers_image(tmp_path, [b.hardlink("h", str(host_file))]))
    assert "hard link" in line
    assert os.lstat(host_file).st_nlink == 1


def test_hardlink_with_dotdot(refused, tmp_path, host_file):
    refused(layers_image(tmp_path, [b.hardlink("h", "../../../../../../host-file")]))
    assert os.lstat(host_file).st_nlink == 1


def test_hardlink_through_a_symlink_of_an_earlier_layer(refused, tmp_path, host_file):
    refused(layers_image(tmp_path, [b.symlink("s", str(tmp_path))], [b.hardlink("h", "s/host-file")]))
    assert os.lstat(host_file).st_nlink == 1


@pytest.mark.parametrize("name", [".wh...", "a/.wh..."])
def test_whiteout_of_dotdot(refused, tmp_path, name):
    line = refused(layers_image(tmp_path, [b.directory("a/")], [b.file(name, b"")]))
    assert "whiteout" in line and "'..'" in line


def test_whiteout_through_a_symlink_of_an_earlier_layer(refused, tmp_path, host_file):
    line = refused(layers_image(tmp_path, [b.symlink("s", str(tmp_path))],
                                [b.file("s/.wh.host-file", b"")]))
    assert "symlink" in line
    assert host_file.read_bytes() == b"host data\n"


def test_decompression_bomb_stops_at_the_maximum(refused, tmp_path, private_store):
    bomb = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo("zeros")
    info.size = 64 << 20
    with gzip.open(bomb, "wb", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            tar.addfile(info, _Zeros(info.size))
    assert bomb.stat().st_size < 1 << 20
    line = refused(bomb, env={"KUBIRUN_MAX_IMAGE_SIZE": "16m"})
    assert "more than" in line and "KUBIRUN_MAX_IMAGE_SIZE" in line
    assert not (private_store / "layers").exists() or os.listdir(private_store / "layers") == []


def test_bomb_inside_an_image_archive(refused, tmp_path):
    zeros = b.entry("zeros")
    image = b.oci_image(tmp_path / "bomb.tar", [b.tar_bytes([(zeros, bytes(32 << 20))])])
    line = refused(image, env={"KUBIRUN_MAX_IMAGE_SIZE": "8m"})
    assert "more than" in line


def test_docker_manifest_naming_a_file_outside_the_archive(refused, tmp_path):
    import json

    image = b.docker_archive(tmp_path / "d.tar", [b.tar_bytes([b.file("x", b"x")])])
    with tarfile.open(image) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = ["../../../../../../etc/hostname"]
    members["manifest.json"] = json.dumps(manifest).encode()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in members.items():
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
    line = refused(evil)
    assert "no file" in line


def test_archive_symlink_member_pointing_outside(refused, tmp_path):
    image = b.docker_archive(tmp_path / "d.tar", [b.tar_bytes([b.file("x", b"x")])])
    with tarfile.open(image) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for m, data in members:
            if m.name.endswith("layer.tar"):
                link = tarfile.TarInfo(m.name)
                link.type = tarfile.SYMTYPE
                link.linkname = "../../../../../etc/hostname"
                tar.addfile(link)
            else:
                tar.addfile(m, io.BytesIO(data) if data is not None else None)
    line = refused(evil)
    assert "outside the archive" in line


def test_layout_directory_symlink_cannot_leave_it(refused, tmp_path, base_tar):
    layout = b.oci_image(tmp_path / "layout", [b.tar_bytes([b.file("x", b"x")])], as_dir=True)
    blob = next((layout / "blobs/sha256").iterdir())
    index = layout / "index.json"
    # the index itself becomes a symlink to a host file: resolved inside the layout, not found
    secret = tmp_path / "outside-index.json"
    secret.write_bytes(index.read_bytes())
    index.unlink()
    index.symlink_to(secret)
    line = refused(layout)
    assert "index.json" in line
    assert blob.exists()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


class _Zeros:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)
