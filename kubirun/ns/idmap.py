"""Who may map which ids into a new user namespace, and how the maps get
written.

Root in the parent namespace may map any ids: the runtime writes
``/proc/PID/uid_map`` and ``gid_map`` itself.  A user without privileges
may write, by itself, one line mapping its own uid (and gid, once
``setgroups`` is denied) with size 1.  Anything more — ranges, so that the
container has users besides root — goes through shadow-utils' setuid
helpers ``newuidmap`` and ``newgidmap`` (Debian: ``apt install uidmap``),
which allow each line either for the caller's own id with size 1 or for
host ids within the caller's entries in ``/etc/subuid`` and
``/etc/subgid`` (``NAME_OR_UID:START:COUNT``).  ``check`` applies the
helpers' own rules before anything is made, so a refused config is one
line naming the mapping and the file, not a half-made container;
``write`` runs them (both at once) while the container's init waits.

``newgidmap`` denies ``setgroups`` by itself when no subordinate range is
mapped, and leaves it allowed otherwise (the container's users then have
supplementary groups); the runtime denies it only when it writes the own-
gid line itself, as the kernel demands.
"""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError

Mapping = tuple[int, int, int]  # (containerID, hostID, size)

INSTALL_HINT = "apt install uidmap"
SUBID_FILES = {"uid": "/etc/subuid", "gid": "/etc/subgid"}
HELPERS = {"uid": "newuidmap", "gid": "newgidmap"}


