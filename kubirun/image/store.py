"""The content store: each layer unpacked once, keyed by its diff_id.

    $KUBIRUN_STORE (default /var/lib/kubirun)
      layers/HEX/        a layer, unpacked in overlayfs's format
      images/HEX.json    an image: its config, layers, names (HEX: the
                         config's sha256, the image id)
      sources/KEY.json   "this file, with this size and mtime, is that
                         image": a second run reads no archive at all
      containers/NAME/   a container: upper/, work/, rootfs/ (the overlay
                         mount), ``image`` (its image id, which keeps
                         the image from ``rm`` and ``prune``) and ``owner``
                         (locked by its run: kubirun.containerdir)
      tmp/               layers being unpacked, archives being decompressed
                         (what killed imports left: ``remove_import_leftovers``)
      locks/             flock(2) files

Concurrency: every import and every container's mount hold ``locks/store``
shared; ``rm`` and ``prune`` hold it exclusively, so they never remove
what a run is about to use.  A layer is unpacked under ``locks/HEX``, into
``tmp/``, verified, then renamed into ``layers/``: readers only ever see
complete layers, and two runs never unpack the same layer twice.

This module is on the warm path of ``kubirun run IMAGE``: it imports
nothing heavy until an image has to be unpacked.
"""
from __future__ import annotations

import os

from kubirun.base import jsonio
from kubirun.base.errors import ImageError

DEFAULT_STORE = "/var/lib/kubirun"


def store_root() -> str:
    if os.environ.get("KUBIRUN_STORE"):
        return os.environ["KUBIRUN_STORE"]
    if os.geteuid() != 0:  # rootless: the user's own data directory
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return os.path.join(data, "kubirun")
    return DEFAULT_STORE


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


