"""A new network namespace's ``lo``, brought up by the init (step 11).
Apart from kubirun.ns.net (bridges, veths, leases, published ports), whose
package the init's start path does not import."""
from __future__ import annotations



def bring_up_loopback(kernel) -> None:
    """Through ``kernel``, a ``_native.Kernel`` (two ioctls: no pyroute2)."""
    kernel.link_up("lo")