class IdMapError(KubirunError):
    """A mapping the caller may not write; the message says why (one line),
    ``index`` which line of the mappings (None: all of them)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def own_id(kind: str) -> int:
    """The id the kernel lets this process map by itself."""
    return os.geteuid() if kind == "uid" else os.getegid()


def is_own_single(kind: str, mappings: list[Mapping]) -> bool:
    """The one mapping an unprivileged process may write by itself."""
    return len(mappings) == 1 and mappings[0][1] == own_id(kind) and mappings[0][2] == 1


def find_helper(kind: str) -> str | None:
    """``newuidmap``/``newgidmap`` in ``$PATH`` (as ``which`` finds it)."""
    name = HELPERS[kind]
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _user() -> tuple[str | None, int]:
    """The caller's name (None without a passwd entry) and real uid: what
    the helpers look the files up by."""
    import pwd

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return None, uid


def subordinate_ranges(kind: str, path: str | None = None) -> list[tuple[int, int]]:
    """The caller's (start, count) entries of /etc/subuid or /etc/subgid,
    in file order: lines whose owner is the caller's name, its uid as a
    number, or another name with the same uid (shadow-utils' matching).
    A missing or unreadable file gives none."""
    path = path or SUBID_FILES[kind]
    name, uid = _user()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    mine, others = [], []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit() or not int(fields[2]):
            continue  # as shadow-utils does: a malformed line is skipped
        owner, entry = fields[0], (int(fields[1]), int(fields[2]))
        if owner == name or owner == str(uid):
            mine.append(entry)
        elif owner:
            others.append((owner, entry))
    if others and name is not None:
        import pwd

        for owner, entry in others:
            try:
                if pwd.getpwnam(owner).pw_uid == uid:
                    mine.append(entry)
            except KeyError:
                pass
    return mine


def _covered(start: int, count: int, ranges: list[tuple[int, int]]) -> bool:
    """[start, start+count) lies within the union of ``ranges`` (adjacent
    entries join, as shadow-utils' have_range allows)."""
    end = start + count
    while start < end:
        for first, size in ranges:
            if first <= start < first + size:
                start = first + size
                break
        else:
            return False
    return True


def _describe(mapping: Mapping) -> str:
    inside, outside, size = mapping
    return f"containerID {inside} hostID {outside} size {size}"


def _describe_ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{start}-{start + count - 1}" for start, count in ranges)


def check(kind: str, mappings: list[Mapping]) -> None:
    """Raise IdMapError unless this (non-root) caller may write these
    uid/gid ``mappings`` (``kind`` "uid" or "gid"): its own id of size 1
    alone, or, through newuidmap/newgidmap, lines each of which is its own
    id of size 1 or a range of its /etc/subuid (/etc/subgid) entries."""
    if is_own_single(kind, mappings):
        return
    if not mappings:
        raise IdMapError(f"a new user namespace needs at least one {kind} mapping")
    own, helper, path = own_id(kind), HELPERS[kind], SUBID_FILES[kind]
    if find_helper(kind) is None:
        index = next((i for i, m in enumerate(mappings) if m[1] != own or m[2] != 1), 1)
        raise IdMapError(f"({_describe(mappings[index])}): a non-root user maps more than its own {kind}"
                         f" ({own}, size 1) through {helper}, which is not installed ({INSTALL_HINT})",
                         index)
    name, uid = _user()
    if name is None:
        raise IdMapError(f"{helper} needs a passwd entry for your uid {uid}, and there is none")
    ranges: list[tuple[int, int]] | None = None
    for i, mapping in enumerate(mappings):
        inside, outside, size = mapping
        if size == 1 and outside == own:
            continue
        if ranges is None:
            ranges = subordinate_ranges(kind)
        if not _covered(outside, size, ranges):
            have = (f"gives {name} {_describe_ranges(ranges)}" if ranges
                    else f"has no entry for {name} (uid {uid})")
            raise IdMapError(f"({_describe(mapping)}): host {kind}s {outside}-{outside + size - 1} are"
                             f" neither your own {kind} ({own}, size 1) nor within your {path} entries:"
                             f" {path} {have}", i)


def container_mappings(kind: str) -> list[Mapping] | None:
    """What ``kubirun run`` maps for a non-root user, as podman does: 0 to
    the user's own id, then 1.. to its subordinate ranges, in file order.
    None when newuidmap/newgidmap is missing or the user has no entry."""
    if find_helper(kind) is None:
        return None
    ranges = subordinate_ranges(kind)
    if not ranges:
        return None
    mappings, inside = [(0, own_id(kind), 1)], 1
    for start, count in ranges[:300]:  # the kernel takes 340 lines at most
        mappings.append((inside, start, count))
        inside += count
    return mappings


# --- writing the maps -------------------------------------------------------

def _write_proc(pid: int, name: str, text: str) -> None:
    path = f"/proc/{pid}/{name}"
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {name}: {err.strerror}", path) from None


def _spawn(argv: list[str]) -> tuple[int, int]:
    """Start a helper, its stdout and stderr into a pipe: (pid, read end)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                             file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                           (os.POSIX_SPAWN_DUP2, write_end, 1),
                                           (os.POSIX_SPAWN_DUP2, write_end, 2)])
    except OSError as err:
        os.close(read_end)
        raise OSError(err.errno, f"cannot run {argv[0]}: {err.strerror}", argv[0]) from None
    finally:
        os.close(write_end)
    return pid, read_end


def _finish(argv: list[str], pid: int, read_end: int) -> str | None:
    """Wait for a helper; a failure as one line (command, status, output)."""
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    said = " ".join(b"".join(chunks).decode(errors="replace").split()) or "no message"
    how = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
    return f"{' '.join(argv)}: {how}: {said}"


def write(pid: int, uid_mappings: list[Mapping], gid_mappings: list[Mapping]) -> None:
    """Write the id maps of ``pid``'s new user namespace: directly as root
    or for the caller's own id alone, else through newuidmap/newgidmap
    (run side by side).  A helper's failure raises KubirunError naming the
    command, its exit status and what it said."""
    if os.geteuid() == 0:
        _write_proc(pid, "uid_map", _lines(uid_mappings))
        _write_proc(pid, "gid_map", _lines(gid_mappings))
        return
    helped = []
    for kind, mappings in (("uid", uid_mappings), ("gid", gid_mappings)):
        if is_own_single(kind, mappings):
            continue
        helper = find_helper(kind)
        if helper is None:
            from kubirun.base.errors import KubirunError

            raise KubirunError(f"cannot write the {kind} map of process {pid}: {HELPERS[kind]}"
                               f" is not installed ({INSTALL_HINT})")
        helped.append((kind, [helper, str(pid), *(str(n) for m in mappings for n in m)]))
    kinds = {kind for kind, _ in helped}
    started: list[tuple[list[str], int, int]] = []
    failures = []
    try:
        if "gid" not in kinds:
            # Unprivileged, a gid map is accepted only once setgroups is denied
            # (newgidmap decides that itself).
            _write_proc(pid, "setgroups", "deny")
        for _, argv in helped:
            started.append((argv, *_spawn(argv)))
        if "uid" not in kinds:
            _write_proc(pid, "uid_map", _lines(uid_mappings))
        if "gid" not in kinds:
            _write_proc(pid, "gid_map", _lines(gid_mappings))
    finally:
        for argv, child, fd in started:  # never left unreaped
            failure = _finish(argv, child, fd)
            if failure:
                failures.append(failure)
    if failures:
        from kubirun.base.errors import KubirunError

        raise KubirunError(f"cannot write the id maps of process {pid}: {'; '.join(failures)}")


def _lines(mappings: list[Mapping]) -> str:
    return "".join(f"{inside} {outside} {size}\n" for inside, outside, size in mappings)


# --- removing what the container's users made -------------------------------

def remove_tree(path: str) -> None:
    """Remove ``path`` from a user namespace with the maps ``kubirun run``
    gives (``container_mappings``), as ``podman unshare rm`` would: files
    and directories a container's non-root user made belong to subordinate
    ids on the host, which the user cannot remove as itself, but whose
    owners root of such a namespace has every right over.  Quietly does
    nothing without the helpers or entries (nothing of that kind was made)."""
    uids, gids = container_mappings("uid"), container_mappings("gid")
    if uids is None or gids is None:
        return
    from kubirun import _native

    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = _native.fork_with_flags(_native.CLONE_NEWUSER)
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            # Ours: /proc/PID/uid_map must belong to the user for newuidmap.
            _native.prctl(_native.PR_SET_DUMPABLE, 1)
            os.write(ready_w, b"u")
            if os.read(go_r, 1) == b"g":
                import shutil

                shutil.rmtree(path, ignore_errors=True)
                code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) == b"u":
            write(pid, uids, gids)
            os.write(go_w, b"g")
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)
