"""kubirun.image.extract: a root filesystem unpacked as GNU tar would (as
root), and nothing ever written outside it.  Runs as root on tmp_path."""
from __future__ import annotations

import gzip
import io
import os
import random
import stat
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from kubirun.base.errors import ImageError, UnsafeArchiveError
from kubirun.image.extract import entry_parts, extract_tar
from tests.conftest import make_tar, snapshot
from tests.image.builders import T0, directory, entry, file, hardlink, symlink  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction keeps owners and makes devices: needs root")

# --- a normal root filesystem ------------------------------------------------

NORMAL = [
    directory("./", mtime=T0 + 1),
    directory("./bin/", mtime=T0 + 2),
    file("./bin/busybox", b"#!busybox\n" * 100, 0o755, mtime=T0 + 3),
    symlink("./bin/sh", "/bin/busybox"),
    hardlink("./bin/busybox.hard", "./bin/busybox"),
    directory("./usr/"),
    directory("./usr/bin/"),
    file("./usr/bin/su", b"su", 0o4755),
    file("./usr/bin/wall", b"wall", 0o2755, gid=5),
    directory("./srv/", 0o2755, mtime=T0 + 4),
    directory("./tmp/", 0o1777, mtime=T0 + 5),
    directory("./home/"),
    directory("./home/user/", 0o750, uid=1234, gid=5678, mtime=T0 + 6),
    file("./home/user/notes.txt", b"hello\n", 0o640, uid=1234, gid=5678, mtime=T0 + 7),
    directory("./a/"),
    directory("./a/b/"),
    directory("./a/b/c/", mtime=T0 + 8),
    file("./a/b/c/deep.txt", b"deep\n", mtime=T0 + 9),
    directory("./dev/"),
    entry("./dev/null", tarfile.CHRTYPE, 0o666, dev=(1, 3)),
    entry("./dev/loop0", tarfile.BLKTYPE, 0o660, gid=6, dev=(7, 0)),
    directory("./run/"),
    entry("./run/initctl", tarfile.FIFOTYPE, 0o600),
    file("noprefix.txt", b"no ./ prefix\n"),
]


@pytest.fixture
def normal_tar(tmp_path) -> Path:
    return make_tar(tmp_path / "normal.tar.gz", NORMAL)


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def extracted(normal_tar, root) -> Path:
    extract_tar(str(normal_tar), str(root))
    return root


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_content_is_extracted(extracted):
    assert (extracted / "bin/busybox").read_bytes() == b"#!busybox\n" * 100
    assert (extracted / "home/user/notes.txt").read_bytes() == b"hello\n"


def test_nested_directories_are_created(extracted):
    assert (extracted / "a/b/c").is_dir()
    assert (extracted / "a/b/c/deep.txt").read_bytes() == b"deep\n"


def test_dot_slash_prefix_and_bare_names_land_in_the_root(extracted):
    assert sorted(os.listdir(extracted)) == ["a", "bin", "dev", "home", "noprefix.txt", "run", "srv", "tmp", "usr"]
    assert (extracted / "noprefix.txt").read_bytes() == b"no ./ prefix\n"


def test_plain_file_mode_is_exact(extracted):
    assert mode_of(extracted / "bin/busybox") == 0o755
    assert mode_of(extracted / "home/user/notes.txt") == 0o640


def test_setuid_bit_is_kept(extracted):
    assert mode_of(extracted / "usr/bin/su") == 0o4755


def test_setgid_bit_is_kept_on_a_file_with_a_group(extracted):
    st = os.lstat(extracted / "usr/bin/wall")
    assert stat.S_IMODE(st.st_mode) == 0o2755
    assert st.st_gid == 5


def test_setgid_bit_is_kept_on_a_directory(extracted):
    assert mode_of(extracted / "srv") == 0o2755


def test_sticky_tmp_is_kept(extracted):
    assert mode_of(extracted / "tmp") == 0o1777


