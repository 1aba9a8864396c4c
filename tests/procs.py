"""What the tests read of /proc about processes (standard library only:
the scripts the API tests run in a child interpreter import it too)."""
from __future__ import annotations

import os


def children(pid: int | str = "self") -> set[int]:
    """The children of process ``pid``, whichever of its threads forked
    them.  A thread that ends while they are read (Python's ``join``
    returns before the kernel's thread is gone) is skipped: its children
    passed to the others."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(child) for child in f.read().split())
        except FileNotFoundError:
            continue
    return found
