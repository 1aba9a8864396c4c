"""A tar reader of our own: headers parsed from bytes, data copied straight
to file descriptors.

Why not ``tarfile``: its stream mode copies every byte through several
Python buffers and builds a ``TarInfo`` with a dozen method calls per
entry; here one header costs a few slices, and file data goes from the
decompressor's buffer to ``os.write`` with no copy.  It reads what image
tools write: ustar, GNU (long names ``L``/``K``, base-256 numbers) and pax
(``x``/``g`` records: ``path``, ``linkpath``, ``size``, ids, ``mtime``,
``SCHILY.xattr.*``).  Sparse files and multi-volume archives are refused.
Nothing here touches the file system: ``kubirun.image.extract`` decides
what an entry may create.
"""
from __future__ import annotations

import os

from kubirun.base.errors import ImageError, KubirunError

BLOCK = 512
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 is not an id: chown reads it as "unchanged"
MAX_TIME = 1 << 62  # seconds either way: beyond, no time_t holds it
MAX_MAJOR, MAX_MINOR = 0xFFF, 0xFFFFF  # what Linux's dev_t holds


class CorruptData(KubirunError):
    """The data is not what it claims to be: a cut or corrupt stream, or
    not a tar archive at all."""


REG, LNK, SYM, CHR, BLK, DIR, FIFO = "0", "1", "2", "3", "4", "5", "6"
_KIND = {b"0": REG, b"\x00": REG, b"7": REG, b"1": LNK, b"2": SYM, b"3": CHR, b"4": BLK,
         b"5": DIR, b"6": FIFO}


class Entry:
    """One member of the archive, after its pax/GNU extension headers."""

    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "kind",
        "linkname",
        "mode",
        "mtime",
        "name",
        "offset",
        "size",
        "uid",
        "xattrs",
    )

    def __init__(self, name: str, kind: str, mode: int = 0o644, uid: int = 0, gid: int = 0,
                 mtime: float = 0, size: int = 0, linkname: str = "", devmajor: int = 0,
                 devminor: int = 0, xattrs: dict | None = None) -> None:
        self.name = name
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.size = size
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs  # {name: bytes} or None
        self.offset = 0  # of the data, in the uncompressed archive

    def isdir(self) -> bool:
        return self.kind == DIR

    def isreg(self) -> bool:
        return self.kind == REG

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.kind!r}, size={self.size})"


