"""An image's config (the OCI image spec's ``config`` object) applied to a
container, as docker and podman apply it:

    Entrypoint + Cmd   the program; arguments on the command line replace
                       Cmd, ``--entrypoint`` replaces Entrypoint (and then
                       Cmd too, as docker does)
    Env                the environment, under ``-e`` items
    WorkingDir         the working directory, unless ``-w``
    User               the user (names resolved in the image's
                       /etc/passwd and /etc/group), unless ``-u``
    Labels             annotations
    StopSignal         annotation ``org.opencontainers.image.stopSignal``
    ExposedPorts       annotation ``org.opencontainers.image.exposedPorts``
                       (a comma-separated list, e.g. ``80/tcp,53/udp``),
                       kept for networking
"""
from __future__ import annotations

STOP_SIGNAL = "org.opencontainers.image.stopSignal"
EXPOSED_PORTS = "org.opencontainers.image.exposedPorts"


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def process_args(image_config: dict, command: list[str], entrypoint: list[str] | None) -> list[str]:
    """argv from the image's Entrypoint/Cmd and the command line."""
    if entrypoint is not None:
        return list(entrypoint) + list(command)
    return strings(image_config.get("Entrypoint")) + (list(command) or strings(image_config.get("Cmd")))


def apply(process, image_config: dict, command: list[str], entrypoint: list[str] | None,
          workdir_given: bool) -> None:
    """Fill ``process`` (a ``ProcessSpec``) from the image where the
    command line left it unsaid."""
    args = process_args(image_config, command, entrypoint)
    if args:
        process.args = args
    env = strings(image_config.get("Env"))
    if env:
        process.env = env + list(process.env)
    workdir = image_config.get("WorkingDir")
    if not workdir_given and isinstance(workdir, str) and workdir:
        process.cwd = workdir
    user = image_config.get("User")
    if process.user is None and isinstance(user, str) and user:
        process.user = user


def annotations(image_config: dict) -> dict[str, str]:
    found = {}
    labels = image_config.get("Labels")
    if isinstance(labels, dict):
        found.update({k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)})
    if isinstance(image_config.get("StopSignal"), str) and image_config["StopSignal"]:
        found[STOP_SIGNAL] = image_config["StopSignal"]
    ports = exposed_ports(image_config)
    if ports:
        found[EXPOSED_PORTS] = ",".join(ports)
    return found


def exposed_ports(image_config: dict) -> list[str]:
    """``["80/tcp", "53/udp"]`` from ``ExposedPorts``."""
    ports = image_config.get("ExposedPorts")
    if not isinstance(ports, dict):
        return []
    return sorted((p if "/" in p else p + "/tcp") for p in ports if isinstance(p, str))
