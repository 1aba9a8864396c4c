"""JSON for the hot commands, without the ``json`` package.

``import json`` costs ~6 ms here (``json.decoder`` imports ``re``, which
imports ``enum``): a quarter of a whole ``runc run``.  The C accelerator
``_json`` that ``json`` itself uses needs neither, so ``state``, ``kill``,
``start``... parse ``config.json`` and ``state.json`` with it directly.
Output is the same as ``json.dumps`` (compact, or indented by ``indent``).
"""
from __future__ import annotations

import _json
import os


class _DecoderContext:
    # The attributes _json.make_scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_DecoderContext())
_WHITESPACE = " \t\n\r"


class JSONError(ValueError):
    """Malformed JSON; the message gives line and column, as ``json`` does."""


# No document kubirun reads nests deeper than a dozen levels; a hostile one
# could nest 100000 deep, which the C scanner meets with a RecursionError
# (and a deep value would meet one later, in whatever walks it).
MAX_DEPTH = 200


def loads(text: str | bytes) -> object:
    if isinstance(text, bytes):
        # Not the "utf-8-sig" codec: importing it costs ~0.8 ms.
        text = text.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as err:
        raise JSONError(_where(text, err.value, "expecting a value")) from None
    except RecursionError:
        raise JSONError(_too_deep()) from None
    except (ValueError, SystemError):
        raise JSONError(_syntax_error(text)) from None
    rest = len(text.rstrip(_WHITESPACE))
    if end < rest:
        raise JSONError(_where(text, end, "extra data"))
    # Two counts in C: the everyday document cannot be too deep, no walk needed.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise JSONError(_too_deep())
    return value


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels"


def _depth(value: object) -> int:
    """How deep arrays and objects nest in ``value`` (without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                break
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _syntax_error(text: str) -> str:
    """What is wrong, as ``json`` says it.  _json raises its errors as
    json.decoder.JSONDecodeError, which it only finds if json.decoder was
    imported (else a SystemError says nothing): the error path pays for
    that import, the everyday one never does."""
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return _where(text, err.pos, err.msg)
    except ValueError as err:
        return str(err)
    return "malformed JSON"


def _where(text: str, pos: int, what: str) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{what}: line {line} column {column} (char {pos})"


def load_file(path: str) -> object:
    with open(path, "rb") as f:
        return loads(f.read())


_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)
# json.dumps(value, sort_keys=True, separators=(",", ":")): the canonical
# form an image id is the digest of.
_encode_sorted = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                                    True, False, True)
_encode_str = _json.encode_basestring_ascii


def dumps(value: object, indent: int | None = None, sort_keys: bool = False) -> str:
    if indent is None:
        return "".join((_encode_sorted if sort_keys else _encode)(value, 0))
    if sort_keys:
        raise ValueError("sort_keys is for the compact form only")
    out: list[str] = []
    _pretty(value, indent, 0, out)
    return "".join(out)


def _pretty(value: object, indent: int, level: int, out: list[str]) -> None:
    pad = "\n" + " " * (indent * (level + 1))
    if isinstance(value, dict) and value:
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("," if i else "") + pad + _encode_str(str(key)) + ": ")
            _pretty(item, indent, level + 1, out)
        out.append("\n" + " " * (indent * level) + "}")
    elif isinstance(value, (list, tuple)) and value:
        out.append("[")
        for i, item in enumerate(value):
            out.append(("," if i else "") + pad)
            _pretty(item, indent, level + 1, out)
        out.append("\n" + " " * (indent * level) + "]")
    else:
        out.append("".join(_encode(value, 0)))


def write_atomically(path: str, value: object, mode: int = 0o600, replace=os.rename) -> None:
    """Write ``value`` as JSON to ``path`` so readers see the old file or the
    new one, never half of either (a temporary file, ``replace``d onto
    ``path``: ``os.rename``, or ``_native.replace_file`` from the layers
    that may reach it).  No fsync: state lives in /run, and no container
    survives the power loss that an fsync would guard against (it cost
    ~1 ms per write on disk)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, dumps(value).encode())
    finally:
        os.close(fd)
    replace(tmp, path)
