"""The commands an engine calls on every task, all the time: ``start``,
``state``, ``kill``, ``delete``, and ``list`` (containerd's shim runs
state/kill/delete for each container; scripts poll list).  A module of
their own so that they load nothing else: ``handlers`` is the rest of the
command line's work, several times their size (see ``kubirun.cli.table``)."""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError


def start(container_id: str) -> int:
    from kubirun.container import Container

    Container(container_id).start()
    return 0


def state(container_id: str) -> int:
    # Not through kubirun.container (its imports double the command's
    # time): engines call `state` for every task, all the time.
    from kubirun.base import jsonio
    from kubirun.state import StateDir, default_root, oci_state

    directory = StateDir(default_root(), container_id)
    print(jsonio.dumps(oci_state(directory, directory.read()), indent=2))
    return 0


def kill(container_id: str, signal: str | None, all: bool) -> int:
    from kubirun.container import Container

    Container(container_id).kill(parse_signal(signal or "TERM"), all_processes=all)
    return 0


def delete(container_id: str, force: bool) -> int:
    from kubirun.container import Container

    Container(container_id).delete(force=force)
    return 0


def list_(format: str, quiet: bool) -> int:
    from kubirun.base import log
    from kubirun.state import Corrupt, StateDir, default_root, list_ids, oci_state

    root = default_root()
    states = []
    for container_id in list_ids(root):
        try:
            directory = StateDir(root, container_id)
            states.append(oci_state(directory, directory.read()))
        except Corrupt as err:
            log.warning(str(err))  # the others are still listed
        except KubirunError:
            continue  # deleted while we looked
    if quiet:
        for s in states:
            print(s["id"])
        return 0
    for s in states:
        s["owner"] = _owner(s["id"])
    if format == "json":
        from kubirun.base import jsonio

        print(jsonio.dumps([_as_runc_lists(s) for s in states] or None))  # runc: null, not []
        return 0
    if format != "table":
        raise KubirunError(f"--format: expected table or json, got {format!r}")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


LIST_FIELDS = ("ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "annotations",
               "owner")  # runc's order (scripts and engines read it as text, too)


def _as_runc_lists(state: dict) -> dict:
    return {key: state[key] for key in LIST_FIELDS if key in state}


def _owner(container_id: str) -> str:
    """Who owns the container's state directory, by name (runc's OWNER)."""
    import pwd

    from kubirun.state import StateDir, default_root

    try:
        uid = os.stat(StateDir(default_root(), container_id).path).st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def parse_signal(text: str) -> int:
    """TERM, SIGTERM, sigterm, 15, RTMIN+1: as runc and kill(1) accept them."""
    import _signal

    if text.isdigit():
        number = int(text)
        if not 0 <= number <= _signal.SIGRTMAX:  # 0 probes, as kill(2)
            raise KubirunError(f"invalid signal {text!r}")
        return number
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    for base in ("SIGRTMIN+", "SIGRTMAX-"):
        if name.startswith(base) and name[len(base):].isdigit():
            offset = int(name[len(base):])
            number = _signal.SIGRTMIN + offset if base == "SIGRTMIN+" else _signal.SIGRTMAX - offset
            if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                return number
    number = getattr(_signal, name, None)
    if not isinstance(number, int) or name.startswith("SIG_"):
        raise KubirunError(f"unknown signal {text!r}")
    return number
