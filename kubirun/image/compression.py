"""Compressed streams, recognised by their first bytes (never by a file
name): gzip, zstd, xz, bzip2 or none.

``Decoded`` reads a file (or a slice of one, for a blob inside an archive),
decompresses it in bounded chunks, and on the way computes the sha256 of
the bytes read (the blob digest) and of the bytes produced (the diff_id),
and counts the produced bytes against a ``Budget``: a decompression bomb
stops at the configured maximum, not when the disk is full.  A stream that
ends before its compressed data does (a cut download) is an error, never a
silently shorter archive.
"""
from __future__ import annotations

import os
import zlib

from kubirun.base.errors import ImageError
from kubirun.image.tarstream import CorruptData

GZIP, ZSTD, XZ, BZIP2, PLAIN = "gzip", "zstd", "xz", "bzip2", "none"
_CHUNK = 1 << 20  # compressed bytes read at a time
# Most bytes one step may produce: bounds memory on a bomb.  256 KiB (not
# 4 MiB): inflating is no slower, the extractor gets its first bytes sooner,
# and Prefetched's queue holds 4 MiB at most, not 32.
_OUT = 256 << 10
DEFAULT_MAX_SIZE = 64 << 30


def sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return ZSTD
    if head.startswith(b"\xfd7zXZ\x00"):
        return XZ
    if head.startswith(b"BZh"):
        return BZIP2
    return PLAIN


def parse_size(text: str) -> int:
    """``1073741824``, ``512m``, ``2g``, ``1GiB``."""
    value = text.strip().lower()
    for unit in ("ib", "b"):
        if value.endswith(unit) and value[:-len(unit)][-1:] in ("k", "m", "g", "t"):
            value = value[:-len(unit)]
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(value[-1:], 1)
    if scale != 1:
        value = value[:-1]
    if not value.isdigit():
        raise ImageError(f"invalid size {text!r} (e.g. 512m, 2g)")
    return int(value) * scale


def max_size_from_env() -> int:
    text = os.environ.get("KUBIRUN_MAX_IMAGE_SIZE")
    return parse_size(text) if text else DEFAULT_MAX_SIZE


class Budget:
    """The most uncompressed bytes one image may unpack to (all layers)."""

    def __init__(self, limit: int | None = None, label: str = "image") -> None:
        self.limit = max_size_from_env() if limit is None else limit
        self.used = 0
        self.label = label

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ImageError(
                f"{self.label}: unpacks to more than {self.limit} bytes, the maximum "
                "(a decompression bomb? KUBIRUN_MAX_IMAGE_SIZE sets the limit)")


# --- decompressors: feed(raw) / more() -> bytes, at most _OUT at a time ------

class _Buffered:
    """What every decompressor here shares: input not yet consumed, fed in
    and drained by ``more`` (of the subclass), and the end test."""

    buf = b""
    d: object | None = None

    def feed(self, raw: bytes) -> bytes:
        self.buf = self.buf + raw if self.buf else raw
        return self.more()

    def more(self) -> bytes:
        raise NotImplementedError

    def finished(self) -> bool:
        return self.d is None and not self.buf.strip(b"\x00")


_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 2, 4, 8, 16
_MAX_HEADER = 1 << 20
_HEADER, _BODY, _TRAILER = 0, 1, 2


