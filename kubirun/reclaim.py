"""What a runtime killed at any point leaves behind, recognised and removed.

Every kubirun command makes things in an order that a later one can read
back: a state directory is born locked (``kubirun.state``), a store
directory owned (``kubirun.containerdir``), a lease names its
container and the process that took it (``kubirun.ns.net.ipam``), a layer
is unpacked under ``store/tmp`` before it is renamed into place.  So,
without any record of the killed command itself:

    ROOT/ID with no readable state.json, lock free      its create was killed
    ROOT/ID "creating", creator dead                    (the same, later on)
    ROOT/ID "ephemeral" (`run` without -d/--keep),
      creator dead                                      its run was killed
    ROOT/ID:new-PID, ROOT/ID:gone-PID, lock free        a claim or removal killed
    STORE/containers/NAME, owner lock free, no
      container's state naming it                       its run was killed
    ROOT/network:BRIDGE/ADDRESS, its container without
      state and its runtime dead                        the same (bridge mode)
    STORE/tmp/*, STORE/locks/LAYER of no layer          an import was killed
      (under the store's exclusive lock)

``delete --force ID`` and ``kubirun run --name ID`` remove those of one id;
``kubirun gc`` all of them.  Containers that are merely stopped (a
finished ``create``, a ``run --keep``) are left to their users, as runc
leaves them.  Only kubirun's state root and store are looked at: other
runtimes' containers, cgroups and mounts are never touched.
"""
from __future__ import annotations

import os

from kubirun.base import log


def leftovers_of(name: str, root: str, store: str | None = None) -> list[str]:
    """After ``delete --force NAME`` (and before ``run --name NAME``): the
    store directory of that name and its leases, if their run is dead."""
    from kubirun import containerdir
    from kubirun.image.store import Store, store_root
    from kubirun.state import all_entries, is_stale, remove_stale

    removed = []
    entries = all_entries(root)
    for entry in entries:
        if entry.startswith(name + ":") and not entry.startswith("network:") and \
                is_stale(os.path.join(root, entry)):
            remove_stale(os.path.join(root, entry))  # its claim, or its removal, was killed
            removed.append(os.path.join(root, entry))
    containers = os.path.join(store or store_root(), "containers")
    path = os.path.join(containers, name)
    if os.path.lexists(path) and containerdir.reclaim(path, root):
        removed.append(f"store directory {path}")
    claims = [entry for entry in _list(containers) if entry.startswith(name + containerdir.CLAIMING)]
    removed += [os.path.join(containers, claim) for claim in claims
                if containerdir.reclaim_claim(os.path.join(containers, claim))]
    removed += stale_leases(root, entries, owner=name)
    removed += [f"{path} (an interrupted import)"
                for path in Store(store).remove_import_leftovers(wait=False)]
    for what in removed:
        log.debug(f"container {name}: removed {what} (left by a killed runtime)")
    return removed


def _list(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def stale_leases(root: str, entries: list[str], owner: str | None = None) -> list[str]:
    removed = []
    for name in entries:
        if name.startswith("network:"):
            from kubirun.ns.net import undo_stale
            from kubirun.ns.net.ipam import Pool
            from kubirun.state import has_state

            pool = Pool(os.path.join(root, name), None, has_state)
            for record in pool.reclaim_stale(undo_stale, owner):
                removed.append(f"lease {record.get('address')} of {record.get('owner')}"
                               f" ({pool.dir})")
    return removed


def store_leftovers(root: str, store: str | None) -> list[str]:
    from kubirun import containerdir
    from kubirun.image.store import Store

    store = Store(store)
    removed = []
    try:
        names = sorted(os.listdir(store.containers))
    except FileNotFoundError:
        return removed
    for name in names:
        path = os.path.join(store.containers, name)
        if containerdir.is_claim(name):
            if containerdir.reclaim_claim(path):
                removed.append(f"{path} (a claim of a killed run)")
        elif containerdir.reclaim(path, root):
            removed.append(f"store directory {path} (its run was killed)")
    if os.path.isdir(store.locks):
        removed += [f"{path} (an interrupted import)" for path in store.remove_import_leftovers()]
    return removed