def test_numeric_owner_is_kept_on_files_and_directories(extracted):
    for path in (extracted / "home/user", extracted / "home/user/notes.txt"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (1234, 5678), path


def test_file_mtime_is_kept(extracted):
    assert os.lstat(extracted / "bin/busybox").st_mtime == T0 + 3
    assert os.lstat(extracted / "a/b/c/deep.txt").st_mtime == T0 + 9


def test_directory_mtime_is_kept_after_its_entries_are_written(extracted):
    assert os.lstat(extracted / "bin").st_mtime == T0 + 2
    assert os.lstat(extracted / "a/b/c").st_mtime == T0 + 8
    assert os.lstat(extracted / "home/user").st_mtime == T0 + 6
    assert os.lstat(extracted / "tmp").st_mtime == T0 + 5


def test_root_entry_mtime_is_kept(extracted):
    # GNU tar applies the "./" entry's mtime to the directory it extracts into
    assert os.lstat(extracted).st_mtime == T0 + 1


def test_absolute_symlink_is_kept_verbatim(extracted):
    link = extracted / "bin/sh"
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert os.readlink(link) == "/bin/busybox"


def test_hardlink_shares_the_inode_of_its_target(extracted):
    a = os.lstat(extracted / "bin/busybox")
    b = os.lstat(extracted / "bin/busybox.hard")
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    assert a.st_nlink == 2


def test_character_device_has_its_numbers(extracted):
    st = os.lstat(extracted / "dev/null")
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_block_device_has_its_numbers(extracted):
    st = os.lstat(extracted / "dev/loop0")
    assert stat.S_ISBLK(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 0)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 6)


def test_fifo_is_created(extracted):
    st = os.lstat(extracted / "run/initctl")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_every_supported_compression_is_detected(tmp_path, root, compression):
    archive = make_tar(tmp_path / "img.tar", [file("./hello", b"hi\n")], compression=compression)
    extract_tar(str(archive), str(root))
    assert (root / "hello").read_bytes() == b"hi\n"


def test_a_file_object_is_accepted_as_source(normal_tar, root):
    with open(normal_tar, "rb") as f:
        extract_tar(f, str(root))
    assert (root / "bin/busybox").read_bytes() == b"#!busybox\n" * 100


def test_a_later_file_entry_replaces_an_earlier_hardlink_without_writing_through_it(tmp_path, root):
    archive = make_tar(tmp_path / "t.tar.gz", [
        file("a", b"first\n"), hardlink("b", "a"), file("b", b"second\n")])
    extract_tar(str(archive), str(root))
    assert (root / "a").read_bytes() == b"first\n"
    assert (root / "b").read_bytes() == b"second\n"
    assert os.lstat(root / "a").st_nlink == 1



def test_a_file_replacing_an_earlier_directory_keeps_its_own_mtime(tmp_path, root):
    # GNU tar gives the file its own mtime, not the replaced directory's
    archive = make_tar(tmp_path / "t.tar.gz", [directory("d/", mtime=T0), file("d", b"hi", mtime=T0 + 50)])
    extract_tar(str(archive), str(root))
    assert (root / "d").read_bytes() == b"hi"
    assert os.lstat(root / "d").st_mtime == T0 + 50

# --- the same result as GNU tar ------------------------------------------------

def tree(top: Path) -> dict[str, tuple]:
    """Every path under ``top`` with (mode, uid, gid, type, link target, rdev)."""
    found = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files + ["."]:
            path = os.path.join(base, name)
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            rel = os.path.normpath(os.path.relpath(path, top))
            found[rel] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, stat.S_IFMT(st.st_mode),
                          target, st.st_rdev)
    return found


def test_result_matches_gnu_tar(normal_tar, extracted, tmp_path):
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(normal_tar), "-C", str(gnu)], check=True)
    ours, theirs = tree(extracted), tree(gnu)
    assert len(ours) == len(NORMAL)  # every entry (and "." for "./") is there
    assert ours == theirs


def test_busybox_image_matches_gnu_tar(busybox_tarball, root, tmp_path):
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(busybox_tarball), "-C", str(gnu)], check=True)
    extract_tar(str(busybox_tarball), str(root))
    assert tree(root) == tree(gnu)


