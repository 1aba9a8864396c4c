"""Safe extraction: one writer for every format and every layer.

Safety comes from how files are created, not from string checks: every
entry is created relative to a directory file descriptor reached by walking
the entry's path one component at a time with ``O_NOFOLLOW``, from the
root's own descriptor.  A path that would leave the root (absolute, ``..``)
or pass through a symlink is refused, and nothing is ever written through a
symlink.  Hard links may only point at files already inside the root.

Unlike ``tarfile``'s filters, this keeps what a root filesystem needs and
GNU tar keeps as root: numeric owners, setuid/setgid/sticky bits, absolute
symlinks, device nodes, file capabilities (``security.capability``).

Layers bring OCI whiteouts (``.wh.NAME`` deletes NAME of the layers below,
``.wh..wh..opq`` hides a directory's lower contents).  ``RootWriter``
handles them two ways:

``apply``    one directory receives every layer in order: a whiteout
             deletes (fd-relative, never following a symlink);
``overlay``  each layer gets a directory of its own, in overlayfs's format
             (a whiteout is a 0/0 character device, an opaque directory
             has ``trusted.overlay.opaque=y``); the layers below are read
             (never written) to refuse a path that an earlier layer made a
             symlink, and to resolve hard links to their files.
"""
from __future__ import annotations

import errno
import os
import stat

from kubirun.base.errors import ImageError, UnsafeArchiveError
from kubirun.image.tarstream import BLK, CHR, DIR, FIFO, LNK, REG, SYM, Entry

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RDIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE = "trusted.overlay.opaque"
_CACHE_MAX = 256


def entry_parts(name: str) -> list[str]:
    """The components of an entry's path; refuses absolute paths and
    ``..``.  ``./a//b/`` gives ``["a", "b"]``; the root itself gives ``[]``."""
    if name.startswith("/"):
        raise UnsafeArchiveError(f"refusing tar entry {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing tar entry {name!r}: '..' would leave the root")
    return parts


def xattr_allowed(name: str) -> bool:
    """What an image may set: user attributes and file capabilities.  Never
    ``trusted.overlay.*`` (a layer could forge whiteouts or redirects) nor
    security labels of the host's policy."""
    return name.startswith("user.") or name == "security.capability"


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# Unpacking as a user without privileges (rootless): files keep the user as
# owner (root inside, through the user namespace's mapping), and device
# nodes are left out.
UNPRIVILEGED = os.geteuid() != 0


def _chown(name: str, uid: int, gid: int, dir_fd: int) -> None:
    if not UNPRIVILEGED:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _fchown(fd: int, uid: int, gid: int) -> None:
    if not UNPRIVILEGED:
        os.fchown(fd, uid, gid)


