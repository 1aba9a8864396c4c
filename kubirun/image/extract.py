"""Safe extraction of tar archives into a root filesystem.

Safety comes from how files are created, not from string checks: every
entry is created relative to a directory file descriptor reached by walking
the entry's path one component at a time with ``O_NOFOLLOW``, from the
root's own descriptor.  A path that would leave the root (absolute, ``..``)
or pass through a symlink is refused, and nothing is ever written through a
symlink.  Hard links may only point at files already inside the root.

Unlike ``tarfile``'s filters, this keeps what a root filesystem needs and
GNU tar keeps as root: numeric owners, setuid/setgid/sticky bits, absolute
symlinks and device nodes.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
import zlib
from typing import BinaryIO, Optional, Union  # not on the start-up path

from kubirun.errors import ImageError, UnsafeArchiveError

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


def entry_parts(name: str) -> list[str]:
    """The components of a tar entry's path; refuses absolute paths and
    ``..``.  ``./a//b/`` gives ``["a", "b"]``; the root itself gives ``[]``."""
    if name.startswith("/"):
        raise UnsafeArchiveError(f"refusing tar entry {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing tar entry {name!r}: '..' would leave the root")
    return parts


class RootWriter:
    """Creates files under one root directory, never outside it."""

    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._deferred_mtimes: list[tuple[list[str], float]] = []

    def close(self) -> None:
        os.close(self.root_fd)

    # -- walking ------------------------------------------------------------

    def open_dir(self, parts: list[str], entry: str, create: bool) -> int:
        """An O_PATH fd of directory ``parts``, walked without following
        symlinks; missing directories are made (0755) when ``create``."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root_fd)
        try:
            for depth, part in enumerate(parts):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as err:
                    if err.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    where = "/".join(parts[: depth + 1])
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise UnsafeArchiveError(
                            f"refusing tar entry {entry!r}: it goes through the symlink {where!r}") from None
                    raise UnsafeArchiveError(
                        f"refusing tar entry {entry!r}: {where!r} is not a directory") from None
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- entries --------------------------------------------------------------

    def add(self, member: tarfile.TarInfo, data: Optional[BinaryIO]) -> None:
        parts = entry_parts(member.name)
        if not parts:  # the root itself ("./")
            if member.isdir():
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
                try:
                    self._set_dir_attrs(fd, member)
                finally:
                    os.close(fd)
                self._deferred_mtimes.append((parts, member.mtime))
            return
        parent = self.open_dir(parts[:-1], member.name, create=True)
        name = parts[-1]
        try:
            if member.isdir():
                self._add_dir(parent, name, member)
                self._deferred_mtimes.append((parts, member.mtime))
                return
            self._make_room(parent, name, member.name)
            if member.isreg():
                self._add_file(parent, name, member, data)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
                self._set_attrs(parent, name, member, symlink=True)
            elif member.islnk():
                self._add_hardlink(parent, name, member)
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
                device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
                os.mknod(name, kind | 0o600, device, dir_fd=parent)
                self._set_attrs(parent, name, member)
            else:
                raise ImageError(f"tar entry {member.name!r} has an unsupported type {member.type!r}")
        finally:
            os.close(parent)

    def _make_room(self, parent: int, name: str, entry: str) -> None:
        """Replace what is there, as tar does: files and symlinks are
        unlinked (never followed); a non-empty directory is an error."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as err:
                raise ImageError(f"tar entry {entry!r} would replace a non-empty directory") from err
        else:
            os.unlink(name, dir_fd=parent)

    def _add_dir(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self._make_room(parent, name, member.name)
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            self._set_dir_attrs(fd, member)
        finally:
            os.close(fd)

    @staticmethod
    def _set_dir_attrs(fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, stat.S_IMODE(member.mode))

    def _add_file(self, parent: int, name: str, member: tarfile.TarInfo,
                  data: Optional[BinaryIO]) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        try:
            if data is not None:
                remaining = member.size
                while remaining > 0:
                    chunk = data.read(min(_COPY_CHUNK, remaining))
                    if not chunk:
                        raise ImageError(f"tar entry {member.name!r} is truncated")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    remaining -= len(chunk)
            # chown clears setuid/setgid, so chmod comes after it.
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _add_hardlink(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        try:
            target_parts = entry_parts(member.linkname)
        except UnsafeArchiveError:
            raise UnsafeArchiveError(
                f"refusing hard link {member.name!r} -> {member.linkname!r}: target outside the root") from None
        if not target_parts:
            raise UnsafeArchiveError(f"refusing hard link {member.name!r} to the root directory")
        try:
            target_dir = self.open_dir(target_parts[:-1], member.name, create=False)
        except FileNotFoundError:
            target_dir = -1
        try:
            if target_dir < 0:
                raise FileNotFoundError
            os.link(target_parts[-1], name, src_dir_fd=target_dir, dst_dir_fd=parent,
                    follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeArchiveError(
                f"refusing hard link {member.name!r} -> {member.linkname!r}: "
                "target is not in the archive") from None
        finally:
            if target_dir >= 0:
                os.close(target_dir)

    @staticmethod
    def _set_attrs(parent: int, name: str, member: tarfile.TarInfo, symlink: bool = False) -> None:
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not symlink:
            # We created this node ourselves a moment ago: it is not a symlink.
            os.chmod(name, stat.S_IMODE(member.mode), dir_fd=parent)
        os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last: creating their entries changed them.  A
        directory a later entry replaced keeps that entry's own mtime."""
        for parts, mtime in reversed(self._deferred_mtimes):
            parent = self.open_dir(parts[:-1], "/".join(parts), create=False)
            name = parts[-1] if parts else "."
            try:
                if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    os.utime(name, (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The archive's bytes, decompressed by the module its magic names.

    These modules raise EOFError on a truncated stream, where tarfile's own
    stream reader would take the cut for the archive's end and leave a
    partial root behind.
    """
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        import bz2

        return bz2.BZ2File(raw, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return lzma.LZMAFile(raw, mode="rb")
    return raw


def extract_tar(source: Union[str, BinaryIO], dest: str) -> None:
    """Extract the tar archive ``source`` (path or file object; plain, gzip,
    bzip2 or xz) into the existing directory ``dest``."""
    import io

    label = source if isinstance(source, str) else getattr(source, "name", "archive")
    writer = None
    try:
        raw = open(source, "rb") if isinstance(source, str) else source
        try:
            stream = _decompressed(raw if hasattr(raw, "peek") else io.BufferedReader(raw))
            writer = RootWriter(dest)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    data = tar.extractfile(member) if member.isreg() else None
                    writer.add(member, data)
            # Read to the end: a cut or corrupt stream fails here, not silently.
            while stream.read(1 << 20):
                pass
            writer.finish()
        finally:
            if isinstance(source, str):
                raw.close()
    except Exception as err:
        if isinstance(err, ImageError) or not _is_corruption(err):
            raise
        raise ImageError(f"cannot unpack image {label}: {_reason(err)}") from err
    finally:
        if writer is not None:
            writer.close()


def _is_corruption(err: Exception) -> bool:
    """An error of the archive's data (or of writing it), not a kubirun bug."""
    if isinstance(err, (tarfile.TarError, EOFError, zlib.error, OSError)):
        return True
    return type(err).__name__ == "LZMAError"  # lzma is imported only for xz archives


def _reason(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return "unexpected end of data (truncated or corrupt)"
    return str(err) or type(err).__name__