# --- hostile archives: refused, and nothing written outside --------------------

def refuse(tmp_path: Path, root: Path, entries: list, error=UnsafeArchiveError) -> str:
    """Extract ``entries``: it must raise ``error`` and leave everything
    outside ``root`` exactly as it was.  Returns the error message."""
    archive = make_tar(tmp_path / "hostile.tar.gz", entries)
    before = snapshot(tmp_path, skip=root)
    with pytest.raises(error) as info:
        extract_tar(str(archive), str(root))
    assert snapshot(tmp_path, skip=root) == before
    return str(info.value)


def test_dotdot_entry_is_refused(tmp_path, root, outside):
    message = refuse(tmp_path, root, [file("../outside/x", b"pwned")])
    assert "../outside/x" in message
    assert os.listdir(outside) == []


def test_dotdot_in_the_middle_is_refused(tmp_path, root, outside):
    message = refuse(tmp_path, root, [file("a/../../outside/x", b"pwned")])
    assert "a/../../outside/x" in message
    assert os.listdir(outside) == []


def test_absolute_entry_is_refused(tmp_path, root, outside):
    name = f"{outside}/x"
    message = refuse(tmp_path, root, [file(name, b"pwned")])
    assert name in message
    assert os.listdir(outside) == []


def test_write_through_absolute_symlink_is_refused(tmp_path, root, outside):
    message = refuse(tmp_path, root, [symlink("evil", str(outside)), file("evil/pwned", b"pwned")])
    assert "evil/pwned" in message and "symlink" in message
    assert os.listdir(outside) == []


def test_write_through_relative_symlink_is_refused(tmp_path, root, outside):
    message = refuse(tmp_path, root, [symlink("up", "../outside"), file("up/pwned", b"pwned")])
    assert "up/pwned" in message
    assert os.listdir(outside) == []


def test_write_through_relative_symlink_to_grandparent_is_refused(tmp_path, root, outside):
    refuse(tmp_path, root, [symlink("up", "../.."), file("up/pwned", b"pwned")])
    assert os.listdir(outside) == []
    assert not (tmp_path.parent / "pwned").exists()


def test_symlink_through_a_symlink_is_refused(tmp_path, root, outside):
    refuse(tmp_path, root, [symlink("evil", str(outside)), symlink("evil/link", "/etc/shadow")])
    assert os.listdir(outside) == []


def test_directory_through_a_symlink_is_refused(tmp_path, root, outside):
    refuse(tmp_path, root, [symlink("evil", str(outside)), directory("evil/sub/")])
    assert os.listdir(outside) == []


def test_file_entry_replaces_a_symlink_instead_of_writing_through_it(tmp_path, root, host_file):
    archive = make_tar(tmp_path / "t.tar.gz", [symlink("f", str(host_file)), file("f", b"pwned")])
    extract_tar(str(archive), str(root))
    assert host_file.read_bytes() == b"host data\n"
    assert not os.path.islink(root / "f")
    assert (root / "f").read_bytes() == b"pwned"


def test_hardlink_to_absolute_host_file_is_refused(tmp_path, root, host_file):
    message = refuse(tmp_path, root, [hardlink("h", str(host_file))])
    assert "'h'" in message and str(host_file) in message
    assert os.lstat(host_file).st_nlink == 1
    assert not os.path.lexists(root / "h")


def test_hardlink_to_dotdot_is_refused(tmp_path, root, host_file):
    refuse(tmp_path, root, [hardlink("h", "../host-file")])
    assert os.lstat(host_file).st_nlink == 1
    assert not os.path.lexists(root / "h")


def test_hardlink_through_an_archive_symlink_is_refused(tmp_path, root, host_file):
    refuse(tmp_path, root, [symlink("evil", str(tmp_path)), hardlink("h", "evil/host-file")])
    assert os.lstat(host_file).st_nlink == 1
    assert not os.path.lexists(root / "h")


