"""From the IMAGE argument to a root filesystem directory.

IMAGE is either a directory, used in place as the root (``chroot``-like),
or a tar archive of a root filesystem (``.tar``, ``.tar.gz``, ...), detected
by content, unpacked into the container's own directory.
"""
from __future__ import annotations

import os

from kubirun.errors import ImageError

_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"


def looks_like_tar(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((_GZIP, _BZIP2, _XZ)):
        return True
    return len(head) == 512 and head[257:262] == b"ustar"


def materialize(image: str, unpack_dir: str) -> str:
    """The root directory: ``image`` itself, or ``unpack_dir`` filled from it."""
    if not os.path.exists(image):
        raise ImageError(f"image {image}: no such file or directory")
    if os.path.isdir(image):
        return os.path.abspath(image)
    try:
        is_tar = looks_like_tar(image)
    except OSError as err:
        raise ImageError(f"image {image}: {err.strerror}") from err
    if not is_tar:
        raise ImageError(f"image {image}: not a directory or a tar archive")
    from kubirun.image.extract import extract_tar  # only runs that unpack pay for tarfile

    os.mkdir(unpack_dir, 0o755)
    extract_tar(image, unpack_dir)
    return unpack_dir
