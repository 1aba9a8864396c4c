"""An OCI bundle's ``config.json`` made from an image (``kubirun bundle``):
a runtime config, hence the lifecycle's (it needs kubirun.process and
kubirun.spec), while what the image's config means stays in
kubirun.image.config."""
from __future__ import annotations


def bundle_config(image: dict | None, rootfs: str, command: list[str],
                  entrypoint: list[str] | None) -> dict:
    """A ``config.json`` for ``kubirun bundle``: ``kubirun spec``'s
    defaults, the image's process (user as numbers, from the root's own
    /etc/passwd), its annotations."""
    from kubirun.image.config import annotations, process_args, strings
    from kubirun.process import DEFAULT_ARGS, DEFAULT_PATH, resolve_user
    from kubirun.spec import default_config, lowest_oci_version

    cfg = (image or {}).get("config", {}).get("config") or {}
    config = default_config()
    process = config["process"]
    args = process_args(cfg, command, entrypoint) or list(DEFAULT_ARGS)
    process["args"] = args
    process["terminal"] = False
    env = {"PATH": DEFAULT_PATH}
    for item in strings(cfg.get("Env")):
        key, _, value = item.partition("=")
        env[key] = value
    identity = resolve_user(cfg.get("User") or None, rootfs)
    env.setdefault("HOME", identity.home)
    process["env"] = [f"{k}={v}" for k, v in env.items()]
    process["cwd"] = cfg.get("WorkingDir") or "/"
    process["user"] = {"uid": identity.uid, "gid": identity.gid}
    if identity.groups:
        process["user"]["additionalGids"] = list(identity.groups)
    config["root"] = {"path": "rootfs", "readonly": False}
    notes = annotations(cfg)
    if notes:
        config["annotations"] = notes
    config["ociVersion"] = lowest_oci_version(config)
    return config
