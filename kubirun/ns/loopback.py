"""The container's network namespace as kubirun run makes it: only ``lo``,
and up.  (Bridges and veths come with the networking work; they will import
pyroute2 lazily, only when asked for.)"""
from __future__ import annotations

from kubirun import _native


def bring_up_loopback() -> None:
    _native.link_up("lo")
