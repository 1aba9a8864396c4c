"""Where kubirun keeps things by default: the state root (``--root``,
``$KUBIRUN_ROOT``, /run/kubirun for root, ``$XDG_RUNTIME_DIR/kubirun``
otherwise).  The layout under it is kubirun.state's."""
from __future__ import annotations

import os

_root_override: str | None = None


def use_root(path: str) -> None:
    """``--root``: every container of this command lives under ``path``."""
    global _root_override
    _root_override = os.path.abspath(path)


def default_root() -> str:
    """``--root``, else ``$KUBIRUN_ROOT``, else /run/kubirun for root and
    ``$XDG_RUNTIME_DIR/kubirun`` for other users."""
    if _root_override:
        return _root_override
    if os.environ.get("KUBIRUN_ROOT"):
        return os.environ["KUBIRUN_ROOT"]
    if os.geteuid() == 0:
        return "/run/kubirun"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "kubirun")
    return f"/tmp/kubirun-{os.geteuid()}"
