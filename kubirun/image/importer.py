"""The cold path: an image file (or layout directory) into the store.

    1. what is it (``formats``): a root filesystem tar, a docker-save
       archive, an OCI layout (directory or tar, compressed or not)
    2. its config and layers, every digest checked (``formats``)
    3. each layer not in the store yet: unpacked under its lock into
       ``tmp/`` by the one extractor (``extract.RootWriter``, overlay
       format), its blob digest and diff_id verified, renamed into place
    4. the image record, and the source record that makes the next run of
       the same file a lookup

A plain root filesystem tarball is an image of one layer, with an empty
config: its diff_id is known once it is unpacked.
"""
from __future__ import annotations

import os
import time

from kubirun.base.errors import ImageError
from kubirun.image import formats
from kubirun.image.compression import (
    PLAIN,
    Budget,
    Decoded,
    Prefetched,
    algorithm_of,
    is_corruption,
    reason,
)
from kubirun.image.extract import RootWriter, apply_tar
from kubirun.image.progress import progress_for
from kubirun.image.tarstream import TarReader
from kubirun.base.killpoint import reached


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def import_into(store, path: str, platform: str | None, ref: str | None,
                budget: Budget | None, show_progress: bool) -> dict:
    label = f"image {path}"
    budget = budget or Budget(label=label)
    want = formats.parse_platform(platform)
    try:
        if os.path.isdir(path):
            kind = formats.directory_kind(path)
            if kind == formats.DIR:
                raise ImageError(f"{label}: a root directory is used in place, not imported")
            members = formats.DirMembers(path)
            try:
                return _import_resolved(store, path, _resolve(kind, members, label, want, ref,
                                                              platform is not None),
                                        budget, show_progress)
            finally:
                members.close()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise ImageError(f"{label}: {err.strerror.lower()}") from None
        try:
            is_tar, compression = formats.looks_like_tar(fd)
            if not is_tar:
                raise ImageError(f"{label}: not a directory or a tar archive")
            archive_fd = fd
            if compression == PLAIN:
                members = formats.TarMembers(path, fd)
                kind = formats.tar_kind(members)
            elif formats.first_entries_look_like_image(fd):
                archive_fd = _decompress_to_tmp(store, fd, label)
                members = formats.TarMembers(path, archive_fd)
                kind = formats.tar_kind(members)
            else:
                kind = formats.ROOTFS
            try:
                if kind == formats.ROOTFS:
                    if ref is not None:
                        raise ImageError(f"{label}: a root filesystem archive has no image {ref!r}")
                    if platform is not None:
                        from kubirun.base import log

                        log.warning(f"{label}: --platform does not apply to a root filesystem"
                                    " tarball (it holds one platform's files, whichever that is)")
                    return _import_rootfs(store, path, fd, budget, want, show_progress)
                resolved = _resolve(kind, members, label, want, ref, platform is not None)
                return _import_resolved(store, path, resolved, budget, show_progress)
            finally:
                if archive_fd != fd:
                    os.close(archive_fd)
        finally:
            os.close(fd)
    except Exception as err:
        if isinstance(err, ImageError) or not is_corruption(err):
            raise
        raise ImageError(f"cannot unpack {label}: {reason(err)}") from err


def _resolve(kind: str, members, label: str, want: dict, ref: str | None,
             explicit: bool) -> formats.Resolved:
    if kind == formats.OCI:
        return formats.resolve_oci(members, label, want, ref, explicit)
    return formats.resolve_docker(members, label, want, ref, explicit)


def _decompress_to_tmp(store, fd: int, label: str) -> int:
    """A compressed image archive (``docker save | gzip``), decompressed
    into an unlinked file of the store: members need random access."""
    out = _unlinked_file(store.tmp)
    try:
        stream = Decoded(fd, 0, budget=Budget(label=label))
        while True:
            chunk = stream.read_chunk()
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
    except BaseException:
        os.close(out)
        raise
    return out


