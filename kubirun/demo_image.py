"""``kubirun demo image``: "an image is basically a tar.gz".

Made at demo time, in a temporary directory, with nothing downloaded: a
two-layer OCI image whose first layer is the demo's busybox.tar.gz as it
is, and whose second (a small tar made here with ``tarfile``) adds
/etc/motd and deletes /bin/vi with a whiteout (``bin/.wh.vi``).  It runs in
a throwaway store; the container reads its root's overlay mount (each
layer a ``lowerdir``, its own ``upperdir``) and writes a file, which the
demo then finds in the upper directory and in neither layer.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from kubirun.base.errors import KubirunError

MOTD = b"hello from layer 2\n"
WRITTEN = "/written-inside.txt"
# The container's side: what it sees, then it writes a file and waits (its
# root stays mounted) until the demo has looked at the host's side.
SCRIPT = (f"echo \"motd: $(cat /etc/motd)\"; ls /bin/vi 2>/dev/null || echo 'vi: gone';"
          f" echo 'written inside' > {WRITTEN};"
          " echo \"root $(grep ' / / ' /proc/self/mountinfo)\"; echo READY; read _ || true")


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _entry(name: str, data: bytes | None = None, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = len(data), mode
    return info, data


def base_layer(image: str, tmp: str) -> str:
    """The first layer: ``image`` itself if it is a tar.gz; a directory
    (the demo root of a pip install) is packed first."""
    if os.path.isfile(image):
        return image
    packed = os.path.join(tmp, "base.tar.gz")
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(image, ".")
    return packed


def write_layout(base: str, layout: str) -> list[tuple[str, list[str]]]:
    """An OCI image layout at ``layout``: ``base`` as layer 1, the motd and
    the whiteout as layer 2.  Each layer's digest and first entries."""
    with open(base, "rb") as f:
        layer1 = f.read()
    layer2 = _tar_gz([_entry("etc", None), _entry("etc/motd", MOTD),
                      _entry("bin", None), _entry("bin/.wh.vi", b"", 0o600)])
    diff_ids = [_sha256(gzip.decompress(layer)) for layer in (layer1, layer2)]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"

    def descriptor(media_type: str, data: bytes) -> dict:
        return {"mediaType": media_type, "digest": _sha256(data), "size": len(data)}

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor(gz, layer1), descriptor(gz, layer2)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        descriptor("application/vnd.oci.image.manifest.v1+json", manifest)]}).encode()
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    for blob in (layer1, layer2, config, manifest):
        with open(os.path.join(blobs, _sha256(blob)[7:]), "wb") as f:
            f.write(blob)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(index)
    return [(_sha256(layer), _names(layer)) for layer in (layer1, layer2)]


def _names(layer: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        return tar.getnames()


def _show_entries(names: list[str], first: int = 6) -> None:
    for name in names[:first]:
        print(f"    {name}")
    if len(names) > first:
        print(f"    ... and {len(names) - first} more entries")


def image(image_path: str) -> int:
    tmp = tempfile.mkdtemp(prefix="kubirun-demo-image.")
    try:
        return _demo(image_path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _demo(image_path: str, tmp: str) -> int:
    base = base_layer(image_path, tmp)
    _heading(f"{os.path.basename(base)} is a gzip-compressed tar: its entries")
    with tarfile.open(base, "r:gz") as tar:
        names = tar.getnames()
    print(f"{len(names)} entries, a whole root file system:")
    _show_entries(names)

    layout = os.path.join(tmp, "layout")
    layers = write_layout(base, layout)
    _heading(f"a two-layer OCI image, made just now in {layout}")
    print("oci-layout, index.json -> manifest -> config + layers (every blob a file named by"
          " its sha256):")
    for number, (digest, entries) in enumerate(layers, 1):
        print(f"  layer {number}: blobs/sha256/{digest[7:19]}... ({len(entries)} entries)")
        if number == 2:
            _show_entries(entries)
    print("  (bin/.wh.vi is a whiteout: layer 2 deletes /bin/vi of layer 1)")

    _heading("run it: kubirun run LAYOUT -- sh  (in a throwaway store)")
    store = os.path.join(tmp, "store")
    env = dict(os.environ, KUBIRUN_STORE=store)
    child = subprocess.Popen([sys.executable, "-m", "kubirun", "run", "--network", "none", layout,
                              "--", "sh", "-c", SCRIPT], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        seen: dict[str, str] = {}
        for line in child.stdout:
            if line.strip() == "READY":
                break
            key, _, value = line.rstrip("\n").partition(" ")
            seen[key] = value
            if key != "root":
                print(f"  inside: {line.rstrip()}")
        else:
            raise KubirunError(f"the demo container ended early (exit {child.wait()})")
        options = dict(option.partition("=")[::2] for option in
                       seen.get("root", "").rpartition(" - ")[2].split(" ")[-1].split(","))
        lowers, upper = options.get("lowerdir", "").split(":"), options.get("upperdir", "")
        if not upper:
            raise KubirunError("the container's root is not an overlay here (no overlayfs?)")
        _show_stack(lowers, upper)
    finally:
        child.stdin.close()
        code = child.wait()
    if code != 0:
        raise KubirunError(f"the demo container exited {code}")
    print("\nShown: an image is a stack of tar.gz layers (the first one busybox.tar.gz as it is,"
          " a whiteout deleting a file below it); overlay stacks them read-only as lowerdirs, and"
          " what the container writes lands in its own upperdir, the layers untouched.")
    return 0


def _show_stack(lowers: list[str], upper: str) -> None:
    _heading("the container's root, from its mount: overlay")
    print(f"  upperdir  {upper}   (the container's own, writable)")
    for number, lower in enumerate(lowers):
        print(f"  lowerdir  {lower}   (layer {len(lowers) - number}, read-only)")
    _heading(f"where {WRITTEN} went")
    path = upper + WRITTEN
    if os.path.exists(path):
        with open(path) as f:
            print(f"  upperdir: {WRITTEN} = {f.read().strip()!r}")
    else:
        print(f"  upperdir: no {WRITTEN}")
    for number, lower in enumerate(lowers):
        state = "present" if os.path.lexists(lower + WRITTEN) else "absent (untouched)"
        print(f"  layer {len(lowers) - number}: {WRITTEN} {state}")
    top = lowers[0] if lowers else ""
    whiteout = os.path.join(top, "bin", "vi")
    if os.path.lexists(whiteout):
        st = os.lstat(whiteout)
        print(f"  layer 2's bin/vi on disk: a character device {os.major(st.st_rdev)},"
              f"{os.minor(st.st_rdev)}: overlay's whiteout, hiding layer 1's /bin/vi")