class RootWriter:
    """Creates files under one root directory, never outside it."""

    def __init__(self, root: str, whiteouts: str = "apply", lowers: tuple[str, ...] = ()) -> None:
        if whiteouts not in ("apply", "overlay"):
            raise ValueError(whiteouts)
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.mode = whiteouts
        self._lowers = [os.open(p, _DIR_FLAGS) for p in lowers]  # topmost first
        self._deferred_mtimes: list[tuple[list[str], float]] = []
        self._dirs: dict[tuple[str, ...], int] = {}
        self._layer_paths: set[str] = set()
        self.entries = 0
        # Overlay mode on a file system that refuses overlayfs's markers
        # (the store on an overlayfs itself): the whiteouts stay ``.wh.``
        # files, which only a copy (``apply``) understands.
        self.plain_markers = False

    def close(self) -> None:
        self._forget_dirs()
        for fd in self._lowers:
            os.close(fd)
        self._lowers = []
        os.close(self.root_fd)

    def begin_layer(self) -> None:
        """The next entries are a new layer (apply mode): a directory of an
        earlier layer may be replaced whole, an opaque marker hides only
        what earlier layers made."""
        self._layer_paths = set()

    # -- walking ------------------------------------------------------------

    def _forget_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _forget_under(self, parts: list[str]) -> None:
        """``parts`` was removed: its cached descriptors (and those below
        it) must not be used again."""
        prefix = tuple(parts)
        n = len(prefix)
        for key in [k for k in self._dirs if k[:n] == prefix]:
            os.close(self._dirs.pop(key))

    def open_dir(self, parts: list[str], entry: str, create: bool) -> int:
        """A (cached, borrowed: do not close) O_PATH fd of directory
        ``parts``, walked without following symlinks; missing directories
        are made (0755) when ``create``."""
        key = tuple(parts)
        fd = self._dirs.get(key)
        if fd is not None:
            return fd
        start = len(parts)
        while start and key[:start] not in self._dirs:
            start -= 1
        fd = self._dirs[key[:start]] if start else self.root_fd
        for depth in range(start, len(parts)):
            part = parts[depth]
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                below = self._check_lower_path(parts[: depth + 1], entry) if self._lowers else None
                os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if below is not None and stat.S_ISDIR(below.st_mode):
                    # The directory of a layer below, implied by this layer's
                    # entry: it keeps its owner, mode and mtime (overlayfs's
                    # copy-up would), or the merged view would change them.
                    _chown(part, below.st_uid, below.st_gid, dir_fd=fd)
                    os.chmod(part, stat.S_IMODE(below.st_mode), dir_fd=fd)
                    self._deferred_mtimes.append((parts[: depth + 1], below.st_mtime))
            except OSError as err:
                if err.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                where = "/".join(parts[: depth + 1])
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise UnsafeArchiveError(
                        f"refusing tar entry {entry!r}: it goes through the symlink {where!r}") from None
                raise UnsafeArchiveError(
                    f"refusing tar entry {entry!r}: {where!r} is not a directory") from None
            self._dirs[key[: depth + 1]] = next_fd
            fd = next_fd
        return fd

    def _open_dir_fd(self, parts: list[str], entry: str) -> int:
        """An O_RDONLY fd (for fchown, xattrs) of an existing directory."""
        return os.open(".", _RDIR_FLAGS, dir_fd=self.open_dir(parts, entry, create=False))

    # -- the layers below (overlay mode) -------------------------------------

    def _lower_lookup(self, parts: list[str]) -> tuple[int, str, os.stat_result] | None:
        """Where ``parts`` is in the merged view of the lower layers: (the
        layer's fd, the parent path, its lstat), or None if hidden/absent."""
        for lower in self._lowers:
            fd = lower
            opened = []
            try:
                hidden = False
                for depth, part in enumerate(parts):
                    try:
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        break  # absent here: look lower, unless an opaque dir hides it
                    if _is_whiteout_device(st):
                        return None
                    if depth == len(parts) - 1:
                        return lower, "/".join(parts[:-1]), st
                    if not stat.S_ISDIR(st.st_mode):
                        return None  # a file hides everything below it
                    fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    opened.append(fd)
                    try:
                        if os.getxattr(f"/proc/self/fd/{fd}", OVERLAY_OPAQUE) == b"y":
                            hidden = True
                    except OSError:
                        pass
                if hidden:
                    return None
            finally:
                for f in opened:
                    os.close(f)
        return None

    def _check_lower_path(self, parts: list[str], entry: str) -> os.stat_result | None:
        """What the layers below have at ``parts`` (its lstat, or None);
        a symlink there is refused: this layer would write through it."""
        found = self._lower_lookup(parts)
        if found is None:
            return None
        if stat.S_ISLNK(found[2].st_mode):
            raise UnsafeArchiveError(
                f"refusing tar entry {entry!r}: {'/'.join(parts)!r} is a symlink in an earlier layer")
        return found[2]

    # -- entries --------------------------------------------------------------

    def add(self, member: Entry, fill=None) -> None:
        """Create ``member``; ``fill(fd)`` writes a regular file's data."""
        self.entries += 1
        if len(self._dirs) > _CACHE_MAX:  # only here: no borrowed fd is in use
            self._forget_dirs()
        parts = entry_parts(member.name)
        if not parts:  # the root itself ("./")
            if member.kind == DIR:
                fd = os.open(".", _RDIR_FLAGS, dir_fd=self.root_fd)
                try:
                    self._set_fd_attrs(fd, member)
                finally:
                    os.close(fd)
                self._deferred_mtimes.append((parts, member.mtime))
            return
        name = parts[-1]
        if name.startswith(WHITEOUT):
            self._whiteout(parts, member.name)
            return
        parent = self.open_dir(parts[:-1], member.name, create=True)
        path = "/".join(parts)
        kind = member.kind
        if kind == DIR:
            self._add_dir(parent, name, member, path)
            self._deferred_mtimes.append((parts, member.mtime))
        else:
            # Create first (O_EXCL, symlink, link, mknod all fail on an
            # existing name): replacing is rare, a stat per entry is not.
            try:
                self._create(parent, name, member, fill)
            except FileExistsError:
                self._make_room(parent, name, member.name, parts)
                self._create(parent, name, member, fill)
        self._layer_paths.add(path)

    def _create(self, parent: int, name: str, member: Entry, fill) -> None:
        kind = member.kind
        if kind == REG:
            self._add_file(parent, name, member, fill)
        elif kind == SYM:
            os.symlink(member.linkname, name, dir_fd=parent)
            self._set_attrs(parent, name, member, symlink=True)
        elif kind == LNK:
            self._add_hardlink(parent, name, member)
        elif kind in (CHR, BLK) and UNPRIVILEGED:
            return  # only root may make device nodes (rootless podman skips them too)
        elif kind in (CHR, BLK, FIFO):
            fmt = stat.S_IFCHR if kind == CHR else stat.S_IFBLK if kind == BLK else stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor) if kind != FIFO else 0
            os.mknod(name, fmt | 0o600, device, dir_fd=parent)
            self._set_attrs(parent, name, member)
        else:
            raise ImageError(f"tar entry {member.name!r} has an unsupported type {kind!r}")

    def _make_room(self, parent: int, name: str, entry: str, parts: list[str]) -> None:
        """Replace what is there, as tar does: files and symlinks are
        unlinked (never followed); a directory is removed if empty, or
        whole if an earlier layer made it; else it is an error."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget_under(parts)
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as err:
                if "/".join(parts) in self._layer_paths or err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ImageError(f"tar entry {entry!r} would replace a non-empty directory") from err
                remove_tree(parent, name)
        else:
            os.unlink(name, dir_fd=parent)

    def _add_dir(self, parent: int, name: str, member: Entry, path: str) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self._make_room(parent, name, member.name, path.split("/"))
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _RDIR_FLAGS, dir_fd=parent)
        try:
            self._set_fd_attrs(fd, member)
        finally:
            os.close(fd)

    def _set_fd_attrs(self, fd: int, member: Entry) -> None:
        _fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        if member.xattrs:
            _set_xattrs(fd, member.xattrs)

    def _add_file(self, parent: int, name: str, member: Entry, fill) -> None:
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        try:
            if fill is not None and member.size:
                fill(fd)
            # chown clears setuid/setgid and file capabilities: chmod and
            # xattrs come after it.
            _fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)
            if member.xattrs:
                _set_xattrs(fd, member.xattrs)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _add_hardlink(self, parent: int, name: str, member: Entry) -> None:
        try:
            target_parts = entry_parts(member.linkname)
        except UnsafeArchiveError:
            raise UnsafeArchiveError(
                f"refusing hard link {member.name!r} -> {member.linkname!r}: target outside the root") from None
        if not target_parts:
            raise UnsafeArchiveError(f"refusing hard link {member.name!r} to the root directory")
        try:
            target_dir = self.open_dir(target_parts[:-1], member.name, create=False)
            os.link(target_parts[-1], name, src_dir_fd=target_dir, dst_dir_fd=parent,
                    follow_symlinks=False)
            return
        except FileNotFoundError:
            pass
        if self._lowers and self._link_from_lower(parent, name, member, target_parts):
            return
        raise UnsafeArchiveError(
            f"refusing hard link {member.name!r} -> {member.linkname!r}: "
            "target is not in the archive")

    def _link_from_lower(self, parent: int, name: str, member: Entry, target: list[str]) -> bool:
        """A hard link to a file of an earlier layer: this layer gets a copy
        (what overlayfs's copy-up would make of it)."""
        found = self._lower_lookup(target)
        if found is None or not stat.S_ISREG(found[2].st_mode):
            return False
        lower, parent_path, st = found
        src_parent = walk_nofollow(lower, parent_path.split("/") if parent_path else [])
        try:
            src = os.open(target[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_parent)
        finally:
            os.close(src_parent)
        try:
            copy = Entry(member.name, REG, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                         st.st_mtime, st.st_size, xattrs=_get_xattrs(src))
            self._add_file(parent, name, copy, lambda fd: copy_data(src, fd, st.st_size))
        finally:
            os.close(src)
        return True

    @staticmethod
    def _set_attrs(parent: int, name: str, member: Entry, symlink: bool = False) -> None:
        _chown(name, member.uid, member.gid, dir_fd=parent)
        if not symlink:
            # We created this node ourselves a moment ago: it is not a symlink.
            os.chmod(name, member.mode & 0o7777, dir_fd=parent)
        if member.xattrs:
            _set_xattrs(f"/proc/self/fd/{parent}/{name}", member.xattrs)
        os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)

    # -- whiteouts --------------------------------------------------------------

    def _whiteout(self, parts: list[str], entry: str) -> None:
        name = parts[-1]
        if name == OPAQUE:
            self._opaque(parts[:-1], entry)
            return
        if name.startswith(WHITEOUT + WHITEOUT):
            return  # other aufs metadata (.wh..wh.plnk...): nothing to apply
        target = name[len(WHITEOUT):]
        if target in ("", ".", ".."):
            raise UnsafeArchiveError(f"refusing whiteout {entry!r}: it names {target or 'nothing'!r}")
        try:
            parent = self.open_dir(parts[:-1], entry, create=self.mode == "overlay")
        except FileNotFoundError:
            return  # nothing there to delete
        remove_tree(parent, target)
        self._forget_under(parts[:-1] + [target])
        if self.mode == "overlay":
            try:
                os.mknod(target, stat.S_IFCHR | 0o600, 0, dir_fd=parent)
            except PermissionError:
                self._plain_marker(parent, name)
            self._layer_paths.add("/".join(parts[:-1] + [target]))

    def _opaque(self, dir_parts: list[str], entry: str) -> None:
        if self.mode == "apply":
            try:
                fd = self._open_dir_fd(dir_parts, entry)
            except FileNotFoundError:
                return
            try:
                prefix = "/".join(dir_parts)
                names = os.listdir(fd)
            finally:
                os.close(fd)
            doomed = [n for n in names if (f"{prefix}/{n}" if prefix else n) not in self._layer_paths]
            if doomed:
                parent = self.open_dir(dir_parts, entry, create=False)
                for n in doomed:
                    remove_tree(parent, n)
                    self._forget_under(dir_parts + [n])
            return
        self.open_dir(dir_parts, entry, create=True)
        fd = self._open_dir_fd(dir_parts, entry)
        try:
            os.setxattr(f"/proc/self/fd/{fd}", OVERLAY_OPAQUE, b"y")
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            self._plain_marker(self.open_dir(dir_parts, entry, create=False), OPAQUE)
        finally:
            os.close(fd)

    def _plain_marker(self, parent: int, name: str) -> None:
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        os.close(fd)
        self.plain_markers = True

    def finish(self) -> None:
        """Directory mtimes last: creating their entries changed them.  A
        directory a later entry replaced keeps that entry's own mtime."""
        for parts, mtime in reversed(self._deferred_mtimes):
            try:
                parent = self.open_dir(parts[:-1], "/".join(parts), create=False)
                name = parts[-1] if parts else "."
                if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    os.utime(name, (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            except (FileNotFoundError, UnsafeArchiveError):
                continue  # removed by a later whiteout or entry
        self._deferred_mtimes = []


def _set_xattrs(target, xattrs: dict) -> None:
    """Set what an image may set, where the file system allows it."""
    for key, value in xattrs.items():
        if not xattr_allowed(key):
            continue
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL):
                raise


def _get_xattrs(target, follow: bool = True) -> dict | None:
    try:
        names = os.listxattr(target, follow_symlinks=follow) if not isinstance(target, int) \
            else os.listxattr(target)
    except OSError:
        return None
    found = {}
    for key in names:
        if xattr_allowed(key):
            try:
                found[key] = os.getxattr(target, key) if isinstance(target, int) else \
                    os.getxattr(target, key, follow_symlinks=follow)
            except OSError:
                pass
    return found or None


def walk_nofollow(base: int, parts: list[str]) -> int:
    """An O_PATH fd of directory ``parts`` under ``base``, every component
    opened with O_NOFOLLOW (the caller closes it)."""
    fd = os.open(".", _DIR_FLAGS, dir_fd=base)
    try:
        for part in parts:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_tree(parent: int, name: str) -> None:
    """Remove ``name`` under the directory fd ``parent``, recursively,
    without ever following a symlink."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = os.open(name, _RDIR_FLAGS, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            remove_tree(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def copy_data(src: int, dst: int, size: int) -> None:
    """``size`` bytes from fd ``src`` to ``dst`` (copy_file_range: reflinks
    where the file system has them, no trip through Python otherwise)."""
    left = size
    offset = 0
    while left:
        try:
            n = os.copy_file_range(src, dst, left, offset, offset)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = 0
        if n == 0:
            data = os.pread(src, min(left, 1 << 20), offset)
            if not data:
                raise ImageError("a file shrank while it was copied")
            n = os.pwrite(dst, data, offset)
        offset += n
        left -= n


# --- a whole tar stream -----------------------------------------------------------

def apply_tar(reader, writer: RootWriter) -> None:
    """Every entry of ``reader`` (a ``TarReader``) through ``writer``; a
    system call's failure names the entry (its own file name may be only
    an fd's number, or the last component)."""
    copy_to = reader.copy_to
    add = writer.add
    for member in reader:
        try:
            add(member, copy_to if member.kind == REG else None)
        except OSError as err:
            raise _entry_error(err, member.name) from None


def _entry_error(err: OSError, name: str) -> OSError:
    """``err`` (of the same class), naming the tar entry it happened to."""
    return OSError(err.errno, err.strerror or str(err), f"tar entry {name!r}")


def extract_tar(source, dest: str, budget=None) -> None:
    """Extract the tar archive ``source`` (path or file object; plain,
    gzip, zstd, xz or bzip2) into the existing directory ``dest``."""
    from kubirun.image.compression import (
        Budget,
        Decoded,
        Prefetched,
        is_corruption,
        reason,
    )
    from kubirun.image.tarstream import TarReader

    label = source if isinstance(source, str) else getattr(source, "name", "archive")
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC) if isinstance(source, str) else source.fileno()
    writer = None
    stream = None
    try:
        stream = Prefetched(Decoded(fd, os.lseek(fd, 0, os.SEEK_CUR) if not isinstance(source, str)
                                    else 0, budget=budget or Budget(label=f"image {label}")))
        reader = TarReader(stream)
        writer = RootWriter(dest)
        apply_tar(reader, writer)
        # Read to the end: a cut or corrupt stream fails here, not silently.
        reader.drain()
        writer.finish()
    except Exception as err:
        if isinstance(err, ImageError) or not is_corruption(err):
            raise
        raise ImageError(f"cannot unpack image {label}: {reason(err)}") from err
    finally:
        if stream is not None:
            stream.close()
        if writer is not None:
            writer.close()
        if isinstance(source, str):
            os.close(fd)


# --- a directory tree as entries (the store's layers, a root in place) -----------

def tree_entries(top: str, overlay_whiteouts: bool):
    """(Entry, fill) for everything under ``top``, parents first, as a tar
    of it would list them; overlayfs whiteouts become ``.wh.`` entries when
    ``overlay_whiteouts``.  Hard links within the tree stay hard links."""
    top_fd = os.open(top, _RDIR_FLAGS)
    seen: dict[tuple[int, int], str] = {}
    try:
        st = os.fstat(top_fd)
        yield Entry("./", DIR, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime,
                    xattrs=_get_xattrs(top_fd)), None
        if overlay_whiteouts and _opaque(top_fd):
            yield Entry(OPAQUE, REG), None
        yield from _walk(top_fd, "", seen, overlay_whiteouts)
    finally:
        os.close(top_fd)


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OVERLAY_OPAQUE) == b"y"
    except OSError:
        return False


