"""``kubirun images ls|import|rm|prune`` and ``kubirun bundle``: the
command line's handlers for the image store (see ``kubirun.cli.table``)."""
from __future__ import annotations

import os

from kubirun.base.errors import ImageError, KubirunError


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _short(image_id: str) -> str:
    return image_id.partition(":")[2][:12]


def ls(format: str, quiet: bool, store: str | None = None) -> int:
    from kubirun.image.store import Store

    db = Store(store)
    images = db.all_images()
    if quiet:
        for image in images:
            print(_short(image["id"]))
        return 0
    used = db.images_in_use()
    if format == "json":
        from kubirun.base import jsonio

        print(jsonio.dumps([{
            "id": i["id"], "names": i.get("names", []), "sources": i.get("sources", []),
            "format": i.get("format"), "platform": i.get("platform"),
            "layers": [layer["diff_id"] for layer in i.get("layers", [])],
            "size": sum(layer.get("size", 0) for layer in i.get("layers", [])),
            "imported": i.get("imported"), "containers": used.get(i["id"], []),
        } for i in images], indent=2))
        return 0
    if format != "table":
        raise KubirunError(f"--format: expected table or json, got {format!r}")
    rows = [("ID", "NAME", "LAYERS", "SIZE", "PLATFORM", "IMPORTED", "USED BY")]
    for i in images:
        name = (i.get("names") or [""])[0] or os.path.basename((i.get("sources") or [""])[0])
        rows.append((_short(i["id"]), name, str(len(i.get("layers", []))),
                     _size(sum(layer.get("size", 0) for layer in i.get("layers", []))),
                     i.get("platform") or "", i.get("imported") or "",
                     ",".join(used.get(i["id"], []))))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def import_(image: str, platform: str | None, store: str | None = None) -> int:
    from kubirun.image.source import split_ref
    from kubirun.image.store import Store

    path, ref = split_ref(image)
    if not os.path.exists(path):
        raise ImageError(f"image {image}: no such file or directory")
    record = Store(store).import_image(path, platform, ref)
    print(record["id"])
    return 0


def rm(images: tuple, force: bool, store: str | None = None) -> int:
    from kubirun.image.store import Store

    if not images:
        raise KubirunError("images rm: name at least one image")
    found = Store(store)
    for what in images:
        removed = found.remove(what, force=force)
        print(removed["id"])
    return 0


def prune(all: bool, store: str | None = None) -> int:
    from kubirun.image.store import Store

    removed = Store(store).prune(all_images=all)
    for image_id in removed["images"]:
        print(f"removed image {image_id}")
    print(f"removed {removed['layers']} layer{'s' if removed['layers'] != 1 else ''}"
          f" ({_size(removed['bytes'])})")
    return 0


def bundle(image: str, directory: str, command: tuple, platform: str | None,
           entrypoint: str | None, store: str | None = None) -> int:
    write_bundle(image, directory, list(command), platform,
                 None if entrypoint is None else [entrypoint] if entrypoint else [], store=store)
    print(os.path.abspath(directory))
    return 0


def write_bundle(image: str, directory: str, command: list[str], platform: str | None = None,
                 entrypoint: list[str] | None = None, store: str | None = None) -> None:
    """``DIR/config.json`` and ``DIR/rootfs/`` (a copy: the bundle owes
    nothing to the store) from ``image``, through the image store ``store``
    (None: the default, see ``image.store.store_root``)."""
    from kubirun.base import jsonio
    from kubirun.image.extract import RootWriter, copy_tree
    from kubirun.imagebundle import bundle_config
    from kubirun.image.source import is_layout_dir, split_ref
    from kubirun.image.store import Store, flatten

    if command and command[0] == "--":
        command = command[1:]
    path, ref = split_ref(image)
    if not os.path.exists(path):
        raise ImageError(f"image {image}: no such file or directory")
    os.makedirs(directory, 0o755, exist_ok=True)
    rootfs = os.path.join(directory, "rootfs")
    config_path = os.path.join(directory, "config.json")
    if os.path.exists(config_path) or os.path.lexists(rootfs):
        raise KubirunError(f"bundle {directory}: config.json or rootfs/ exists already")
    os.mkdir(rootfs, 0o755)
    try:
        if os.path.isdir(path) and ref is None and not is_layout_dir(path):
            record = None
            writer = RootWriter(rootfs)
            try:
                copy_tree(path, writer)
                writer.finish()
            finally:
                writer.close()
        else:
            db = Store(store)
            db.ensure()
            with db.lock(shared=True):  # no prune between the import and the copy
                record = db.import_image(path, platform, ref)
                flatten([db.layer_path(layer["diff_id"]) for layer in record["layers"]], rootfs)
        config = bundle_config(record, rootfs, command, entrypoint)
        with open(config_path, "x") as f:
            f.write(jsonio.dumps(config, indent=2) + "\n")
    except BaseException:
        import shutil

        shutil.rmtree(rootfs, ignore_errors=True)
        raise
