"""A seeded fuzz of image archives through the real CLI: a small layer
whose tar headers are mutated byte by byte (ids negative or beyond uid_t,
times that are not times, NULs in names, odd numbers in every field) or
given odd pax records (``mtime=nan``, ``uid=-1``, a ``path`` with a NUL,
xattrs...).  Most cases are a root filesystem tar for ``kubirun images
import``; some are the layer on top of the demo image, for ``kubirun run
ARCHIVE -- true``.  Each is accepted or refused with one line starting
"kubirun: " (never an internal error nor a traceback), leaving no
container, no unfinished layer, no mount.

KUBIRUN_FUZZ_SEED and KUBIRUN_FUZZ_ARCHIVES change the seed (19) and the
number of cases (80).
"""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.conftest import kubirun
from tests.image import builders as b
from tests.image.conftest import mounts_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking owners and devices needs root")

SEED = int(os.environ.get("KUBIRUN_FUZZ_SEED", "19"))
CASES = int(os.environ.get("KUBIRUN_FUZZ_ARCHIVES", "80"))

# (offset, length) of the ustar header's numeric and text fields
FIELDS = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
          "mtime": (136, 12), "devmajor": (329, 8), "devminor": (337, 8),
          "name": (0, 100), "linkname": (157, 100), "typeflag": (156, 1), "prefix": (345, 155)}
NUMBERS = [b"\xff" * 8, b"\xff" * 7 + b"\xfe", b"\x80" + b"\xff" * 7, b"\x80\0\0\x01\0\0\0\0",
           b"\x80\0\0\0\xff\xff\xff\xff", b"7777777\0", b"-1\0", b"99999999999\0", b"\0" * 8,
           b"xyz\0", b"\x80" + b"\x7f" * 11, b"\xff" * 12, b" " * 8, b"0000017\x00"]
PAX_KEYS = [b"path", b"linkpath", b"mtime", b"atime", b"uid", b"gid", b"size", b"uname",
            b"SCHILY.xattr.user.fuzz", b"SCHILY.xattr.security.capability", b"SCHILY.xattr.",
            b"SCHILY.xattr.user.a\0b", b"GNU.sparse.major", b"hdrcharset", b"comment", b""]
PAX_VALUES = [b"nan", b"inf", b"-inf", b"1e400", b"-1e30", b"-1", b"99999999999999999999", b"",
              b"a\0b", b"../../x", b"/abs", b"x" * 5000, b"\xff\xfe", b"1.5", b"\xed\xb2\x80",
              b"4294967295", b"4294967296", b"0", b"fuzz/ok"]
TYPEFLAGS = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"x", b"g", b"L", b"K", b"S", b"V",
             b"Z", b"\0", b"\xff"]


def base_members() -> list[b.RawMember]:
    return [b.RawMember(b"fuzz/", b"5", mode=0o755),
            b.RawMember(b"fuzz/file", b"0", b"content\n"),
            b.RawMember(b"fuzz/link", b"2", linkname=b"file"),
            b.RawMember(b"fuzz/hard", b"1", linkname=b"fuzz/file"),
            b.RawMember(b"fuzz/fifo", b"6"),
            b.RawMember(b"fuzz/null", b"3", dev=(1, 3)),
            b.RawMember(b"fuzz/xattr", b"0", b"x")]


def mutate(rng: random.Random, members: list[b.RawMember]) -> str:
    member = rng.choice(members)
    name = bytes(member.header[:100]).rstrip(b"\0").decode(errors="backslashreplace")
    roll = rng.random()
    if roll < 0.45:
        field = rng.choice(list(FIELDS))
        offset, length = FIELDS[field]
        if field == "typeflag":
            value = rng.choice(TYPEFLAGS)
        elif field in ("name", "linkname", "prefix"):
            value = rng.choice([b"a\0b", b"\xff\xfe\xfd", b"../../x", b"/abs", b"x" * length,
                                b"fuzz/" + bytes(rng.randrange(1, 256) for _ in range(20))])
        else:
            value = rng.choice(NUMBERS)[:length]
        member.header[offset:offset + length] = value.ljust(length, b"\0")[:length]
        if rng.random() < 0.1:
            member.fix_checksum = False
            return f"{name}: {field} = {value!r:.40} (checksum left wrong)"
        return f"{name}: {field} = {value!r:.40}"
    if roll < 0.9:
        record = (rng.choice(PAX_KEYS), rng.choice(PAX_VALUES))
        member.pax.append(record)
        return f"{name}: pax {record[0]!r}={record[1]!r:.40}"
    which = rng.choice(["cut", "garbage", "pax"])
    if which == "cut":
        member.data = member.data[:1]  # the header still says its size
    elif which == "garbage":
        member.header[rng.randrange(b.BLOCK)] = rng.randrange(256)
    else:
        member.raw_pax = rng.choice([b"99 comment=x\n", b"x comment=x\n", b"12 nonewline=", b"0 =\n",
                                     b"-5 a=b\n", b"6 a=b\n\0\0", b"\xff" * 40])
        return f"{name}: pax body {member.raw_pax!r}"
    return f"{name}: {which}"


# --- the run ---------------------------------------------------------------------------

def problem_with(result: subprocess.CompletedProcess) -> str | None:
    stderr = result.stderr
    if "internal error" in stderr or "Traceback" in stderr:
        return f"a bug reached the user: {stderr.strip()[-400:]!r}"
    if result.returncode == 0:
        return None
    lines = stderr.split("\n")
    if lines[-1] != "" or not lines[-2].startswith("kubirun: ") or \
            not all(line.startswith("kubirun: warning: ") for line in lines[:-2]):
        return f"not one 'kubirun: ' line on stderr: {stderr[-400:]!r}"
    return None


def test_mutated_archives_are_imported_or_refused_in_one_line(tmp_path, base_tar, private_store):
    rng = random.Random(SEED)
    oci = b.Oci()
    base_layer = oci.layer(base_tar)  # compressed once, shared by the runs
    failures, accepted, refused = [], 0, 0
    for index in range(CASES):
        members = base_members()
        what = "; ".join(mutate(rng, members) for _ in range(rng.choice((1, 1, 2))))
        layer = b.raw_tar(members)
        run = index % 4 == 3
        if run:
            image = tmp_path / f"case{index}.oci.tar"
            case = b.Oci()
            case.blobs = dict(oci.blobs)
            case.write_tar(image, [case.image([base_layer, case.layer(layer)])])
            result = kubirun("run", str(image), "--", "true", stdin=subprocess.DEVNULL)
        else:
            image = tmp_path / f"case{index}.tar"
            image.write_bytes(layer)
            result = kubirun("images", "import", str(image), stdin=subprocess.DEVNULL)
        problem = problem_with(result)
        if result.returncode == 0:
            accepted += 1
        else:
            refused += 1
        for leftover in ("containers", "tmp"):
            if (private_store / leftover).exists() and os.listdir(private_store / leftover):
                problem = problem or f"left in the store's {leftover}/: {os.listdir(private_store / leftover)}"
        if mounts_under(tmp_path):
            problem = problem or f"mounts left: {mounts_under(tmp_path)}"
        if problem:
            failures.append(f"case {index} ({'run' if run else 'import'}: {what}): {problem}")
        image.unlink()
    print(f"\narchive fuzz, seed {SEED}: {CASES} cases, {accepted} accepted, {refused} refused")
    assert not failures, f"seed {SEED}: {len(failures)} failures:\n" + "\n".join(failures[:40])
