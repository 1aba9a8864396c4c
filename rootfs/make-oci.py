"""make-oci.py ROOTFS.tar.gz OUTPUT CONFIG-JSON: a one-layer OCI image
archive (oci-layout, index.json, blobs/), gzip-compressed, whose layer is
ROOTFS.tar.gz as it is and whose config is CONFIG-JSON (the image spec's
``config`` object: Cmd, Env, User, WorkingDir, ExposedPorts...).

So that ``kubirun run OUTPUT`` starts the image's program: a root
filesystem tarball alone has no config.  Standard library only.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def sha256_file(path: str, opener=open) -> str:
    digest = hashlib.sha256()
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def main(rootfs: str, output: str, config_text: str) -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    image_config = json.dumps({
        "architecture": arch, "os": "linux", "config": json.loads(config_text),
        "rootfs": {"type": "layers", "diff_ids": [sha256_file(rootfs, gzip.open)]},
    }).encode()

    def descriptor(media_type: str, data: bytes | None = None, path: str | None = None) -> dict:
        size = len(data) if data is not None else os.path.getsize(path)
        digest = "sha256:" + hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
        return {"mediaType": media_type, "digest": digest, "size": size}

    layer = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", path=rootfs)
    config = descriptor("application/vnd.oci.image.config.v1+json", image_config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [layer]}).encode()
    name = os.path.basename(output).split(".")[0]
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        **descriptor("application/vnd.oci.image.manifest.v1+json", manifest),
        "annotations": {"org.opencontainers.image.ref.name": name}}]}).encode()

    def add(tar: tarfile.TarFile, path: str, data: bytes) -> None:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    tmp = output + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
        add(tar, "blobs/sha256/" + config["digest"][7:], image_config)
        add(tar, "blobs/sha256/" + hashlib.sha256(manifest).hexdigest(), manifest)
        tar.add(rootfs, "blobs/sha256/" + layer["digest"][7:], recursive=False)
    os.replace(tmp, output)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[0])
    main(*sys.argv[1:])
