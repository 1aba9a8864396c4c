"""The ``Cgroup`` interface every driver implements, with the parts they
share (making and removing directories, moving pids, walking pids,
killing), and the path rules.  kubirun.cgroups (the package) chooses the
driver; this module imports none of them, so they import it freely.
"""
from __future__ import annotations

import os

from kubirun.base.errors import CgroupError

# Where relative OCI cgroupsPaths go.
DEFAULT_PARENT = "/kubirun"

# How long destroy() waits for a cgroup whose last processes are exiting.
DESTROY_TIMEOUT = 2.0


# What an error for a config this host cannot take starts with, as runc's
# ("invalid configuration: cannot use unified on cgroup v1").
INVALID = "invalid configuration: "


def normalise_path(path: str) -> str:
    """The OCI linux.cgroupsPath as an absolute cgroup path.

    Relative paths go under /kubirun/ (runc puts them under its own cgroup;
    we prefer a fixed, findable place). ".." is refused rather than
    resolved: a path that climbs is a mistake or an attack.
    """
    if not isinstance(path, str) or not path.strip("/ "):
        raise CgroupError(f"cgroup path {path!r}: empty or the root cgroup; refusing", path=str(path))
    if "\0" in path or "\n" in path:
        raise CgroupError(f"cgroup path {path!r}: contains NUL or newline", path=path)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CgroupError(f"cgroup path {path!r}: '..' is not allowed", path=path)
    if not path.startswith("/"):
        parts = DEFAULT_PARENT.strip("/").split("/") + parts
    return "/" + "/".join(parts)


def joined_v1_mounts(layout) -> dict[str, str]:
    """controller -> mount point of the v1 hierarchies a container joins
    (every controller's, and name=systemd's; no other named hierarchy)."""
    return {c: m for c, m in layout.v1.items() if not c.startswith("name=") or c == "name=systemd"}


def exists_anywhere(path: str, layout) -> bool:
    """Is there a directory for cgroup ``path`` in any hierarchy its
    driver would use?  Without loading the driver: ``create`` asks before
    the fork, and the drivers' imports then overlap the init's set-up."""
    roots = [] if layout.kind == "v2" else list(joined_v1_mounts(layout).values())
    if layout.kind in ("v2", "hybrid") and layout.unified:
        roots.append(layout.unified)
    return any(os.path.isdir(root + path) for root in roots)


