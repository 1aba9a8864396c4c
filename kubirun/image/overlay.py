"""A container's root from the store's layers: an overlay mount (the layers
read-only below, the container's own ``upper`` and ``work`` directories
above), or a copy where overlayfs is unavailable (or ``--keep`` asks for a
root that outlives the container).

The mount is made in the caller's mount namespace at
``CONTAINER_DIR/rootfs``; ``unmount`` (called when the container is
deleted, before its directory is removed) takes it away again.
"""
from __future__ import annotations

import errno
import os

from kubirun import _native
from kubirun.base import explain
from kubirun.base.errors import KubirunError


class OverlayUnavailable(KubirunError):
    """overlayfs cannot be used here (no such file system, options refused,
    or the store's file system cannot be an upper layer)."""


_MAX_OPTIONS = 4000  # the mount data is one page


def mount(layers: list[str], container_dir: str, empty_lower: str) -> str:
    """Mount the overlay of ``layers`` (bottom first) at
    ``container_dir/rootfs``; its path."""
    upper = os.path.join(container_dir, "upper")
    work = os.path.join(container_dir, "work")
    rootfs = os.path.join(container_dir, "rootfs")
    lowers = list(reversed(layers)) or [empty_lower]
    if any(c in p for p in lowers + [upper, work] for c in ",:\\"):
        raise OverlayUnavailable("a path with ',', ':' or '\\' cannot be given to overlayfs")
    for d in (upper, work, rootfs):
        os.mkdir(d, 0o755)
    if layers:
        _copy_root_attrs(layers[-1], upper)
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    cwd = None
    if len(options) > _MAX_OPTIONS:
        # Relative lower paths, from the layers' directory: ~70 bytes a layer.
        base = os.path.dirname(lowers[0])
        if any(os.path.dirname(p) != base for p in lowers):
            raise OverlayUnavailable("too many layers for one overlay mount")
        options = (f"lowerdir={':'.join(os.path.basename(p) for p in lowers)},"
                   f"upperdir={upper},workdir={work}")
        if len(options) > _MAX_OPTIONS:
            raise OverlayUnavailable(f"too many layers ({len(layers)}) for one overlay mount")
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        os.chdir(base)
    explain.say("mount('overlay', {!r}, 'overlay', 0, {!r})", "the image's layers stacked"
                " read-only below the container's own upper directory", rootfs, options)
    try:
        _native.mount("overlay", rootfs, "overlay", 0, options)
    except OSError as err:
        if err.errno in (errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.ENOTSUP):
            for d in (rootfs, work, upper):
                _remove(d)
            raise OverlayUnavailable(err.strerror or str(err)) from None
        raise
    finally:
        if cwd is not None:
            os.fchdir(cwd)
            os.close(cwd)
    return rootfs


def _copy_root_attrs(layer: str, upper: str) -> None:
    """The merged root takes the upper directory's owner and mode: give it
    the top layer's."""
    st = os.stat(layer, follow_symlinks=False)
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, st.st_mode & 0o7777)


def _remove(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def unmount(container_dir: str) -> None:
    """Unmount ``container_dir/rootfs`` if an overlay is mounted there (one
    system call; nothing to do for a root used in place or copied), then
    remove what the overlay used, with ``os`` calls only (``shutil`` costs
    ~5 ms to import, on every run)."""
    try:
        _native.umount2(os.path.join(container_dir, "rootfs"), _native.MNT_DETACH)
    except OSError as err:
        # EPERM: a user without privileges, who could not have mounted it either
        rootless = err.errno == errno.EPERM and os.geteuid() != 0
        if err.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR) and not rootless:
            raise
        if not os.path.isdir(os.path.join(container_dir, "upper")):
            return
    try:
        fd = os.open(container_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for name in ("upper", "work", "rootfs", "image"):
            try:
                _remove_at(fd, name)
            except OSError:
                pass  # the caller's rmtree has the last word
    finally:
        os.close(fd)


def _remove_at(parent: int, name: str) -> None:
    """rm -r, relative to a directory fd, never following a symlink."""
    try:
        os.unlink(name, dir_fd=parent)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    except PermissionError:  # EPERM: unlink(2) on a directory
        pass
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            _remove_at(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
