"""Layers applied in order: whiteouts, opaque directories, hard links,
symlinks, devices, setuid, owners, mtimes, xattrs; the overlay view and
the flattened copy agree; digests are checked."""
from __future__ import annotations

import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from kubirun.base.errors import ImageError
from kubirun.image import overlay
from kubirun.image.store import Store, flatten
from tests.image import builders as b
from tests.image.conftest import ok, run

# security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2 | EFFECTIVE)
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)

LAYER2 = [
    b.directory("data/"),
    b.file("data/keep", b"keep\n"),
    b.file("data/gone", b"gone\n"),
    b.directory("opq/"),
    b.file("opq/old1", b"1"),
    b.directory("opq/sub/"),
    b.file("opq/sub/old2", b"2"),
    b.directory("dir-gone/"),
    b.file("dir-gone/x", b"x"),
    b.file("setuid", b"#!/bin/sh\n", 0o4755),
    b.file("setgid", b"#!/bin/sh\n", 0o2711, gid=50),
    b.directory("sticky/", 0o1777),
    b.file("owned", b"owned\n", 0o640, uid=1234, gid=5678, mtime=b.T0 + 7),
    b.symlink("abs-link", "/data/keep"),
    b.symlink("rel-link", "data/keep"),
    b.file("hard-src", b"hard\n"),
    b.hardlink("hard-same-layer", "hard-src"),
    b.entry("devnode", tarfile.CHRTYPE, 0o600, dev=(1, 3)),
    b.entry("blocknode", tarfile.BLKTYPE, 0o600, dev=(7, 0)),
    b.entry("fifo", tarfile.FIFOTYPE, 0o644),
    b.file("cap", b"\x7fELF-not-really", 0o755, xattrs={"security.capability": CAP_NET_RAW}),
    b.file("user-x", b"u", xattrs={"user.kubirun": b"yes", "trusted.overlay.opaque": b"y"}),
    b.file("tobe-dir", b"file now\n"),
    b.directory("tobe-file/"),
    b.file("tobe-file/child", b"c"),
]
LAYER3 = [
    b.whiteout("data/gone"),
    b.whiteout("dir-gone"),
    b.directory("opq/"),
    b.opaque("opq"),
    b.file("opq/new", b"new"),
    b.hardlink("hard-from-below", "hard-src"),
    b.directory("tobe-dir/"),
    b.file("tobe-dir/inner", b"inner\n"),
    b.file("tobe-file", b"file\n"),
    b.file("data/added", b"added\n", mtime=b.T0 + 9),
]


@pytest.fixture
def layered(tmp_path, base_tar) -> Path:
    return b.oci_image(tmp_path / "layered.tar",
                       [base_tar, b.tar_bytes(LAYER2), b.tar_bytes(LAYER3)],
                       {"Cmd": ["/bin/sh"]})


def tree(top: Path) -> dict[str, tuple]:
    """Everything a root is made of, for comparing two of them."""
    found = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            content = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            try:
                xattrs = {k: os.getxattr(path, k, follow_symlinks=False)
                          for k in os.listxattr(path, follow_symlinks=False)
                          if not k.startswith("trusted.overlay.")}
            except OSError:
                xattrs = {}
            mtime = st.st_mtime if not stat.S_ISDIR(st.st_mode) else None  # dirs: overlay's own
            found[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, content, target,
                          mtime, tuple(sorted(xattrs.items())))
    return found


def test_the_layers_run(layered):
    out = ok(layered, "sh", "-c",
             "ls /data /opq; test -e /dir-gone || echo no-dir-gone; cat /hard-from-below /tobe-dir/inner"
             " /tobe-file; stat -c '%a %u:%g' /setuid /setgid /sticky /owned; readlink /abs-link;"
             " cat /abs-link /rel-link")
    assert out.splitlines() == [
        "/data:", "added", "keep", "", "/opq:", "new", "no-dir-gone", "hard", "inner", "file",
        "4755 0:0", "2711 0:50", "1777 0:0", "640 1234:5678", "/data/keep", "keep", "keep"]


