"""Container ids: generated like docker's short ids, validated with runc's rules."""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def new_id() -> str:
    return os.urandom(6).hex()


def validate_id(container_id: str) -> str:
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise KubirunError(f"invalid container id {container_id!r}: "
                           "use letters, digits, '_', '+', '-' and '.' only")
    return container_id
