"""``kubirun gc``: every leftover of killed runtimes in a state root and
the store (kubirun.reclaim says what they are).  Above kubirun.container,
which it uses to judge a container directory, while container uses
kubirun.reclaim for the leftovers of one id."""
from __future__ import annotations

import os


def dead_container(name: str, root: str) -> str | None:
    """Remove container NAME of ``root`` if it is a leftover (see
    ``Container.dead``): why it was, or None."""
    from kubirun.container import Container

    return Container(name, root).dead()


def gc(root: str, store: str | None = None) -> list[str]:
    """Remove every leftover of killed runtimes in the state root and the
    store; what was removed, one line each."""
    from kubirun import reclaim
    from kubirun.base.ids import validate_id
    from kubirun.state import CLAIMING, REMOVING, all_entries, is_stale, remove_stale

    removed = []
    for name in all_entries(root):
        path = os.path.join(root, name)
        if CLAIMING in name or REMOVING in name:
            if is_stale(path):
                remove_stale(path)
                removed.append(f"{path} (a claim or removal of a killed runtime)")
            continue
        if ":" in name:
            continue  # network:BRIDGE, below
        try:
            validate_id(name)
        except Exception:  # noqa: BLE001 - not a container's directory: not ours to judge
            continue
        why = dead_container(name, root)
        if why:
            removed.append(f"container {name} ({why})")
    removed += reclaim.stale_leases(root, all_entries(root))
    removed += reclaim.store_leftovers(root, store)
    return removed
