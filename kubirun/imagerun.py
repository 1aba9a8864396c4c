"""``kubirun run IMAGE``: a container straight from an image, in the
foreground, on the same lifecycle as an OCI bundle.

    1. the container gets a directory of its own (``$KUBIRUN_STORE/containers/ID``)
    2. the image becomes a root filesystem (in place, or unpacked there)
    3. a config like ``kubirun spec``'s, with the command line's process,
       is made in memory: the container is an OCI container from here on
    4. create, start, wait (relaying the terminal, forwarding signals)
    5. delete, and the unpacked root with it unless ``--keep``
"""
from __future__ import annotations

import os
import _signal as signal  # the public module costs ~3 ms of enum set-up per start

from kubirun.errors import KubirunError
from kubirun.ids import new_id, validate_id
from kubirun.process import ProcessSpec

DEFAULT_STORE = "/var/lib/kubirun"


def store_dir() -> str:
    return os.environ.get("KUBIRUN_STORE") or DEFAULT_STORE


class RunOptions:
    """What ``kubirun run IMAGE`` was asked for."""

    def __init__(self, image: str, name: str | None = None, hostname: str | None = None,
                 process: ProcessSpec | None = None, keep: bool = False,
                 resources: dict | None = None) -> None:
        self.image = image
        self.name = name
        self.hostname = hostname
        self.process = process or ProcessSpec()
        self.keep = keep
        self.resources = resources or {}  # linux.resources, from --memory, --cpus...


class _Terminated(BaseException):
    """SIGTERM/SIGHUP while preparing: unwind so nothing is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise _Terminated(signum)


def image_config(process: ProcessSpec, hostname: str, rootfs: str, resources: dict) -> dict:
    """The config of an image run: ``kubirun spec``'s defaults (namespaces,
    mounts, masked paths); the process itself is the command line's, with
    docker's default capabilities (root inside, but no CAP_SYS_ADMIN,
    CAP_SYS_PTRACE, CAP_NET_ADMIN...)."""
    from kubirun.spec import default_config

    config = default_config()
    config["process"]["args"] = process.args
    config["root"] = {"path": rootfs}
    config["hostname"] = hostname
    config["linux"]["resources"] = resources
    return config


def run(options: RunOptions) -> int:
    """Run a container to completion and return its exit status."""
    from kubirun.container import Container, CreateOptions

    name = validate_id(options.name or new_id())
    container_dir = os.path.join(store_dir(), "containers", name)
    os.makedirs(os.path.dirname(container_dir), 0o700, exist_ok=True)
    try:
        os.mkdir(container_dir, 0o700)
    except FileExistsError:
        raise KubirunError(f"container name {name!r} is already in use ({container_dir})") from None

    previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    container = None
    try:
        from kubirun.image.source import materialize
        from kubirun.spec import parse

        rootfs = materialize(options.image, os.path.join(container_dir, "rootfs"))
        spec = parse(image_config(options.process, options.hostname or name, rootfs,
                                  options.resources), container_dir)
        if options.process.capabilities is None:
            from kubirun.capabilities import container_default_sets

            options.process.capabilities = container_default_sets()
        spec.process = options.process
        container = Container.create(name, spec, options=CreateOptions(
            foreground=True, remove_on_delete=None if options.keep else container_dir))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return container.start_and_wait(interactive=options.process.interactive)
    except _Terminated as err:
        return err.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if container is not None:
            container.delete(force=True)
        elif not options.keep:
            remove_container_dir(container_dir)


def remove_container_dir(path: str) -> None:
    try:
        os.rmdir(path)  # a root used in place leaves the directory empty
    except FileNotFoundError:
        pass
    except OSError:
        import shutil  # rmtree never follows symlinks out of the tree

        shutil.rmtree(path, ignore_errors=True)