def test_hardlink_to_a_name_not_in_the_archive_is_refused(tmp_path, root):
    message = refuse(tmp_path, root, [hardlink("h", "missing")], error=ImageError)
    assert "'h'" in message and "missing" in message
    assert not os.path.lexists(root / "h")


def test_directory_replaced_by_symlink_cannot_be_written_through(tmp_path, root, outside):
    message = refuse(tmp_path, root, [
        directory("d/"), symlink("d", str(outside)), file("d/pwned", b"pwned")])
    assert "d/pwned" in message
    assert os.listdir(outside) == []
    assert os.path.islink(root / "d")  # the link was made, but never followed


def test_non_empty_directory_is_not_replaced_by_a_symlink(tmp_path, root, outside):
    message = refuse(tmp_path, root, [
        directory("d/"), file("d/keep", b"keep"), symlink("d", str(outside))], error=ImageError)
    assert "'d'" in message
    assert (root / "d/keep").read_bytes() == b"keep"
    assert os.listdir(outside) == []


# --- entry_parts --------------------------------------------------------------

@pytest.mark.parametrize("name, parts", [
    ("a", ["a"]),
    ("a/b/c", ["a", "b", "c"]),
    ("./a//b/", ["a", "b"]),
    ("a/./b", ["a", "b"]),
    ("./", []),
    (".", []),
    ("", []),
    ("...", ["..."]),
    ("..a/b..", ["..a", "b.."]),
])
def test_entry_parts_splits_names(name, parts):
    assert entry_parts(name) == parts


@pytest.mark.parametrize("name", ["/", "/etc/passwd", "//etc"])
def test_entry_parts_refuses_absolute_names(name):
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        entry_parts(name)


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "a/..", "./../x", "a/b/../../.."])
def test_entry_parts_refuses_dotdot(name):
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        entry_parts(name)


# --- corrupt archives: ImageError with a readable one-line message -------------

def corrupt(tmp_path: Path, root: Path, data: bytes) -> str:
    archive = tmp_path / "corrupt.tar.gz"
    archive.write_bytes(data)
    with pytest.raises(ImageError) as info:
        extract_tar(str(archive), str(root))
    message = str(info.value)
    assert message.startswith(f"cannot unpack image {archive}: ")
    assert "\n" not in message
    assert message.split(f"{archive}: ", 1)[1].strip()  # a reason is given
    return message


