"""From the IMAGE argument to a root filesystem directory.

IMAGE is, by content (never by its name):

- a directory: used in place as the root (``chroot``-like); nothing is
  imported, nothing heavy even imported, unless it is an image layout
  (``oci-layout`` + ``index.json``, or an unpacked ``docker save``);
- a tar archive of a root filesystem (plain, gzip, zstd, xz, bzip2), a
  ``docker save`` archive or an OCI layout archive: imported into the
  store once (``kubirun.image.store``), then every container's root is an
  overlay mount of its layers.

``LAYOUT:NAME`` picks one image of a layout (or docker archive) holding
several (``org.opencontainers.image.ref.name`` or a RepoTag).
"""
from __future__ import annotations

import os

from kubirun.base.errors import ImageError


class Prepared:
    """A container's root, and the image it came from (None for a
    directory root)."""

    def __init__(self, rootfs: str, image: dict | None = None, mounted: bool = False) -> None:
        self.rootfs = rootfs
        self.image = image
        self.mounted = mounted

    @property
    def config(self) -> dict | None:
        """The image config's ``config`` object (Entrypoint, Cmd, Env...)."""
        if self.image is None:
            return None
        return (self.image.get("config") or {}).get("config") or {}


def split_ref(image: str) -> tuple[str, str | None]:
    """``layout.tar:v1`` -> (``layout.tar``, ``v1``) when the whole name
    does not exist but the part before the last colon does."""
    if os.path.lexists(image):
        return image, None
    path, sep, ref = image.rpartition(":")
    if sep and path and ref and "/" not in ref and os.path.exists(path):
        return path, ref
    return image, None


def is_layout_dir(path: str) -> bool:
    """Two stats for a root in place; the full check only when needed."""
    if not (os.path.exists(os.path.join(path, "oci-layout"))
            or os.path.exists(os.path.join(path, "manifest.json"))):
        return False
    from kubirun.image.formats import DIR, directory_kind

    return directory_kind(path) != DIR


def prepare(image: str, container_dir: str, platform: str | None = None,
            copy: bool = False, store: str | None = None) -> Prepared:
    """The root for a container whose directory is ``container_dir``:
    ``image`` itself, or the image's layers (of the image store ``store``,
    None: the default one) mounted (or copied, with ``copy``) at
    ``container_dir/rootfs``."""
    path, ref = split_ref(image)
    if not os.path.exists(path):
        return _from_store(image, container_dir, platform, copy, store)
    if os.path.isdir(path) and ref is None and not is_layout_dir(path):
        if platform is not None:
            raise ImageError(f"--platform: image {image} is a root directory, not an image")
        return Prepared(os.path.abspath(path))
    from kubirun.image.store import Store

    db = Store(store)
    try:
        lock = db.lock(shared=True).__enter__()
    except FileNotFoundError:
        db.ensure()
        lock = db.lock(shared=True).__enter__()
    try:
        record = db.lookup(path, platform, ref)
        if record is None:
            record = db.import_image(path, platform, ref)
        rootfs, mounted = db.make_root(record, container_dir, copy=copy)
    finally:
        lock.__exit__(None, None, None)
    return Prepared(rootfs, record, mounted)


def _from_store(image: str, container_dir: str, platform: str | None, copy: bool,
                store: str | None) -> Prepared:
    """Not a path: an image of the store, by the name or id ``images ls``
    shows (as ``docker run NAME``)."""
    from kubirun.image.store import Store

    db = Store(store)
    if not os.path.isdir(db.root):
        raise ImageError(f"image {image}: no such file or directory")
    try:
        with db.lock(shared=True):
            try:
                record = db.find(image)
            except ImageError as err:
                if "names" in str(err):
                    raise
                raise ImageError(f"image {image}: no such file or directory, nor an image of that"
                                 " name or id in the store (kubirun images ls)") from None
            wanted = platform
            if wanted is not None and record.get("platform") not in (wanted, None):
                raise ImageError(f"image {image}: the stored one is for {record.get('platform')},"
                                 f" not {wanted}")
            rootfs, mounted = db.make_root(record, container_dir, copy=copy)
    except FileNotFoundError:
        raise ImageError(f"image {image}: no such file or directory") from None
    return Prepared(rootfs, record, mounted)
