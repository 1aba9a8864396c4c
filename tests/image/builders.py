"""Image archives made byte by byte, for what real tools never write (or
write only on another machine): nested indexes and foreign platforms,
zstd layers, opaque directories, hard links across layers, tampered
digests, hostile entries."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

T0 = 1_600_000_000

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               None: "application/vnd.oci.image.layer.v1.tar"}


# --- tar entries -------------------------------------------------------------

def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0, gid: int = 0,
          mtime: int = T0, linkname: str = "", dev: tuple[int, int] = (0, 0),
          xattrs: dict[str, bytes] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    info.linkname = linkname
    info.devmajor, info.devminor = dev
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in xattrs.items()}
    return info


def directory(name: str, mode: int = 0o755, **kw) -> tarfile.TarInfo:
    return entry(name, tarfile.DIRTYPE, mode, **kw)


def symlink(name: str, target: str) -> tarfile.TarInfo:
    return entry(name, tarfile.SYMTYPE, 0o777, linkname=target)


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    return entry(name, tarfile.LNKTYPE, 0o644, linkname=target)


def file(name: str, data: bytes, mode: int = 0o644, **kw) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.REGTYPE, mode, **kw), data


def whiteout(path: str) -> tuple[tarfile.TarInfo, bytes]:
    head, _, name = path.rpartition("/")
    return file(f"{head + '/' if head else ''}.wh.{name}", b"")


def opaque(directory_path: str) -> tuple[tarfile.TarInfo, bytes]:
    return file(f"{directory_path.rstrip('/')}/.wh..wh..opq", b"")


def tar_bytes(entries: list) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in entries:
            info, data = item if isinstance(item, tuple) else (item, None)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return raw.getvalue()


BLOCK = 512


# --- raw tar headers: what tarfile would never write --------------------------------

def _raw_header(name: bytes, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644,
           linkname: bytes = b"", dev: tuple[int, int] = (0, 0)) -> bytearray:
    block = bytearray(BLOCK)
    block[0:len(name)] = name[:100]
    block[100:108] = b"%07o\0" % mode
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % T0
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    block[329:337] = b"%07o\0" % dev[0]
    block[337:345] = b"%07o\0" % dev[1]
    return block


def _raw_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _raw_pax_data(records: list[tuple[bytes, bytes]]) -> bytes:
    body = b""
    for key, value in records:
        record = b" " + key + b"=" + value + b"\n"
        length = len(record) + 1
        while len(str(length)) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    return body


def _raw_padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


class RawMember:
    """One entry: its header (mutable), data, and pax records before it."""

    def __init__(self, name: bytes, typeflag: bytes = b"0", data: bytes = b"",
                 linkname: bytes = b"", dev: tuple[int, int] = (0, 0), mode: int = 0o644) -> None:
        self.header = _raw_header(name, typeflag, len(data), mode, linkname, dev)
        self.data = data
        self.pax: list[tuple[bytes, bytes]] = []
        self.raw_pax: bytes | None = None  # a malformed pax body, as is
        self.fix_checksum = True

    def to_bytes(self) -> bytes:
        out = b""
        if self.pax or self.raw_pax is not None:
            body = _raw_pax_data(self.pax) if self.raw_pax is None else self.raw_pax
            out += _raw_checksum(_raw_header(b"PaxHeader", b"x", len(body))) + _raw_padded(body)
        block = _raw_checksum(self.header) if self.fix_checksum else bytes(self.header)
        return out + block + _raw_padded(self.data)


def raw_tar(members: list[RawMember]) -> bytes:
    """The members, then the two zero blocks that end an archive."""
    return b"".join(m.to_bytes() for m in members) + b"\0" * (2 * BLOCK)


def compress(data: bytes, how: str | None) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    if how == "xz":
        import lzma

        return lzma.compress(data)
    return data


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_entries(busybox_tarball: Path) -> bytes:
    """The demo image's uncompressed tar: a base layer that runs."""
    return gzip.decompress(busybox_tarball.read_bytes())


# --- OCI layouts -----------------------------------------------------------------

class Oci:
    """Blobs of an OCI layout, and its index; written as a directory or a tar."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: list[dict] = []

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = sha256(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def layer(self, tar: bytes, compression: str | None = "gzip") -> tuple[dict, str]:
        return self.blob(compress(tar, compression), LAYER_TYPES[compression]), sha256(tar)

    def image(self, layers: list[tuple[dict, str]], config: dict | None = None,
              arch: str = "amd64", os_name: str = "linux", diff_ids: list[str] | None = None) -> dict:
        """A manifest (and its config); returns the manifest's descriptor."""
        image_config = {
            "architecture": arch, "os": os_name, "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [d for _, d in layers]},
        }
        config_desc = self.blob(json.dumps(image_config).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                    "layers": [desc for desc, _ in layers]}
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)

    def index(self, descriptors: list[dict]) -> dict:
        """A nested index blob; returns its descriptor."""
        return self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                     "manifests": descriptors}).encode(), OCI_INDEX)

    @staticmethod
    def with_platform(desc: dict, arch: str, os_name: str = "linux") -> dict:
        return {**desc, "platform": {"architecture": arch, "os": os_name}}

    @staticmethod
    def named(desc: dict, name: str) -> dict:
        return {**desc, "annotations": {"org.opencontainers.image.ref.name": name}}

    def files(self, top: list[dict]) -> dict[str, bytes]:
        found = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                 "index.json": json.dumps({"schemaVersion": 2, "manifests": top}).encode()}
        for digest, data in self.blobs.items():
            found["blobs/sha256/" + digest.partition(":")[2]] = data
        return found

    def write_dir(self, path: Path, top: list[dict]) -> Path:
        for name, data in self.files(top).items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        return path

    def write_tar(self, path: Path, top: list[dict], compression: str | None = None) -> Path:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in self.files(top).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path.write_bytes(compress(raw.getvalue(), compression))
        return path


def oci_image(path: Path, layers: list[bytes], config: dict | None = None,
              compression: str | None = "gzip", as_dir: bool = False) -> Path:
    """An OCI layout (tar, or directory) of one image from uncompressed layer tars."""
    oci = Oci()
    manifest = oci.image([oci.layer(tar, compression) for tar in layers], config)
    if as_dir:
        path.mkdir()
        return oci.write_dir(path, [manifest])
    return oci.write_tar(path, [manifest])


def docker_archive(path: Path, layers: list[bytes], config: dict | None = None,
                   tags: tuple[str, ...] = ("example/app:1",)) -> Path:
    """A legacy ``docker save`` archive: ``ID/layer.tar`` and manifest.json."""
    image_config = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {},
                               "rootfs": {"type": "layers",
                                          "diff_ids": [sha256(t) for t in layers]}}).encode()
    config_name = sha256(image_config).partition(":")[2] + ".json"
    files = {config_name: image_config}
    names = []
    for tar in layers:
        layer_id = hashlib.sha256(b"id" + tar).hexdigest()
        files[f"{layer_id}/layer.tar"] = tar
        files[f"{layer_id}/VERSION"] = b"1.0"
        names.append(f"{layer_id}/layer.tar")
    files["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": list(tags),
                                          "Layers": names}]).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path