def test_truncated_gzip_is_an_image_error(tmp_path, busybox_tarball, root):
    data = busybox_tarball.read_bytes()  # the cut lands inside the busybox binary
    message = corrupt(tmp_path, root, data[: len(data) // 2])
    assert "end of data" in message or "truncated" in message


def test_random_bytes_after_gzip_magic_is_an_image_error(tmp_path, root):
    garbage = random.Random(1).randbytes(4096)
    message = corrupt(tmp_path, root, b"\x1f\x8b\x08\x00" + garbage)
    assert "invalid" in message or "corrupt" in message


def test_gzip_magic_with_unknown_method_is_an_image_error(tmp_path, root):
    corrupt(tmp_path, root, b"\x1f\x8b\x63" + random.Random(2).randbytes(4096))


def test_empty_file_is_an_image_error(tmp_path, root):
    message = corrupt(tmp_path, root, b"")
    assert "empty" in message


def test_text_file_is_an_image_error(tmp_path, root):
    corrupt(tmp_path, root, b"this is not a tar archive\n" * 100)


def test_gzip_header_cut_inside_its_extra_field_is_an_image_error(tmp_path, root):
    # FLG.FEXTRA set, then the file ends before the extra field's length
    corrupt(tmp_path, root, b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x00")


def test_gzip_stream_cut_between_members_is_an_image_error(tmp_path, root):
    """A download cut short right after a complete member: no gzip trailer,
    no end-of-archive blocks.  GNU tar fails; a partial root must not pass."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("first", "second", "third"):
            info, data = file(name, name.encode() * 100)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    one_member = 512 + 512  # header + 500 bytes of data, padded
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    cut = deflate.compress(raw.getvalue()[:one_member]) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert gzip.GzipFile(fileobj=io.BytesIO(cut)).read(one_member) == raw.getvalue()[:one_member]
    (tmp_path / "gnu").mkdir()
    gnu = subprocess.run(["tar", "-xzf", "-", "-C", str(tmp_path / "gnu")], input=cut, capture_output=True)
    assert gnu.returncode != 0  # GNU tar refuses it: so must we
    corrupt(tmp_path, root, cut)


def test_gzip_stream_missing_its_tail_is_an_image_error(tmp_path, normal_tar, root):
    """The last bytes of a .tar.gz lost: the tail entries are gone."""
    data = normal_tar.read_bytes()
    corrupt(tmp_path, root, data[:-100])


# --- gzip framing: members read by kubirun, their deflate data by zlib ----------------

def _gzip_member(data: bytes, header: bytes | None = None, crc: int | None = None,
                 size: int | None = None) -> bytes:
    """One gzip member (RFC 1952) by hand: ``header`` (default: the 10
    plain bytes), raw deflate data, the CRC-32 and length trailer."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    crc = zlib.crc32(data) if crc is None else crc
    size = len(data) if size is None else size
    return (header or b"\x1f\x8b\x08\x00\0\0\0\0\x00\x03") + body + \
        crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


def _a_tar(tmp_path: Path) -> bytes:
    return make_tar(tmp_path / "plain.tar", [file("./hello", random.Random(3).randbytes(70_000))],
                    compression="").read_bytes()


def _inflate(path: Path, prefetched: bool) -> bytes:
    """Every byte of ``path`` through Decoded, read inline or by the
    prefetching thread (which takes the gzip checks over)."""
    from kubirun.image.compression import Decoded, Prefetched

    fd = os.open(path, os.O_RDONLY)
    try:
        stream = Decoded(fd, hash_plain=True)
        reader = Prefetched(stream) if prefetched else stream
        parts = []
        try:
            while chunk := reader.read_chunk():
                parts.append(chunk)
        finally:
            if prefetched:
                reader.close()
        data = b"".join(parts)
        assert stream.plain_digest == "sha256:" + __import__("hashlib").sha256(data).hexdigest()
        return data
    finally:
        os.close(fd)


def test_gzip_header_with_extra_field_name_comment_and_header_crc(tmp_path, root):
    plain = _a_tar(tmp_path)
    head = b"\x1f\x8b\x08" + bytes([2 | 4 | 8 | 16]) + b"\0\0\0\0\x00\x03" + \
        (6).to_bytes(2, "little") + b"AB\x02\x00xy" + b"rootfs.tar\0" + b"a comment\0"
    head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little")
    archive = tmp_path / "flags.tar.gz"
    archive.write_bytes(_gzip_member(plain, head))
    assert gzip.decompress(archive.read_bytes()) == plain  # what gzip itself reads
    extract_tar(str(archive), str(root))
    assert (root / "hello").read_bytes() == random.Random(3).randbytes(70_000)


@pytest.mark.parametrize("read_size", [1 << 20, 7], ids=["1MiB-reads", "7-byte-reads"])
@pytest.mark.parametrize("prefetched", [False, True], ids=["inline", "prefetched"])
def test_concatenated_gzip_members_and_zero_padding_are_one_stream(tmp_path, prefetched,
                                                                   read_size, monkeypatch):
    """Headers, bodies and trailers cut anywhere between two reads."""
    from kubirun.image import compression

    monkeypatch.setattr(compression, "_CHUNK", read_size)
    plain = _a_tar(tmp_path)
    named = b"\x1f\x8b\x08\x08\0\0\0\0\x00\x03" + b"second.tar\0"
    archive = tmp_path / "members.tar.gz"
    archive.write_bytes(_gzip_member(plain[:30_000]) + _gzip_member(b"") +
                        _gzip_member(plain[30_000:], named) + b"\0" * 1000)
    assert _inflate(archive, prefetched) == plain


@pytest.mark.parametrize("prefetched", [False, True], ids=["inline", "prefetched"])
@pytest.mark.parametrize("member, reason", [
    (lambda d: _gzip_member(d, crc=zlib.crc32(d) ^ 1), "data check"),
    (lambda d: _gzip_member(d, size=len(d) + 1), "length check"),
    (lambda d: _gzip_member(d)[:-3], "end of data"),
    (lambda d: _gzip_member(d) + b"\0\0garbage", "header check"),
    (lambda d: _gzip_member(d, b"\x1f\x8b\x08\x02\0\0\0\0\x00\x03\x00\x00"), "header crc"),
    (lambda d: _gzip_member(d, b"\x1f\x8b\x08\x20\0\0\0\0\x00\x03"), "flags"),
], ids=["crc", "length", "cut-trailer", "garbage-after", "header-crc", "reserved-flag"])
def test_a_gzip_member_that_does_not_check_out_is_an_error(tmp_path, prefetched, member, reason):
    from kubirun.image.tarstream import CorruptData

    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(_gzip_member(b"first member, fine") + member(_a_tar(tmp_path)))
    with pytest.raises((CorruptData, EOFError), match=reason):
        _inflate(archive, prefetched)


def test_a_gzip_crc_mismatch_is_an_image_error(tmp_path, root):
    data = _a_tar(tmp_path)
    message = corrupt(tmp_path, root, _gzip_member(data, crc=zlib.crc32(data) ^ 0x100))
    assert "corrupt" in message and "CRC" in message


# --- formats the tar reader must understand ----------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_link_targets(tmp_path, root, fmt):
    long_dir = "d" * 120 + "/"
    long_file = long_dir + "f" * 150
    archive = tmp_path / "long.tar"
    with tarfile.open(archive, "w", format=fmt) as tar:
        for info, data in (directory(long_dir), None), file(long_file, b"long\n"), \
                (symlink("link", "/" + long_file), None):
            info.size = len(data) if data else 0
            tar.addfile(info, io.BytesIO(data) if data else None)
    extract_tar(str(archive), str(root))
    assert (root / long_file).read_bytes() == b"long\n"
    assert os.readlink(root / "link") == "/" + long_file


def test_big_ids_in_base_256(tmp_path, root):
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        info, data = file("big", b"x", uid=3_000_000, gid=3_000_001)
        info.size = 1
        tar.addfile(info, io.BytesIO(data))
    extract_tar(str(archive), str(root))
    st = os.lstat(root / "big")
    assert (st.st_uid, st.st_gid) == (3_000_000, 3_000_001)


def test_zstd_rootfs(tmp_path, root):
    plain = make_tar(tmp_path / "plain.tar", [file("./hello", b"zstd\n")], compression="")
    packed = tmp_path / "rootfs.tar.zst"
    packed.write_bytes(subprocess.run(["zstd", "-q", "-c", str(plain)], capture_output=True,
                                      check=True).stdout)
    extract_tar(str(packed), str(root))
    assert (root / "hello").read_bytes() == b"zstd\n"


def test_truncated_zstd_is_an_image_error(tmp_path, root):
    plain = make_tar(tmp_path / "plain.tar", [file("./hello", random.Random(5).randbytes(100_000))],
                     compression="")
    data = subprocess.run(["zstd", "-q", "-c", str(plain)], capture_output=True, check=True).stdout
    corrupt(tmp_path, root, data[: len(data) // 2])


def test_bad_header_checksum_is_an_image_error(tmp_path, root):
    data = bytearray(make_tar(tmp_path / "t.tar", [file("a", b"a")], compression="").read_bytes())
    data[0] ^= 0xFF  # the name changes, the checksum does not
    corrupt(tmp_path, root, bytes(data))


def test_xattrs_user_and_capability_kept_trusted_ignored(tmp_path, root):
    archive = tmp_path / "x.tar"
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info, data = file("f", b"f")
        info.size = 1
        info.pax_headers = {"SCHILY.xattr.user.note": "hello",
                            "SCHILY.xattr.trusted.overlay.opaque": "y",
                            "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}
        tar.addfile(info, io.BytesIO(data))
    extract_tar(str(archive), str(root))
    assert os.getxattr(root / "f", "user.note") == b"hello"
    assert os.getxattr(root / "f", "security.capability") == cap
    assert "trusted.overlay.opaque" not in os.listxattr(root / "f")


# --- layers: whiteouts, applied or in overlayfs's format -------------------------------

def apply_layers(tmp_path: Path, dest: Path, layers: list[list], mode: str = "apply",
                 lowers: tuple = ()) -> None:
    from kubirun.image.compression import Decoded
    from kubirun.image.extract import RootWriter, apply_tar
    from kubirun.image.tarstream import TarReader

    writer = RootWriter(str(dest), whiteouts=mode, lowers=tuple(str(p) for p in lowers))
    try:
        for n, entries in enumerate(layers):
            archive = make_tar(tmp_path / f"layer{n}.tar", entries, compression="")
            fd = os.open(archive, os.O_RDONLY)
            try:
                writer.begin_layer()
                apply_tar(TarReader(Decoded(fd)), writer)
            finally:
                os.close(fd)
        writer.finish()
    finally:
        writer.close()


def test_whiteouts_applied(tmp_path, root):
    apply_layers(tmp_path, root, [
        [directory("d/"), file("d/a", b"a"), file("d/b", b"b"), directory("gone/"), file("gone/x", b"x"),
         directory("o/"), file("o/old", b"old"), directory("o/sub/"), file("o/sub/deep", b"deep"),
         directory("full/"), file("full/x", b"x")],
        [file("d/.wh.a", b""), file(".wh.gone", b""), file("o/.wh..wh..opq", b""),
         file("o/new", b"new"), file("full", b"now a file"), file(".wh.never-was", b"")],
    ])
    assert sorted(os.listdir(root / "d")) == ["b"]
    assert not os.path.lexists(root / "gone")
    assert sorted(os.listdir(root / "o")) == ["new"]
    assert (root / "full").read_bytes() == b"now a file"  # a directory of an earlier layer


def test_opaque_marker_after_its_own_layers_entries_keeps_them(tmp_path, root):
    apply_layers(tmp_path, root, [
        [directory("o/"), file("o/old", b"old")],
        [directory("o/"), file("o/new", b"new"), file("o/.wh..wh..opq", b"")],
    ])
    assert sorted(os.listdir(root / "o")) == ["new"]


def test_whiteouts_in_overlay_format(tmp_path, root):
    apply_layers(tmp_path, root, [[file("d/.wh.a", b""), file("o/.wh..wh..opq", b""), file("o/n", b"n")]],
                 mode="overlay")
    st = os.lstat(root / "d" / "a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "o", "trusted.overlay.opaque") == b"y"


@pytest.mark.parametrize("name", [".wh..", ".wh...", "d/.wh.."])
def test_whiteout_of_dot_or_dotdot_is_refused(tmp_path, root, name):
    with pytest.raises(UnsafeArchiveError, match="whiteout"):
        apply_layers(tmp_path, root, [[directory("d/")], [file(name, b"")]])


def test_overlay_mode_refuses_a_lower_layers_symlink(tmp_path, root, outside):
    lower = tmp_path / "lower"
    lower.mkdir()
    apply_layers(tmp_path, lower, [[symlink("etc", str(outside))]], mode="overlay")
    with pytest.raises(UnsafeArchiveError, match="earlier layer"):
        apply_layers(tmp_path, root, [[file("etc/passwd", b"x")]], mode="overlay", lowers=(lower,))
    assert os.listdir(outside) == []


def test_overlay_mode_hardlink_to_a_lower_layer_copies_it(tmp_path, root):
    lower = tmp_path / "lower"
    lower.mkdir()
    apply_layers(tmp_path, lower, [[directory("bin/"), file("bin/tool", b"tool", 0o4755)]], mode="overlay")
    apply_layers(tmp_path, root, [[hardlink("bin/alias", "bin/tool")]], mode="overlay", lowers=(lower,))
    assert (root / "bin/alias").read_bytes() == b"tool"
    assert mode_of(root / "bin/alias") == 0o4755
    assert not (root / "bin/tool").exists()


def test_prefetched_stream_passes_errors_on(tmp_path):
    from kubirun.image.compression import Decoded, Prefetched

    path = tmp_path / "bad.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(9).randbytes(10_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        stream = Prefetched(Decoded(fd))
        with pytest.raises(zlib.error):
            while stream.read_chunk():
                pass
    finally:
        os.close(fd)


def test_overlay_markers_refused_by_the_file_system_become_plain_files(tmp_path, root, monkeypatch):
    """A store on a file system that refuses overlayfs's markers (an
    overlayfs itself): whiteouts stay .wh. files, and a copy applies them."""
    from kubirun.image.extract import RootWriter, copy_tree

    lower = tmp_path / "lower"
    lower.mkdir()
    apply_layers(tmp_path, lower, [[directory("o/"), file("o/old", b"old"), file("gone", b"x")]],
                 mode="overlay")
    real_mknod, real_setxattr = os.mknod, os.setxattr

    def no_whiteout_devices(path, mode=0o600, device=0, *, dir_fd=None):
        if stat.S_ISCHR(mode) and device == 0:
            raise PermissionError(1, "Operation not permitted")
        return real_mknod(path, mode, device, dir_fd=dir_fd)

    def no_trusted(path, name, value, *args, **kwargs):
        if name.startswith("trusted."):
            raise PermissionError(1, "Operation not permitted")
        return real_setxattr(path, name, value, *args, **kwargs)

    monkeypatch.setattr(os, "mknod", no_whiteout_devices)
    monkeypatch.setattr(os, "setxattr", no_trusted)
    upper = tmp_path / "upper"
    upper.mkdir()
    writer = RootWriter(str(upper), whiteouts="overlay", lowers=(str(lower),))
    try:
        from kubirun.image.compression import Decoded
        from kubirun.image.extract import apply_tar
        from kubirun.image.tarstream import TarReader

        archive = make_tar(tmp_path / "top.tar", [file(".wh.gone", b""), directory("o/"),
                                                  file("o/.wh..wh..opq", b""), file("o/new", b"new")],
                           compression="")
        fd = os.open(archive, os.O_RDONLY)
        try:
            apply_tar(TarReader(Decoded(fd)), writer)
        finally:
            os.close(fd)
        writer.finish()
        assert writer.plain_markers
    finally:
        writer.close()
    monkeypatch.undo()
    assert (upper / ".wh.gone").is_file() and (upper / "o" / ".wh..wh..opq").is_file()
    flat = RootWriter(str(root))
    try:
        copy_tree(str(lower), flat, overlay_whiteouts=True)
        copy_tree(str(upper), flat, overlay_whiteouts=True)
        flat.finish()
    finally:
        flat.close()
    assert sorted(os.listdir(root)) == ["o"]
    assert sorted(os.listdir(root / "o")) == ["new"]


def test_opaque_marker_under_a_symlink_is_refused(tmp_path, root, outside):
    (outside / "keep").write_text("keep")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        apply_layers(tmp_path, root, [[symlink("s", str(outside))], [file("s/.wh..wh..opq", b"")]])
    assert (outside / "keep").read_text() == "keep"


def test_overlay_mode_implied_directories_keep_the_lower_layers_attributes(tmp_path, root):
    """umoci writes `data/.wh.a` without a `data/` entry: the new layer's
    data/ must not turn the merged /data into root's 0755."""
    lower = tmp_path / "lower"
    lower.mkdir()
    apply_layers(tmp_path, lower, [[directory("data/", 0o1770, uid=12, gid=34, mtime=T0 + 3),
                                    file("data/a", b"a")]], mode="overlay")
    apply_layers(tmp_path, root, [[file("data/.wh.a", b""), file("data/c", b"c")]], mode="overlay",
                 lowers=(lower,))
    st = os.lstat(root / "data")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o1770, 12, 34, T0 + 3)
