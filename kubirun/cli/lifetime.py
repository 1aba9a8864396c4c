"""How long a command lives, and so whether the garbage collector runs.

A command lives tens of milliseconds and makes no garbage cycles worth
collecting, while the collector's passes over the objects of the modules
being imported cost 2-3 ms of every ``kubirun run``: ``kubirun.cli`` turns
it off first thing (inline there: this module's own import would cost
what engines' ``state`` calls should not pay).  A command that runs until stopped
(``events``, ``node serve``) turns it back on (``long_lived``); so does a
foreground run's port proxy (kubirun.ns.net.ports), whose threads serve
connections for as long as the container runs.
"""
from __future__ import annotations

import gc


def long_lived() -> None:
    """The collector back on, with the objects of start-up (the imported
    modules) left out of its passes."""
    gc.freeze()
    gc.enable()
