"""A new network namespace's ``lo``, brought up by the init (step 11).
Apart from kubirun.ns.net (bridges, veths, leases, published ports), whose
package the init's start path does not import."""
from __future__ import annotations

from kubirun import _native


def bring_up_loopback() -> None:
    _native.link_up("lo")