def test_overlay_and_flattened_copy_are_the_same_root(layered, tmp_path, private_store):
    store = Store()
    image = store.import_image(str(layered))
    layers = [store.layer_path(layer["diff_id"]) for layer in image["layers"]]
    flat = tmp_path / "flat"
    flat.mkdir()
    flatten(layers, str(flat))
    container = tmp_path / "c"
    container.mkdir()
    root, mounted = store.make_root(image, str(container))
    assert mounted
    try:
        merged = tree(Path(root))
    finally:
        overlay.unmount(str(container))
    assert merged == tree(flat)
    assert not os.path.exists(container / "upper")  # unmount removes what the overlay used


def test_flattened_root_details(layered, tmp_path, private_store):
    store = Store()
    image = store.import_image(str(layered))
    flat = tmp_path / "flat"
    flat.mkdir()
    flatten([store.layer_path(layer["diff_id"]) for layer in image["layers"]], str(flat))
    assert sorted(os.listdir(flat / "data")) == ["added", "keep"]
    assert sorted(os.listdir(flat / "opq")) == ["new"]
    assert not os.path.lexists(flat / "dir-gone")
    assert stat.S_IMODE(os.lstat(flat / "setuid").st_mode) == 0o4755
    st = os.lstat(flat / "owned")
    assert (st.st_uid, st.st_gid, st.st_mtime) == (1234, 5678, b.T0 + 7)
    assert os.lstat(flat / "data/added").st_mtime == b.T0 + 9
    assert os.readlink(flat / "abs-link") == "/data/keep"
    same = os.lstat(flat / "hard-src"), os.lstat(flat / "hard-same-layer")
    assert same[0].st_ino == same[1].st_ino
    dev = os.lstat(flat / "devnode")
    assert stat.S_ISCHR(dev.st_mode) and (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.lstat(flat / "blocknode").st_mode)
    assert stat.S_ISFIFO(os.lstat(flat / "fifo").st_mode)
    assert os.getxattr(flat / "cap", "security.capability") == CAP_NET_RAW
    assert os.getxattr(flat / "user-x", "user.kubirun") == b"yes"
    assert "trusted.overlay.opaque" not in os.listxattr(flat / "user-x")  # never from an image
    assert (flat / "tobe-dir/inner").read_bytes() == b"inner\n"
    assert (flat / "tobe-file").read_bytes() == b"file\n"


