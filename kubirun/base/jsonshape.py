"""Reading JSON of a known shape (config.json, a seccomp profile): each
reader checks one value's type and names its JSON path in the error,
``config.json: process.args[0]: expected a string, got 1``."""
from __future__ import annotations

from kubirun.base import jsonio
from kubirun.base.errors import SpecError


def fail(where: str, message: str) -> SpecError:
    return SpecError(f"config.json: {where}: {message}")


def type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def expect(value: object, kind: type | tuple, where: str) -> object:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        wanted = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
                  int: "an integer"}.get(kind, str(kind))
        raise fail(where, f"expected {wanted}, got {type_name(value)} {jsonio.dumps(value)[:60]}")
    if isinstance(value, str):
        check_text(value, where)
    return value


def check_text(value: str, where: str) -> str:
    """Every string of config.json ends up a C string (a path, an argument,
    a name): no NUL inside, and text that UTF-8 can encode (a JSON escape
    can make a lone surrogate, which it cannot)."""
    if "\0" in value:
        raise fail(where, f"must not contain a NUL byte, got {jsonio.dumps(value)[:60]}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as err:
            raise fail(where, f"is not valid Unicode text (a lone surrogate at character"
                        f" {err.start}), got {jsonio.dumps(value)[:60]}") from None
    return value


def get(obj: dict, key: str, kind: type | tuple, where: str, default: object = None) -> object:
    if key not in obj or obj[key] is None:
        return default
    return expect(obj[key], kind, f"{where}.{key}" if where else key)


def strings(obj: dict, key: str, where: str) -> list[str]:
    items = get(obj, key, list, where, [])
    path = f"{where}.{key}" if where else key
    for i, item in enumerate(items):
        expect(item, str, f"{path}[{i}]")
    return list(items)


def uint(obj: dict, key: str, where: str, default: int | None = None,
          maximum: int | None = None) -> int | None:
    """An optional unsigned integer, of at most ``maximum`` if given (the
    width of the field in the runtime-spec's Go types, or what the kernel
    takes)."""
    value = get(obj, key, int, where, default)
    if value is not None and value < 0:
        raise fail(f"{where}.{key}", f"must not be negative, got {value}")
    if value is not None and maximum is not None and value > maximum:
        raise fail(f"{where}.{key}", f"must be at most {maximum}, got {value}")
    return value