def _gzip_header(buf: bytes) -> int | None:
    """The length of the gzip member header (RFC 1952) that ``buf`` starts
    with, or None if ``buf`` ends inside it; checked as zlib checks it."""
    if not b"\x1f\x8b".startswith(buf[:2]):
        raise CorruptData("not gzip data: incorrect header check")
    if len(buf) < 10:
        return None
    if buf[2] != 8:
        raise CorruptData("corrupt gzip data: unknown compression method")
    flags = buf[3]
    if flags & 0xE0:
        raise CorruptData("corrupt gzip data: unknown header flags set")
    pos = 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos:pos + 2], "little")
        if len(buf) < pos:
            return None
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = buf.find(b"\x00", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & _FHCRC:
        if len(buf) < pos + 2:
            return None
        if int.from_bytes(buf[pos:pos + 2], "little") != zlib.crc32(buf[:pos]) & 0xFFFF:
            raise CorruptData("corrupt gzip data: header crc mismatch")
        pos += 2
    return pos


class _Gzip(_Buffered):
    """gzip members read here, their deflate data inflated by zlib in raw
    mode.  zlib in gzip mode also computes the output's CRC-32, inside
    inflate: 15 % of the decompressing thread's time, the longest stage of
    a cold import.  Here each member's trailer (CRC-32, length) goes to
    ``trailers`` instead, checked by whoever takes the output (``Decoded``,
    or ``Prefetched``'s reader, which has time to spare).  Concatenated
    members (pigz -i, cat a.gz b.gz) and zero padding after the last one
    are accepted, as gzip -d does."""

    def __init__(self) -> None:
        self.buf = b""
        self.d = None
        self.state = _HEADER
        self.members = 0  # whose trailer was read
        self.trailers: list[tuple[int, int]] = []  # (CRC-32, length mod 2**32) not checked yet

    def more(self) -> bytes:
        while True:
            if self.state == _HEADER:
                if self.members:
                    self.buf = self.buf.lstrip(b"\x00")  # padding, or the next member
                if not self.buf:
                    return b""
                n = _gzip_header(self.buf)
                if n is None:
                    if len(self.buf) > _MAX_HEADER:
                        raise CorruptData("corrupt gzip data: a member header over 1 MiB")
                    return b""
                self.buf, self.d, self.state = self.buf[n:], zlib.decompressobj(-15), _BODY
            if self.state == _BODY:
                if not self.buf:
                    return b""
                d = self.d
                out = d.decompress(self.buf, _OUT)
                if d.eof:
                    self.buf, self.d, self.state = d.unused_data, None, _TRAILER
                else:
                    self.buf = d.unconsumed_tail
                if out:
                    return out
                continue
            if len(self.buf) < 8:
                return b""
            self.trailers.append((int.from_bytes(self.buf[:4], "little"),
                                  int.from_bytes(self.buf[4:8], "little")))
            self.buf, self.state = self.buf[8:], _HEADER
            self.members += 1

    def finished(self) -> bool:
        return self.state == _HEADER and self.members > 0 and not self.buf.strip(b"\x00")


class MemberCheck:
    """A gzip member's output, its CRC-32 and length, against its trailer."""

    __slots__ = ("crc", "size")

    def __init__(self) -> None:
        self.crc = 0
        self.size = 0

    def update(self, out: bytes) -> None:
        self.crc = zlib.crc32(out, self.crc)  # (releases the GIL on large buffers)
        self.size += len(out)

    def end(self, trailers: list[tuple[int, int]]) -> None:
        for crc, size in trailers:
            if crc != self.crc:
                raise CorruptData("corrupt gzip data: incorrect data check (CRC-32)")
            if size != self.size & 0xFFFFFFFF:
                raise CorruptData("corrupt gzip data: incorrect length check")
            self.crc = self.size = 0


class _Incremental(_Buffered):
    """lzma and bz2 decompressors (they keep unconsumed input themselves)."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.d = factory()
        self.buf = b""

    def more(self) -> bytes:
        while True:
            if self.d is None:
                self.buf = self.buf.lstrip(b"\x00")  # xz stream padding
                if not self.buf:
                    return b""
                self.d = self.factory()
            d = self.d
            if self.buf:
                data, self.buf = self.buf, b""
                out = d.decompress(data, _OUT)
            elif not d.needs_input:
                out = d.decompress(b"", _OUT)
            else:
                return b""
            if d.eof:
                self.buf, self.d = d.unused_data, None
            if out:
                return out


_zstd_lib = None


def _libzstd():
    """libzstd through ctypes (Python 3.11 has no zstd module); loaded on
    the first zstd stream only."""
    global _zstd_lib
    if _zstd_lib is None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("zstd") or "libzstd.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise ImageError("zstd-compressed data needs libzstd (apt install libzstd1)") from None

        class Buffer(ctypes.Structure):
            _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]

        lib.ZSTD_createDStream.restype = ctypes.c_void_p
        lib.ZSTD_initDStream.argtypes = [ctypes.c_void_p]
        lib.ZSTD_initDStream.restype = ctypes.c_size_t
        lib.ZSTD_freeDStream.argtypes = [ctypes.c_void_p]
        lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, ctypes.POINTER(Buffer),
                                              ctypes.POINTER(Buffer)]
        lib.ZSTD_decompressStream.restype = ctypes.c_size_t
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        lib.Buffer = Buffer
        lib.ctypes = ctypes
        _zstd_lib = lib
    return _zstd_lib


class _Zstd:
    def __init__(self) -> None:
        self.lib = lib = _libzstd()
        ctypes = lib.ctypes
        self.ds = lib.ZSTD_createDStream()
        if not self.ds:
            raise MemoryError("ZSTD_createDStream")
        lib.ZSTD_initDStream(self.ds)
        self.out = ctypes.create_string_buffer(_OUT)
        self.inb = lib.Buffer(None, 0, 0)
        self.outb = lib.Buffer(ctypes.addressof(self.out), _OUT, 0)
        self.src = b""
        self.last = 1  # ZSTD_decompressStream's last result: 0 = a frame ended
        self.full = False  # the last step filled the output: more may be pending

    def __del__(self) -> None:
        if getattr(self, "ds", None):
            self.lib.ZSTD_freeDStream(self.ds)
            self.ds = None

    def feed(self, raw: bytes) -> bytes:
        ctypes = self.lib.ctypes
        rest = self.src[self.inb.pos:] if self.inb.pos < self.inb.size else b""
        self.src = rest + raw if rest else raw
        self.inb.ptr = ctypes.cast(ctypes.c_char_p(self.src), ctypes.c_void_p)
        self.inb.size, self.inb.pos = len(self.src), 0
        return self.more()

    def more(self) -> bytes:
        if self.inb.pos >= self.inb.size and not self.full:
            return b""
        self.outb.pos = 0
        ret = self.lib.ZSTD_decompressStream(self.ds, self.outb, self.inb)
        if self.lib.ZSTD_isError(ret):
            raise CorruptData(f"zstd: {self.lib.ZSTD_getErrorName(ret).decode()}")
        self.last = ret
        self.full = self.outb.pos == _OUT
        return self.lib.ctypes.string_at(self.out, self.outb.pos)

    def finished(self) -> bool:
        return self.last == 0 and self.inb.pos >= self.inb.size


def _decompressor(kind: str):
    if kind == GZIP:
        return _Gzip()
    if kind == ZSTD:
        return _Zstd()
    if kind == XZ:
        import lzma

        return _Incremental(lzma.LZMADecompressor)
    if kind == BZIP2:
        import bz2

        return _Incremental(bz2.BZ2Decompressor)
    return None


class Decoded:
    """The decompressed bytes of ``fd`` from ``start`` (``length`` bytes, or
    to the end), as chunks from ``read_chunk()``; ``b""`` at the end, once
    the compressed stream is known to be complete."""

    def __init__(self, fd: int, start: int = 0, length: int | None = None, *,
                 budget: Budget | None = None, hash_blob: bool | str = False,
                 hash_plain: bool | str = False, progress=None) -> None:
        self.fd = fd
        self.pos = start
        self.end = None if length is None else start + length
        self.budget = budget
        self.progress = progress
        self.read_bytes = 0
        self.plain_bytes = 0
        self._blob_hash = self._plain_hash = None
        if hash_blob or hash_plain:
            import hashlib

            # True: sha256; a string names the algorithm of the digest to
            # compare with (the image spec allows sha512 too).
            self._blob_hash = hashlib.new(_algorithm(hash_blob)) if hash_blob else None
            self._plain_hash = hashlib.new(_algorithm(hash_plain)) if hash_plain else None
        head = os.pread(fd, 8, start) if self.end is None else \
            os.pread(fd, min(8, length or 0), start)
        self.kind = sniff(head)
        self._dec = _decompressor(self.kind)
        self._done = False
        # gzip: the members' CRC-32 checked here, unless a reader of the
        # chunks takes them over (take_trailers).
        self.check = MemberCheck() if self.kind == GZIP else None
        self._handed: list[tuple[int, int]] | None = None

    def hand_over_checks(self) -> None:
        """The caller checks the gzip trailers (``take_trailers``, before
        the chunk they were taken with)."""
        if self.check is not None:
            self.check, self._handed = None, []

    def take_trailers(self) -> list[tuple[int, int]]:
        """Trailers of the gzip members that ended before the chunk just
        returned (or, after the last chunk, before the end)."""
        handed = self._handed
        if not handed:
            return []
        self._handed = []
        return handed

    def _trailers(self) -> None:
        dec = self._dec
        if dec.trailers:
            if self.check is not None:
                self.check.end(dec.trailers)
            else:
                self._handed.extend(dec.trailers)
            dec.trailers = []

    def _read_raw(self) -> bytes:
        n = _CHUNK if self.end is None else min(_CHUNK, self.end - self.pos)
        if n <= 0:
            return b""
        raw = os.pread(self.fd, n, self.pos)
        if self.end is not None and len(raw) < n:
            raise EOFError("unexpected end of data (the archive is cut short)")
        self.pos += len(raw)
        self.read_bytes += len(raw)
        if self._blob_hash is not None:
            self._blob_hash.update(raw)
        if self.progress is not None:
            self.progress(len(raw))
        return raw

    def _account(self, out: bytes) -> bytes:
        if self.kind == GZIP:
            self._trailers()  # of the members before this output
            if self.check is not None:
                self.check.update(out)
        self.plain_bytes += len(out)
        if self.budget is not None:
            self.budget.spend(len(out))
        if self._plain_hash is not None:
            self._plain_hash.update(out)
        return out

    def read_chunk(self) -> bytes:
        if self._done:
            return b""
        dec = self._dec
        if dec is None:
            raw = self._read_raw()
            if not raw:
                self._done = True
            return self._account(raw)
        while True:
            out = dec.more()
            if out:
                return self._account(out)
            raw = self._read_raw()
            if not raw:
                if not dec.finished():
                    raise EOFError("unexpected end of data (truncated or corrupt)")
                if self.kind == GZIP:
                    self._trailers()
                self._done = True
                return b""
            out = dec.feed(raw)
            if out:
                return self._account(out)

    def read_all(self, limit: int = 64 << 20) -> bytes:
        parts = []
        total = 0
        while True:
            chunk = self.read_chunk()
            if not chunk:
                return b"".join(parts)
            total += len(chunk)
            if total > limit:
                raise ImageError(f"a metadata file larger than {limit} bytes")
            parts.append(chunk)

    def drain(self) -> None:
        while self.read_chunk():
            pass

    @property
    def blob_digest(self) -> str:
        return f"{self._blob_hash.name}:{self._blob_hash.hexdigest()}"

    @property
    def plain_digest(self) -> str:
        return f"{self._plain_hash.name}:{self._plain_hash.hexdigest()}"


def _algorithm(wanted: bool | str) -> str:
    return "sha256" if wanted is True else wanted


def algorithm_of(digest: str | None) -> str:
    """``sha512`` of ``sha512:…``; sha256 for anything else (the digests
    reaching here were checked by formats.digest_path already)."""
    return "sha512" if digest and digest.startswith("sha512:") else "sha256"


def is_corruption(err: BaseException) -> bool:
    """An error of the data (or of writing it), not a kubirun bug."""
    if isinstance(err, (CorruptData, EOFError, zlib.error, OSError)):
        return True
    return type(err).__name__ == "LZMAError"  # lzma is imported only for xz data


def reason(err: BaseException) -> str:
    if isinstance(err, EOFError):
        text = str(err)
        return text if "end of data" in text else "unexpected end of data (truncated or corrupt)"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror if not err.filename else f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


class Prefetched:
    """``Decoded``'s chunks made by a thread of their own: decompression
    (which releases the GIL) overlaps the extractor's system calls, as
    ``tar -xz`` overlaps gzip and tar.  The digest of the decompressed
    bytes and gzip's CRC-32 are taken here, on the reader's side: the
    thread only inflates, the longer of the two stages (for a rootfs
    tar.gz of 120 MB: ~0.39 s of zlib, against ~0.3 s for the reader's
    system calls, digests included), and the reader has time to spare
    while the kernel creates its files.  Errors of the thread are raised
    where the chunk would have been read."""

    _END = object()
    _TRAILERS = object()  # (_TRAILERS, trailers): gzip members ended

    def __init__(self, decoded: Decoded, depth: int = 16) -> None:
        import queue
        import threading

        self.decoded = decoded
        # The plain digest moves to this side (decoded.plain_digest reads
        # the same object once the stream has ended).
        self._plain_hash = decoded._plain_hash
        decoded._plain_hash = None
        decoded.hand_over_checks()
        self._check = MemberCheck() if decoded.kind == GZIP else None
        self._queue: queue.Queue = queue.Queue(depth)
        self._empty = queue.Empty
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="kubirun-decompress",
                                        daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        put = self._queue.put
        decoded = self.decoded
        try:
            while not self._stop.is_set():
                chunk = decoded.read_chunk()
                trailers = decoded.take_trailers()
                if trailers:  # they come before the chunk
                    put((self._TRAILERS, trailers))
                if not chunk:
                    break
                put(chunk)
            put(self._END)
        except BaseException as err:  # handed to the reader
            put(err)

    def read_chunk(self) -> bytes:
        if self._done:
            return b""
        get = self._queue.get
        item = get()
        while type(item) is tuple:  # gzip trailers
            try:
                self._check.end(item[1])
            except CorruptData:
                self.close()
                raise
            item = get()
        if item is self._END:
            self._done = True
            self._thread.join()
            self.decoded._plain_hash = self._plain_hash
            return b""
        if isinstance(item, BaseException):
            self._done = True
            self._thread.join()
            raise item
        if self._check is not None:
            self._check.update(item)
        if self._plain_hash is not None:
            self._plain_hash.update(item)
        return item

    def close(self) -> None:
        """Stop the thread (after an error of the reader's side)."""
        if self._done:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a put() waiting for room
            except self._empty:
                continue
        self._done = True

    def __getattr__(self, name: str):
        return getattr(self.decoded, name)