def test_store_layers_are_in_overlay_format(layered, private_store):
    store = Store()
    image = store.import_image(str(layered))
    top = Path(store.layer_path(image["layers"][2]["diff_id"]))
    gone = os.lstat(top / "data/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0  # an overlayfs whiteout
    assert os.getxattr(top / "opq", "trusted.overlay.opaque") == b"y"


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_layer_compressions(tmp_path, base_tar, compression):
    image = b.oci_image(tmp_path / "img.tar", [base_tar, b.tar_bytes([b.file("hello", b"hi\n")])],
                        compression=compression)
    assert ok(image, "cat", "/hello") == "hi\n"


@pytest.mark.parametrize("compression", ["gz", "zst", "xz", ""])
def test_rootfs_tarball_compressions(tmp_path, base_tar, compression):
    data = b.compress(base_tar, {"gz": "gzip", "zst": "zstd", "xz": "xz", "": None}[compression])
    image = tmp_path / "rootfs.bin"  # the name says nothing: content decides
    image.write_bytes(data)
    assert ok(image, "echo", "ok") == "ok\n"


def test_oci_layout_directory(tmp_path, base_tar):
    image = b.oci_image(tmp_path / "layout", [base_tar], as_dir=True)
    assert ok(image, "echo", "dir") == "dir\n"


def test_docker_archive(tmp_path, base_tar):
    image = b.docker_archive(tmp_path / "docker.tar", [base_tar, b.tar_bytes([b.file("x", b"x\n")])])
    assert ok(image, "cat", "/x") == "x\n"


# --- digests --------------------------------------------------------------------------

def bad_image(path: Path, base_tar: bytes, tamper) -> Path:
    oci = b.Oci()
    layers = [oci.layer(base_tar), oci.layer(b.tar_bytes([b.file("x", b"x")]))]
    manifest = tamper(oci, layers)
    return oci.write_tar(path, [manifest])


def test_a_tampered_layer_blob_is_refused(tmp_path, base_tar, private_store):
    def tamper(oci, layers):
        manifest = oci.image(layers)
        desc = layers[1][0]
        oci.blobs[desc["digest"]] = b.compress(b.tar_bytes([b.file("x", b"evil")]), "gzip")[:desc["size"]].ljust(desc["size"], b"\0")
        return manifest
    result = run(bad_image(tmp_path / "bad.tar", base_tar, tamper), "true")
    assert result.returncode != 0
    assert "digest mismatch" in result.stderr or "cannot unpack" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert len(os.listdir(private_store / "layers")) == 1  # only the good base layer
    assert os.listdir(private_store / "tmp") == []


def test_a_wrong_diff_id_is_refused(tmp_path, base_tar, private_store):
    def tamper(oci, layers):
        return oci.image(layers, diff_ids=[layers[0][1], b.sha256(b"something else")])
    result = run(bad_image(tmp_path / "bad.tar", base_tar, tamper), "true")
    assert result.returncode != 0 and "diff_id mismatch" in result.stderr, result.stderr
    assert os.listdir(private_store / "tmp") == []


def test_a_tampered_config_is_refused(tmp_path, base_tar):
    def tamper(oci, layers):
        manifest = oci.image(layers)
        import json
        config_desc = json.loads(oci.blobs[manifest["digest"]])["config"]
        oci.blobs[config_desc["digest"]] = oci.blobs[config_desc["digest"]].replace(b"amd64", b"arm64")
        return manifest
    result = run(bad_image(tmp_path / "bad.tar", base_tar, tamper), "true")
    assert result.returncode != 0 and "digest mismatch" in result.stderr, result.stderr


def test_a_blob_named_outside_the_layout_is_refused(tmp_path, base_tar):
    def tamper(oci, layers):
        desc, diff_id = layers[1]
        return oci.image([layers[0], ({**desc, "digest": "sha256:../../../../etc/passwd"}, diff_id)])
    result = run(bad_image(tmp_path / "bad.tar", base_tar, tamper), "true")
    assert result.returncode != 0 and "invalid digest" in result.stderr, result.stderr


def test_library_error_is_an_image_error(tmp_path, private_store):
    with pytest.raises(ImageError):
        Store().import_image(str(b.oci_image(tmp_path / "x.tar", [b"not a tar " * 100])))


def test_sha512_layer_digests_are_checked_and_accepted(tmp_path, base_tar, private_store):
    """The image spec allows sha512 digests for blobs (and diff_ids): an
    image whose top layer is named that way runs, as with containerd."""
    import hashlib
    import io
    import tarfile as tarmod

    top_tar = b.tar_bytes([b.file("x512", b"sha512\n")])
    top_blob = b.compress(top_tar, "gzip")
    oci = b.Oci()
    base = oci.layer(base_tar)
    top_desc = {"mediaType": b.LAYER_TYPES["gzip"], "size": len(top_blob),
                "digest": "sha512:" + hashlib.sha512(top_blob).hexdigest()}
    top_diff = "sha512:" + hashlib.sha512(top_tar).hexdigest()
    manifest = oci.image([base, (top_desc, top_diff)])
    files = oci.files([manifest])
    files["blobs/sha512/" + top_desc["digest"].partition(":")[2]] = top_blob
    raw = io.BytesIO()
    with tarmod.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarmod.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    image = tmp_path / "sha512.tar"
    image.write_bytes(raw.getvalue())
    assert ok(image, "cat", "/x512") == "sha512\n"