def _number(field: bytes, what: str) -> int:
    """An octal number (NUL/space padded), or GNU base-256."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big") if field[0] == 0x80 else \
            int.from_bytes(field, "big", signed=True) if field[0] == 0xFF else None
        if value is None:
            raise CorruptData(f"bad tar header: invalid number in {what}")
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise CorruptData(f"bad tar header: invalid number in {what} ({text[:20]!r})") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\x00", 1)[0].strip(b" ")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if unsigned == want:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block)  # old tars summed signed chars
    signed -= sum(b - 256 if b > 127 else b for b in block[148:156]) - 8 * 32
    return signed == want


def is_tar_header(block: bytes) -> bool:
    """Does this 512-byte block look like a tar header (ustar magic, or a
    v7 header with a valid checksum)?"""
    if len(block) < BLOCK or block[0] == 0:
        return False
    return block[257:262] == b"ustar" or _checksum_ok(block)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """``LEN key=value\\n`` records (values are raw bytes: xattrs)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise CorruptData("bad tar pax header: no length")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptData("bad tar pax header: invalid length") from None
        if length <= 0 or pos + length > len(data):
            raise CorruptData("bad tar pax header: length out of range")
        record = data[space + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise CorruptData("bad tar pax header: malformed record")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


class HeaderParser:
    """Turns header blocks (and extension records) into ``Entry``s.  Feed
    it one block at a time; ``feed`` returns an Entry, or None when the
    block was an extension header whose data (``want`` bytes) must come
    next through ``feed_extension``."""

    def __init__(self) -> None:
        self._global: dict[bytes, bytes] = {}
        self._pax: dict[bytes, bytes] = {}
        self._longname: bytes | None = None
        self._longlink: bytes | None = None
        self.pending: bytes | None = None  # the type of the extension being read
        self.want = 0

    def feed(self, block: bytes) -> Entry | None:
        if not _checksum_ok(block):
            raise CorruptData("bad tar header: checksum mismatch (not a tar archive, or corrupt)")
        typeflag = block[156:157]
        size = _number(block[124:136], "size")
        if size < 0:
            raise CorruptData(f"bad tar header: negative size {size}")
        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > 16 << 20:
                raise CorruptData("bad tar header: extension header larger than 16 MiB")
            self.pending, self.want = typeflag, size
            return None
        if typeflag in (b"S", b"M", b"V"):
            raise ImageError(f"unsupported tar entry type {typeflag.decode()!r} "
                             "(sparse or multi-volume archive)")
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00":  # POSIX: a prefix field
            prefix = _cstr(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        linkname = _cstr(block[157:257])
        if self._longname is not None:
            name, self._longname = self._longname, None
        if self._longlink is not None:
            linkname, self._longlink = self._longlink, None
        kind = _KIND.get(typeflag)
        if kind is None:
            raise ImageError(f"tar entry {_decode(name)!r} has an unsupported type {typeflag!r}")
        if kind == REG and name.endswith(b"/") and typeflag in (b"\x00", b"0"):
            kind = DIR  # v7 archives mark directories with a trailing slash only
        entry = Entry(_decode(name), kind, _number(block[100:108], "mode") & 0o7777,
                      _number(block[108:116], "uid"), _number(block[116:124], "gid"),
                      _number(block[136:148], "mtime"), size, _decode(linkname),
                      _number(block[329:337], "devmajor"), _number(block[337:345], "devminor"))
        pax = self._pax
        if self._global or pax:
            merged = {**self._global, **pax}
            self._pax = {}
            self._apply_pax(entry, merged)
        if kind != REG:
            entry.size = 0  # only regular files carry data (as tarfile and GNU tar read it)
        _check_entry(entry)
        return entry

    def feed_extension(self, data: bytes) -> None:
        kind, self.pending = self.pending, None
        if kind == b"L":
            self._longname = _cstr(data)
        elif kind == b"K":
            self._longlink = _cstr(data)
        elif kind == b"x":
            self._pax = parse_pax(data)
        else:
            self._global.update(parse_pax(data))

    @staticmethod
    def _apply_pax(entry: Entry, pax: dict[bytes, bytes]) -> None:
        for key, value in pax.items():
            if key == b"path":
                entry.name = _decode(value)
            elif key == b"linkpath":
                entry.linkname = _decode(value)
            elif key == b"size":
                entry.size = _pax_int(value, "size")
            elif key == b"uid":
                entry.uid = _pax_int(value, "uid")
            elif key == b"gid":
                entry.gid = _pax_int(value, "gid")
            elif key == b"mtime":
                try:
                    entry.mtime = float(value)
                except ValueError:
                    raise CorruptData("bad tar pax header: invalid mtime") from None
            elif key.startswith(b"SCHILY.xattr."):
                if entry.xattrs is None:
                    entry.xattrs = {}
                entry.xattrs[_decode(key[13:])] = value
            elif key.startswith(b"GNU.sparse."):
                raise ImageError(f"tar entry {entry.name!r}: sparse files are not supported")


def _check_entry(entry: Entry) -> None:
    """What no file system can hold is refused here, naming the entry:
    ids beyond uid_t, a time that is not one, a NUL inside a name."""
    what = f"tar entry {_show(entry.name)}"
    if "\0" in entry.name:
        raise CorruptData(f"{what}: a NUL byte in its name")
    if "\0" in entry.linkname:
        raise CorruptData(f"{what}: a NUL byte in its link target {_show(entry.linkname)}")
    for field in ("uid", "gid"):
        value = getattr(entry, field)
        if not 0 <= value <= MAX_ID:
            raise CorruptData(f"{what}: {field} {value} is out of range (0 to {MAX_ID})")
    mtime = entry.mtime
    if not -MAX_TIME <= mtime <= MAX_TIME:  # (false for NaN too)
        raise CorruptData(f"{what}: mtime {mtime} is not a time")
    if entry.kind in (CHR, BLK) and not (0 <= entry.devmajor <= MAX_MAJOR
                                         and 0 <= entry.devminor <= MAX_MINOR):
        raise CorruptData(f"{what}: device {entry.devmajor}:{entry.devminor} is out of range"
                          f" (majors to {MAX_MAJOR}, minors to {MAX_MINOR})")
    if entry.xattrs:
        for key in entry.xattrs:
            if "\0" in key or not key:
                raise CorruptData(f"{what}: an extended attribute named {_show(key)}")


def _show(name: str) -> str:
    """A name from an archive, quoted, on one line, not endless."""
    text = repr(name)
    return text if len(text) <= 200 else text[:200] + "…"


def _pax_int(value: bytes, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CorruptData(f"bad tar pax header: invalid {what}") from None
    if number < 0:
        raise CorruptData(f"bad tar pax header: negative {what}")
    return number


class TarReader:
    """Entries of a tar stream, read from ``source.read_chunk()`` (bytes,
    ``b""`` at the end).  Iterate for entries; an entry's data is copied
    with ``copy_to(fd)`` or skipped when the next entry is asked for."""

    def __init__(self, source) -> None:
        self._source = source
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current entry not read yet
        self._pad = 0
        self.offset = 0  # position in the uncompressed stream
        self.ended = False

    # -- the byte buffer ---------------------------------------------------

    def _fill(self) -> bool:
        chunk = self._source.read_chunk()
        if not chunk:
            return False
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos:] + chunk
        else:
            self._buf = chunk
        self._pos = 0
        return True

    def _take(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at a clean end of the stream (no
        byte at all); a partial read is a truncated archive."""
        while len(self._buf) - self._pos < n:
            if not self._fill():
                if len(self._buf) == self._pos:
                    return None
                raise EOFError("unexpected end of data (truncated archive)")
        data = self._buf[self._pos:self._pos + n]
        self._pos += n
        self.offset += n
        return data

    def _skip(self, n: int) -> None:
        while n:
            available = len(self._buf) - self._pos
            if not available:
                if not self._fill():
                    raise EOFError("unexpected end of data (truncated archive)")
                continue
            step = min(n, available)
            self._pos += step
            self.offset += step
            n -= step

    # -- entries -------------------------------------------------------------

    def __iter__(self):
        parser = HeaderParser()
        while True:
            if self._left or self._pad:
                self._skip(self._left + self._pad)
                self._left = self._pad = 0
            block = self._take(BLOCK)
            if block is None:
                if self.offset == 0:
                    raise CorruptData("empty file")
                # No end-of-archive blocks: GNU tar accepts it (with a warning).
                self.ended = True
                return
            if block.count(0) == BLOCK:
                self.ended = True
                return
            entry = parser.feed(block)
            if entry is None:
                data = self._take(parser.want)
                if data is None and parser.want:
                    raise EOFError("unexpected end of data (truncated archive)")
                self._skip(-parser.want % BLOCK)
                parser.feed_extension(data or b"")
                continue
            entry.offset = self.offset
            self._left = entry.size
            self._pad = -entry.size % BLOCK
            yield entry

    def copy_to(self, fd: int) -> None:
        """Write the current entry's data to ``fd``."""
        write = os.write
        while self._left:
            available = len(self._buf) - self._pos
            if not available:
                if not self._fill():
                    raise EOFError("unexpected end of data (truncated archive)")
                continue
            step = min(self._left, available)
            view = memoryview(self._buf)[self._pos:self._pos + step]
            while view:
                view = view[write(fd, view):]
            self._pos += step
            self.offset += step
            self._left -= step

    def read_data(self, limit: int = 64 << 20) -> bytes:
        """The current entry's data as bytes (small members: JSON files)."""
        if self._left > limit:
            raise ImageError(f"archive member larger than {limit} bytes where a small file was expected")
        data = self._take(self._left) if self._left else b""
        self._left = 0
        return data or b""

    def drain(self) -> None:
        """Read the stream to its end (digests and integrity checks cover
        every byte, the zero blocks and any padding after them)."""
        self._buf, self._pos = b"", 0
        while self._source.read_chunk():
            pass