def _unlinked_file(directory: str) -> int:
    """A new file in ``directory`` with no name: nothing is left behind,
    whatever happens."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:  # a file system without O_TMPFILE
        path = _new_name(directory, "archive-", lambda p: os.close(
            os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)))
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.unlink(path)
        return fd


def _new_name(directory: str, prefix: str, make) -> str:
    """``make(path)`` with a path of ``directory`` no one else uses: what
    tempfile does, without importing it (it brings shutil, re, bz2 and
    lzma: a tenth of a cold import's start-up)."""
    while True:
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            make(path)
            return path
        except FileExistsError:
            continue


def _staging(store) -> str:
    path = _new_name(store.tmp, f"layer-{os.getpid()}-", lambda p: os.mkdir(p, 0o700))
    os.chmod(path, 0o755)  # a layer without a "./" entry gets a usable root
    reached("import.staging")
    return path


def _discard(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _unpack(store, span, dest: str, lowers: list[str], budget: Budget, progress,
            blob_digest: str | None = None, diff_id: str | None = None) -> Decoded:
    stream = Prefetched(Decoded(span.fd, span.start, span.length, budget=budget,
                                hash_blob=blob_digest is not None and algorithm_of(blob_digest),
                                hash_plain=algorithm_of(diff_id),
                                progress=progress.advance if progress else None))
    writer = None
    try:
        reader = TarReader(stream)
        writer = RootWriter(dest, whiteouts="overlay", lowers=tuple(lowers))
        apply_tar(reader, writer)
        reader.drain()
        writer.finish()
        reached("import.unpacked")
        if writer.plain_markers:
            store.no_overlay()
    finally:
        stream.close()
        if writer is not None:
            writer.close()
    return stream.decoded


def _import_rootfs(store, path: str, fd: int, budget: Budget, want: dict,
                   show_progress: bool) -> dict:
    size = os.fstat(fd).st_size
    progress = progress_for(f"unpacking {os.path.basename(path)}", size, 1) if show_progress else None
    staging = _staging(store)
    try:
        if progress:
            progress.start_layer(1)
        stream = _unpack(store, formats.Span(fd, 0, size), staging, [], budget, progress)
        diff_id = stream.plain_digest
        _commit(store, staging, diff_id)
    finally:
        if progress:
            progress.done()
        if os.path.exists(staging):
            _discard(staging)
    config = {"architecture": want["architecture"], "os": want["os"], "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    import hashlib

    from kubirun.base import jsonio

    config_bytes = jsonio.dumps(config, sort_keys=True).encode()

    image = {
        "id": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        "names": [], "sources": [os.path.abspath(path)], "format": formats.ROOTFS,
        "platform": formats.platform_text(want),
        "layers": [{"diff_id": diff_id, "size": size, "unpacked": stream.plain_bytes}],
        "config": config, "imported": _now(),
    }
    store.save_image(image)
    return image


def _commit(store, staging: str, diff_id: str) -> None:
    """Rename a verified layer into place (unless another run already did)."""
    with store.lock(diff_id.partition(":")[2]):
        target = store.layer_path(diff_id)
        if os.path.isdir(target):
            return
        os.rename(staging, target)


def _import_resolved(store, path: str, resolved: formats.Resolved, budget: Budget,
                     show_progress: bool) -> dict:
    missing = [layer for layer in resolved.layers
               if not os.path.isdir(store.layer_path(layer.diff_id))]
    progress = None
    if show_progress and missing:
        progress = progress_for(f"unpacking {os.path.basename(path.rstrip('/'))}",
                                sum(layer.size for layer in resolved.layers), len(resolved.layers))
    below: list[str] = []
    layers = []
    try:
        for index, layer in enumerate(resolved.layers, 1):
            target = store.layer_path(layer.diff_id)
            if progress:
                progress.start_layer(index)
            if not os.path.isdir(target):
                _unpack_layer(store, layer, target, below, budget, progress, index)
            else:
                _verify_cached_layer(layer, budget, index)
                if progress:
                    progress.skip(layer.size)
            below.append(target)
            layers.append({"diff_id": layer.diff_id, "size": layer.size,
                           **({"digest": layer.digest} if layer.digest else {})})
    finally:
        if progress:
            progress.done()
    config = resolved.config
    image = {
        "id": resolved.config_digest, "names": resolved.names,
        "sources": [os.path.abspath(path)], "format": resolved.kind,
        "platform": formats.platform_text({"os": config.get("os"),
                                           "architecture": config.get("architecture"),
                                           "variant": config.get("variant")}),
        "layers": layers, "config": config, "imported": _now(),
    }
    store.save_image(image)
    return image


def _verify_cached_layer(layer, budget: Budget, index: int) -> None:
    """A layer already in the store (by its diff_id) is not unpacked
    again, but this archive's copy of it is still checked: a blob that is
    not what the manifest says makes the archive corrupt or tampered with,
    whatever the store holds.  Its digest, when the archive names one
    (hashing the blob as stored: no decompression); else (an old ``docker
    save``'s ``ID/layer.tar``) its uncompressed content against the
    diff_id."""
    import hashlib

    what = f"layer {index} ({layer.diff_id[:19]}…)"
    span = layer.span
    if layer.digest is not None:
        algorithm, _, expected = layer.digest.partition(":")
        digest = hashlib.new(algorithm)
        pos, end = span.start, span.start + span.length
        while pos < end:
            chunk = os.pread(span.fd, min(1 << 20, end - pos), pos)
            if not chunk:
                raise ImageError(f"{what}: the archive is cut short")
            digest.update(chunk)
            pos += len(chunk)
        if digest.hexdigest() != expected:
            raise ImageError(f"{what}: blob digest mismatch (expected {layer.digest}, "
                             f"got {algorithm}:{digest.hexdigest()})")
        return
    stream = Decoded(span.fd, span.start, span.length, budget=budget,
                     hash_plain=algorithm_of(layer.diff_id))
    while stream.read_chunk():
        pass
    if stream.plain_digest != layer.diff_id:
        raise ImageError(f"{what}: diff_id mismatch (expected {layer.diff_id}, "
                         f"got {stream.plain_digest})")


def _unpack_layer(store, layer, target: str, below: list[str], budget: Budget, progress,
                  index: int) -> None:
    with store.lock(layer.diff_id.partition(":")[2]):
        if os.path.isdir(target):  # another import unpacked it meanwhile
            _verify_cached_layer(layer, budget, index)
            return
        staging = _staging(store)
        try:
            stream = _unpack(store, layer.span, staging, list(reversed(below)), budget, progress,
                             layer.digest, layer.diff_id)
            what = f"layer {index} ({layer.diff_id[:19]}…)"
            if layer.digest is not None and stream.blob_digest != layer.digest:
                raise ImageError(f"{what}: blob digest mismatch (expected {layer.digest}, "
                                 f"got {stream.blob_digest})")
            if stream.plain_digest != layer.diff_id:
                raise ImageError(f"{what}: diff_id mismatch (expected {layer.diff_id}, "
                                 f"got {stream.plain_digest})")
            os.rename(staging, target)
        finally:
            if os.path.exists(staging):
                _discard(staging)