class Cgroup:
    """One cgroup, in every hierarchy it lives in.

    ``path`` is the normalised absolute cgroup path; its directory in a
    hierarchy mounted at M is M + path.
    """

    kind = ""

    def __init__(self, path: str, layout, state: dict | None = None) -> None:
        self.path = path
        self.layout = layout
        state = state or {}
        # Directories we made, in creation order; only these are removed.
        self._created: list[str] = list(state.get("created", ()))
        # v2: controllers we enabled in pre-existing ancestors, [dir, name].
        self._enabled: list[list[str]] = [list(e) for e in state.get("enabled", ())]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    # --- to be provided by drivers ---------------------------------------

    def _roots(self) -> list[str]:
        """The mount points of every hierarchy this cgroup lives in."""
        raise NotImplementedError

    def _setup_dir(self, root: str, dirpath: str, new: bool) -> None:
        """Called for each level of the path once it exists, top down."""

    def _procs_dir(self) -> str:
        """The directory whose cgroup.procs (recursively) lists our pids."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def can_freeze(self) -> bool:
        raise NotImplementedError

    def frozen_file(self) -> str | None:
        """A file saying that the cgroup is frozen or freezing, by its own
        freezer or an ancestor's (a process joining it would stop at once);
        None when it is not."""
        raise NotImplementedError

    def apply(self, resources: dict) -> list[str]:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def oom_kills(self) -> int:
        raise NotImplementedError

    # --- common ------------------------------------------------------------

    def dirs(self) -> list[str]:
        """The cgroup's directory in every hierarchy."""
        return [root + self.path for root in self._roots()]

    def to_state(self) -> dict:
        return {
            "version": 1,
            "driver": self.kind,
            "path": self.path,
            "dirs": self.dirs(),
            "created": list(self._created),
            "enabled": [list(e) for e in self._enabled],
        }

    def create(self) -> None:
        """Make the directories, parents as needed, in every hierarchy.

        Those the state says we made already (a hybrid host's unified
        directory, made before the init was forked into it) are set up as
        new ones.  On failure, the directories made by this call are
        removed again.
        """
        from . import fs

        made: list[str] = []
        before = set(self._created)

        def setup(root: str, directory: str, new: bool) -> None:
            self._setup_dir(root, directory, new or directory in before)

        try:
            for root in self._roots():
                fs.make_path(self.path, root, made, setup)
        except BaseException:
            fs.remove_dirs(made)
            raise
        finally:
            # Whatever we made and could not take back is still ours.
            self._created.extend(d for d in made if d not in self._created and os.path.isdir(d))

    def add(self, pid: int, memory: bool | None = None, include_unified: bool = True) -> None:
        """Move ``pid`` (the whole thread group) into the cgroup everywhere;
        with ``memory=False`` everywhere but the hierarchy that charges
        memory, with ``memory=True`` only there (a runtime joins that one
        last, so its own memory is not charged to the container).
        ``include_unified``: as for ``join_files``."""
        from . import fs

        memory_dir = self.memory_dir()
        for d in self.dirs():
            if not include_unified and self._in_hybrid_unified(d):
                continue
            if memory is None or (d == memory_dir) == memory:
                fs.write(self.path, d, "cgroup.procs", str(int(pid)))

    def _in_hybrid_unified(self, directory: str) -> bool:
        """Whether ``directory`` is in a hybrid host's unified hierarchy."""
        unified = getattr(self, "unified_mount", None)
        return self.kind == "hybrid" and bool(unified) and directory.startswith(unified + "/")

    def join_files(self, include_unified: bool = True) -> list[tuple[str, bool]]:
        """The files a process writes "0" to, to move *itself* into the
        cgroup, each with whether its hierarchy charges memory.

        v1 hierarchies: ``tasks``.  A single-threaded process moving itself
        through ``tasks`` skips the kernel's global threadgroup lock, and
        with it an RCU grace period (measured here: 0.4 ms for nine
        hierarchies, against 7-14 ms through ``cgroup.procs``).  v2 has
        only ``cgroup.procs`` (for a process moving itself into a new
        cgroup, 0.05 ms on the 6.x kernels measured).
        ``include_unified=False`` leaves out a hybrid host's unified
        hierarchy (it holds no controller a container needs unless hugetlb
        is limited there).
        """
        memory_dir = self.memory_dir()
        files = []
        for d in self.dirs():
            if self._in_hybrid_unified(d) or self.kind == "v2":
                if self.kind == "hybrid" and not include_unified:
                    continue
                files.append((d + "/cgroup.procs", d == memory_dir))
            else:
                files.append((d + "/tasks", d == memory_dir))
        return files

    def freezer_file(self) -> str | None:
        """The file that says whether the cgroup is frozen (v1
        ``freezer.state``, v2 ``cgroup.freeze``): a caller may read it to
        skip ``is_frozen`` when it says thawed ("THAWED" or "0")."""
        if self.kind in ("v1", "hybrid") and self.dir_of("freezer") is not None:
            return self.dir_of("freezer") + "/freezer.state"
        unified = self.dirs()[0] if self.kind == "v2" else getattr(self, "unified_dir", None)
        return unified + "/cgroup.freeze" if unified else None

    def memory_dir(self) -> str | None:
        """The directory whose hierarchy charges memory (None without one)."""
        if self.kind == "v2":
            return self.dirs()[0]
        return self.dir_of("memory")

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its descendants, sorted; [] when the
        cgroup does not exist."""
        from . import fs

        return fs.pids_below(self.path, self._procs_dir())

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every process in the cgroup.

        Freezing first means no process can fork a child we would miss;
        afterwards the cgroup is thawed again, unless it was frozen before
        and the signal is not SIGKILL (a paused container stays paused; a
        killed one must be thawed to die on v1).
        """
        import signal

        if sig == signal.SIGKILL and self._cgroup_kill():
            return
        froze = was_frozen = False
        if self.can_freeze():
            was_frozen = self.is_frozen()
            if not was_frozen:
                try:
                    self.freeze()
                    froze = True
                except CgroupError:
                    pass  # signal anyway: a kill that misses a fork beats no kill
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if froze or (was_frozen and sig == signal.SIGKILL):
                self.thaw()

    def _cgroup_kill(self) -> bool:
        """v2's cgroup.kill; False when the driver has none."""
        return False

    def destroy(self) -> None:
        """Remove the directories we created, deepest first.

        Our leaf's own sub-cgroups (made by the container) go first. A busy
        cgroup (EBUSY: processes still exiting) is retried for up to
        DESTROY_TIMEOUT seconds in all; this does not kill anything. A parent
        we created that now holds another cgroup (someone else's container)
        is left in place.
        """
        self._created = remove_created(self.path, self.dirs(), self._created)


def remove_created(path: str, leaves: list[str], created: list[str]) -> list[str]:
    """``Cgroup.destroy`` from what a cgroup state records (its ``dirs``,
    the leaves, and ``created``), without the driver: what ``delete``
    needs of a container whose processes all died with its init.  Returns
    what is left of ``created`` (parents in use); raises CgroupError for
    the first directory that cannot be removed otherwise."""
    from . import fs

    leaf_set = set(leaves)
    deadline = fs.monotonic() + DESTROY_TIMEOUT
    failures = []
    remaining = []
    for d in sorted(created, key=lambda p: p.count("/"), reverse=True):
        if d in leaf_set:
            err = fs.remove_tree(d, deadline)
        else:
            err = fs.remove_parent(d)
        if err is not None:
            remaining.append(d)
            if err is not fs.IN_USE:
                failures.append((d, err))
    if failures:
        d, err = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise CgroupError(f"cgroup {path}: cannot remove {d}: {fs.describe(err)}{more}",
                          path=path, file=d, errno=err.errno)
    return [d for d in created if d in remaining]