def _walk(dir_fd: int, prefix: str, seen: dict, overlay_whiteouts: bool):
    with os.scandir(dir_fd) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        name = child.name
        path = prefix + name
        st = child.stat(follow_symlinks=False)
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        proc = f"/proc/self/fd/{dir_fd}/{name}"
        if stat.S_ISDIR(mode):
            fd = os.open(name, _RDIR_FLAGS, dir_fd=dir_fd)
            try:
                yield Entry(path + "/", DIR, perm, st.st_uid, st.st_gid, st.st_mtime,
                            xattrs=_get_xattrs(fd)), None
                if overlay_whiteouts and _opaque(fd):
                    yield Entry(f"{path}/{OPAQUE}", REG), None
                yield from _walk(fd, path + "/", seen, overlay_whiteouts)
            finally:
                os.close(fd)
            continue
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            key = (st.st_dev, st.st_ino)
            first = seen.get(key)
            if first is not None:
                yield Entry(path, LNK, perm, st.st_uid, st.st_gid, st.st_mtime, linkname=first), None
                continue
            seen[key] = path
        if stat.S_ISREG(mode):
            entry = Entry(path, REG, perm, st.st_uid, st.st_gid, st.st_mtime, st.st_size,
                          xattrs=_get_xattrs(proc, follow=False))
            yield entry, _file_filler(dir_fd, name, st.st_size)
        elif stat.S_ISLNK(mode):
            yield Entry(path, SYM, perm, st.st_uid, st.st_gid, st.st_mtime,
                        linkname=os.readlink(name, dir_fd=dir_fd)), None
        elif stat.S_ISCHR(mode) and st.st_rdev == 0 and overlay_whiteouts:
            yield Entry(prefix + WHITEOUT + name, REG), None
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            yield Entry(path, CHR if stat.S_ISCHR(mode) else BLK, perm, st.st_uid, st.st_gid,
                        st.st_mtime, devmajor=os.major(st.st_rdev),
                        devminor=os.minor(st.st_rdev)), None
        elif stat.S_ISFIFO(mode):
            yield Entry(path, FIFO, perm, st.st_uid, st.st_gid, st.st_mtime), None
        # sockets are not archived, as tar does not


def _file_filler(dir_fd: int, name: str, size: int):
    def fill(fd: int) -> None:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            copy_data(src, fd, size)
        finally:
            os.close(src)
    return fill


def copy_tree(top: str, writer: RootWriter, overlay_whiteouts: bool = False) -> None:
    """Everything under ``top`` through ``writer`` (a layer of the store
    onto a flattened root, or a root directory into a bundle)."""
    writer.begin_layer()
    for entry, fill in tree_entries(top, overlay_whiteouts):
        writer.add(entry, fill)