class Lock:
    """flock(2) on ``path``, shared or exclusive, as a context manager."""

    def __init__(self, path: str, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self.blocking = True  # False: BlockingIOError while another holds it
        self.fd = -1

    def __enter__(self) -> Lock:
        import fcntl

        if self.fd >= 0:
            return self  # taken already (remove_import_leftovers)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
                        | (0 if self.blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock
        self.fd = -1


class Store:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root or store_root())
        self.layers = os.path.join(self.root, "layers")
        self.images = os.path.join(self.root, "images")
        self.sources = os.path.join(self.root, "sources")
        self.tmp = os.path.join(self.root, "tmp")
        self.locks = os.path.join(self.root, "locks")
        self.containers = os.path.join(self.root, "containers")

    def ensure(self) -> None:
        for d in (self.layers, self.images, self.sources, self.tmp, self.locks, self.containers):
            os.makedirs(d, 0o700, exist_ok=True)

    def lock(self, name: str = "store", shared: bool = False) -> Lock:
        return Lock(os.path.join(self.locks, name), shared)

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers, _hex(diff_id))

    def no_overlay(self) -> None:
        """The store's file system refused overlayfs's whiteout markers:
        from now on, containers get copies."""
        with open(os.path.join(self.root, "no-overlay"), "w") as f:
            f.write("whiteouts are .wh. files here: overlayfs cannot read these layers\n")

    def image_file(self, image_id: str) -> str:
        return os.path.join(self.images, _hex(image_id) + ".json")

    # --- the warm path ------------------------------------------------------

    @staticmethod
    def source_key(path: str, platform: str | None, ref: str | None) -> tuple[str, os.stat_result]:
        """The identity of an image file: device, inode, and the platform
        and name asked for.  For a layout directory, its index file's."""
        st = os.stat(path)
        if os.path.isdir(path):
            for name in ("index.json", "manifest.json"):
                try:
                    st = os.stat(os.path.join(path, name))
                    break
                except FileNotFoundError:
                    continue
        key = f"{st.st_dev}-{st.st_ino}"
        if platform or ref:
            key += "-" + "".join(c if c.isalnum() else "_" for c in f"{platform or ''}-{ref or ''}")
        return key, st

    def lookup(self, path: str, platform: str | None = None, ref: str | None = None) -> dict | None:
        """The stored image of ``path``, if it was imported unchanged
        (same inode, size, mtime and ctime) and its layers are all here."""
        try:
            key, st = self.source_key(path, platform, ref)
            record = jsonio.load_file(os.path.join(self.sources, key + ".json"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("stat") != [st.st_size, st.st_mtime_ns,
                                                                    st.st_ctime_ns]:
            return None
        return self.load_image(record.get("image", ""))

    def load_image(self, image_id: str) -> dict | None:
        try:
            image = jsonio.load_file(self.image_file(image_id))
        except (OSError, ValueError):
            return None
        for layer in image.get("layers", []):
            if not os.path.isdir(self.layer_path(layer["diff_id"])):
                return None
        return image

    def remember_source(self, path: str, platform: str | None, ref: str | None,
                        image_id: str) -> None:
        key, st = self.source_key(path, platform, ref)
        jsonio.write_atomically(os.path.join(self.sources, key + ".json"), {
            "path": os.path.abspath(path), "stat": [st.st_size, st.st_mtime_ns, st.st_ctime_ns],
            "image": image_id})

    # --- a container's root ---------------------------------------------------

    def make_root(self, image: dict, container_dir: str, copy: bool = False) -> tuple[str, bool]:
        """The container's root: an overlay of the image's layers (True),
        or a copy of them (False) when ``copy`` or overlayfs is not
        available.  Records the image as in use by the container."""
        from kubirun.image import overlay

        layers = [self.layer_path(layer["diff_id"]) for layer in image["layers"]]
        with open(os.path.join(container_dir, "image"), "w") as f:
            f.write(image["id"] + "\n")
        if not copy and os.environ.get("KUBIRUN_OVERLAY", "1") != "0" and \
                not os.path.exists(os.path.join(self.root, "no-overlay")):
            empty = os.path.join(self.layers, "empty")
            if not layers:
                os.makedirs(empty, 0o755, exist_ok=True)
            try:
                return overlay.mount(layers, container_dir, empty), True
            except overlay.OverlayUnavailable:
                for d in ("rootfs", "work", "upper"):
                    try:
                        os.rmdir(os.path.join(container_dir, d))
                    except OSError:
                        pass
        rootfs = os.path.join(container_dir, "rootfs")
        os.mkdir(rootfs, 0o755)
        flatten(layers, rootfs)
        return rootfs, False

    # --- importing --------------------------------------------------------------

    def import_image(self, path: str, platform: str | None = None, ref: str | None = None,
                     budget=None, show_progress: bool = True) -> dict:
        """The image of ``path`` in the store (imported now if needed)."""
        self.ensure()
        with self.lock(shared=True):
            found = self.lookup(path, platform, ref)
            if found is not None:
                return found
            # One import per file at a time: runs started together from the
            # same cold file (a plain root filesystem tar, whose layer is
            # only known once unpacked) wait for the first, then find it.
            try:
                key, _ = self.source_key(path, platform, ref)
            except OSError:
                key = None
            source_lock = self.lock(f"source-{key}") if key else _no_lock()
            with source_lock:
                try:
                    found = self.lookup(path, platform, ref)
                    if found is not None:
                        return found
                    from kubirun.image.importer import import_into

                    image = import_into(self, path, platform, ref, budget, show_progress)
                    self.remember_source(path, platform, ref, image["id"])
                    return image
                finally:
                    # Gone once done: whoever still waits on this file finds
                    # the image by lookup; a killed import's is a leftover
                    # that reclaim removes (a lock of no layer).
                    if key:
                        try:
                            os.unlink(source_lock.path)
                        except FileNotFoundError:
                            pass

    def save_image(self, image: dict) -> None:
        """Write an image record; an image imported again from another file
        keeps its names and sources."""
        try:
            old = jsonio.load_file(self.image_file(image["id"]))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            image["names"] = list(dict.fromkeys(old.get("names", []) + image["names"]))
            image["sources"] = list(dict.fromkeys(old.get("sources", []) + image["sources"]))
            image["imported"] = old.get("imported", image["imported"])
        jsonio.write_atomically(self.image_file(image["id"]), image)

    # --- listing, removing --------------------------------------------------------

    def all_images(self) -> list[dict]:
        found = []
        try:
            names = sorted(os.listdir(self.images))
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(".json"):
                try:
                    found.append(jsonio.load_file(os.path.join(self.images, name)))
                except (OSError, ValueError):
                    continue
        return found

    def find(self, what: str) -> dict:
        """An image by id (or a unique prefix of it), name or source path."""
        images = self.all_images()
        bare = what.removeprefix("sha256:")
        matches = [i for i in images if _hex(i["id"]).startswith(bare) and len(bare) >= 4]
        if not matches:
            absolute = os.path.abspath(what)
            matches = [i for i in images if what in i.get("names", [])
                       or absolute in i.get("sources", [])]
        if not matches:  # the NAME `images ls` shows for an image without one: its file's
            matches = [i for i in images if not i.get("names")
                       and what in (os.path.basename(s) for s in i.get("sources", []))]
        if not matches:
            raise ImageError(f"no image {what!r} in the store {self.root}")
        if len(matches) > 1:
            raise ImageError(f"{what!r} names {len(matches)} images: give more of the id")
        return matches[0]

    def images_in_use(self) -> dict[str, list[str]]:
        """image id -> the containers using it."""
        used: dict[str, list[str]] = {}
        try:
            names = os.listdir(self.containers)
        except FileNotFoundError:
            return used
        for name in names:
            try:
                with open(os.path.join(self.containers, name, "image")) as f:
                    used.setdefault(f.read().strip(), []).append(name)
            except OSError:
                continue
        return used

    def remove(self, what: str, force: bool = False) -> dict:
        self.ensure()
        with self.lock():
            image = self.find(what)
            users = self.images_in_use().get(image["id"], [])
            if users and not force:
                raise ImageError(f"image {_hex(image['id'])[:12]} is used by container"
                                 f"{'s' if len(users) > 1 else ''} {', '.join(sorted(users))}")
            os.unlink(self.image_file(image["id"]))
            self._drop_sources()
            self._drop_layers()
        return image

    def prune(self, all_images: bool = False) -> dict:
        """Remove layers no image uses, forgotten sources, leftovers of
        interrupted unpacks; with ``all_images``, images no container uses."""
        self.ensure()
        removed = {"images": [], "layers": 0, "bytes": 0}
        with self.lock():
            if all_images:
                used = self.images_in_use()
                for image in self.all_images():
                    if image["id"] not in used:
                        os.unlink(self.image_file(image["id"]))
                        removed["images"].append(image["id"])
            self._drop_sources(check_files=True)
            removed["layers"], removed["bytes"] = self._drop_layers()
            for name in os.listdir(self.tmp):
                _remove_tree(os.path.join(self.tmp, name))
        return removed

    def remove_import_leftovers(self, wait: bool = True) -> list[str]:
        """What killed imports left: ``tmp/`` (layers being unpacked,
        archives being decompressed) and the lock files of layers never
        made.  Under the exclusive lock, so no import is running; without
        ``wait``, nothing is done while one is."""
        removed: list[str] = []
        lock = self.lock()
        if not wait:
            if not self._import_leftovers():
                return removed  # the everyday case: two directory reads
            lock.blocking = False
        try:
            lock.__enter__()
        except BlockingIOError:
            return removed
        with lock:
            for path in self._import_leftovers():
                _remove_tree(path)
                removed.append(path)
        return removed

    def _import_leftovers(self) -> list[str]:
        try:
            found = [os.path.join(self.tmp, name) for name in sorted(os.listdir(self.tmp))]
            layers = set(os.listdir(self.layers))
            found += [os.path.join(self.locks, name) for name in sorted(os.listdir(self.locks))
                      if name != "store" and name not in layers]
        except FileNotFoundError:
            return []
        return found

    def _drop_sources(self, check_files: bool = False) -> None:
        known = {i["id"] for i in self.all_images()}
        for name in os.listdir(self.sources):
            path = os.path.join(self.sources, name)
            try:
                record = jsonio.load_file(path)
                keep = record.get("image") in known
                if keep and check_files:  # the file is gone, or changed
                    _, st = self.source_key(record["path"], None, None)
                    keep = record["stat"] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            except (OSError, ValueError, KeyError, AttributeError):
                keep = False
            if not keep:
                os.unlink(path)

    def _drop_layers(self) -> tuple[int, int]:
        wanted = {_hex(layer["diff_id"]) for image in self.all_images()
                  for layer in image.get("layers", [])}
        count = size = 0
        for name in os.listdir(self.layers):
            if name in wanted or name == "empty":
                continue
            size += _tree_size(os.path.join(self.layers, name))
            _remove_tree(os.path.join(self.layers, name))
            try:
                os.unlink(os.path.join(self.locks, name))
            except FileNotFoundError:
                pass
            count += 1
        return count, size


class _no_lock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _tree_size(path: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total


def _remove_tree(path: str) -> None:
    import shutil  # never follows symlinks out of the tree

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def flatten(layers: list[str], dest: str) -> None:
    """Apply the store's layers (bottom first) onto ``dest``, whiteouts and
    all: a root of its own, no mount."""
    from kubirun.image.extract import RootWriter, copy_tree

    writer = RootWriter(dest, whiteouts="apply")
    try:
        for layer in layers:
            copy_tree(layer, writer, overlay_whiteouts=True)
        writer.finish()
    finally:
        writer.close()
