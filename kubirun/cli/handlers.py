"""What each command does, in terms of the library: thin on purpose.

Each handler takes the parsed command line (strings, as both parsers give
them), converts and checks it, and calls ``kubirun.container`` or its
neighbours.  Output formats follow runc's, which engines parse.
"""
from __future__ import annotations

import os

from kubirun.base.errors import KubirunError


# --- run: an image, or a bundle ----------------------------------------------

def run(image: str, command: tuple, name: str | None, hostname: str | None,
        env: list, workdir: str, user: str | None, tty: bool, interactive: bool,
        keep: bool, detach: bool, bundle: str | None, pid_file: str | None,
        console_socket: str | None, no_pivot: bool, no_new_keyring: bool,
        preserve_fds: str, memory: str | None, cpus: str | None, pids_limit: str | None,
        cpuset_cpus: str | None, io_weight: str | None, network: str | None = None,
        publish: list = (), nat: bool = False, bridge: str | None = None,
        subnet: str | None = None, platform: str | None = None,
        entrypoint: str | None = None, store: str | None = None,
        security_opt: tuple = (), init: bool = False, explain: bool = False) -> int:
    if explain:
        _explain()
    args = list(command)
    if args and args[0] == "--":  # `run IMAGE -- CMD`: the separator is ours, not CMD's
        args = args[1:]
    limits = (memory, cpus, pids_limit, cpuset_cpus, io_weight)
    if bundle is not None or _looks_like_a_container_id(image):
        if (args or name or hostname or env or user or tty or interactive
                or workdir not in (None, "/") or platform is not None or entrypoint is not None
                or store is not None or security_opt or init
                or any(v is not None for v in limits)):
            raise KubirunError("run with a bundle takes only the container id; the process"
                               " and its limits come from the bundle's config.json")
        if network is not None or publish or nat or bridge is not None or subnet is not None:
            raise KubirunError("run with a bundle takes no --network, -p, --nat, --bridge or"
                               " --subnet: its network namespace comes from its config.json")
        return _run_bundle(image, bundle or ".", detach, keep, pid_file, console_socket,
                           no_pivot, _count(preserve_fds, "--preserve-fds"), no_new_keyring)
    if detach:
        raise KubirunError("-d is for bundles (`kubirun run -b BUNDLE -d ID`)")
    from kubirun import imagerun
    from kubirun.process import DEFAULT_ARGS, ProcessSpec, parse_env_items

    if workdir and not workdir.startswith("/"):
        raise KubirunError(f"-w {workdir!r}: the working directory must be an absolute path"
                           " (as docker says)")

    if user:
        from kubirun.process import check_user_option

        check_user_option(user, "-u")
    spec = ProcessSpec(
        args=args or list(DEFAULT_ARGS),
        env=parse_env_items(list(env), dict(os.environ)),
        cwd=workdir or "/",
        user=user,
        terminal=tty,
        interactive=interactive,
    )
    spec.init = init
    seccomp = imagerun.security_options(list(security_opt), spec)
    from kubirun.imagerun import NetworkOptions
    from kubirun.resource_flags import run_limits

    return imagerun.run(imagerun.RunOptions(image=image, name=name, hostname=hostname,
                                            process=spec, keep=keep,
                                            resources=run_limits(*limits),
                                            network=NetworkOptions(network, list(publish), nat,
                                                                   bridge, subnet),
                                            platform=platform, command=args,
                                            entrypoint=None if entrypoint is None
                                            else [entrypoint] if entrypoint else [],
                                            workdir_given=workdir is not None,
                                            seccomp=seccomp,
                                            store=None if store is None
                                            else os.path.abspath(store)))


def _looks_like_a_container_id(word: str) -> bool:
    """`run ID` in a bundle directory, as with runc: ID is not a path and
    the current directory is a bundle."""
    return not os.path.exists(word) and os.path.exists("config.json")


def _run_bundle(container_id: str, bundle: str, detach: bool, keep: bool, pid_file: str | None,
                console_socket: str | None, no_pivot: bool, preserve_fds: int,
                no_new_keyring: bool) -> int:
    from kubirun.container import Container, CreateOptions
    from kubirun.spec import load_bundle

    spec = load_bundle(bundle)
    if spec.process is None:  # run starts at once: refused before anything is made, as runc
        from kubirun.spec import SpecError

        raise SpecError("config.json: process: missing (nothing to run)")
    options = CreateOptions(pid_file=pid_file, console_socket=console_socket, no_pivot=no_pivot,
                            preserve_fds=preserve_fds + _listen_fds(spec), foreground=not detach,
                            new_keyring=not no_new_keyring, ephemeral=not detach and not keep)
    container = Container.create(container_id, spec, options=options)
    if detach:
        try:
            container.start()
        except BaseException:
            # A run that failed leaves nothing, as runc's (its start can fail:
            # the seccomp filter and its agent come after create).
            if not keep:
                container.delete(force=True)
            raise
        return 0
    try:
        return container.start_and_wait(interactive=True)
    finally:
        if not keep:
            # Our own container, made by this very run: nothing of a killed
            # runtime's to look for under its name (kubirun.reclaim).
            container.delete(force=True, leftovers=False)


# --- the OCI lifecycle -------------------------------------------------------

def create(container_id: str, bundle: str | None, pid_file: str | None,
           console_socket: str | None, no_pivot: bool, no_new_keyring: bool,
           preserve_fds: str, explain: bool = False) -> int:
    if explain:
        _explain()
    from kubirun.container import Container, CreateOptions
    from kubirun.spec import load_bundle

    spec = load_bundle(bundle or ".")
    options = CreateOptions(pid_file=pid_file, console_socket=console_socket, no_pivot=no_pivot,
                            preserve_fds=_count(preserve_fds, "--preserve-fds") + _listen_fds(spec),
                            new_keyring=not no_new_keyring)
    Container.create(container_id, spec, options=options)
    return 0


def _listen_fds(spec) -> int:
    """systemd socket activation passes through (runc does the same): the
    fds stay open and the process learns about them from LISTEN_FDS."""
    count = os.environ.get("LISTEN_FDS", "")
    if not count.isdigit() or int(count) == 0 or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0  # not for us (systemd's rule: LISTEN_PID names the receiver)
    if spec.process is None:
        return 0  # nothing will run (create without a process; start refuses)
    spec.process.env = [e for e in spec.process.env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
    spec.process.env += [f"LISTEN_FDS={count}", "LISTEN_PID=1"]
    return int(count)


def exec_(container_id: str, command: tuple, process: str | None, tty: bool,
          console_socket: str | None, cwd: str | None, env: list, user: str | None,
          additional_gids: list, cap: list, no_new_privs: bool, detach: bool,
          pid_file: str | None, preserve_fds: str, ignore_paused: bool = False,
          explain: bool = False, cgroup: tuple = ()) -> int:
    if explain:
        _explain()
    from kubirun.container import exec_in_container
    from kubirun.exec_into import ExecOptions, process_from_args, process_from_file

    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if process:
        spec = process_from_file(process)
    elif args:
        from kubirun.container import Container

        spec = process_from_args(args, Container(container_id).load())
    else:
        raise KubirunError("exec needs a command, or --process FILE")
    if tty:
        spec.terminal = True
    if cwd:
        spec.cwd = cwd
    spec.env = spec.env + list(env)
    if user and not spec.oci:
        spec.user = user  # an image run's: UID[:GID] or NAME[:GROUP], resolved inside
    elif user:
        uid, _, gid = user.partition(":")
        spec.uid = _count(uid, "--user")
        spec.gid = _count(gid, "--user") if gid else spec.gid
    if additional_gids:
        spec.additional_gids = tuple(_count(g, "--additional-gids") for g in additional_gids)
    if cap:
        from kubirun.capabilities import CAPABILITIES

        caps = [c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in cap]
        for c in caps:
            if c not in CAPABILITIES:
                raise KubirunError(f"--cap: unknown capability {c!r}")
        sets = spec.capabilities or {}
        for name in ("bounding", "effective", "permitted", "ambient"):
            sets[name] = list(dict.fromkeys(sets.get(name, []) + caps))
        spec.capabilities = sets
    if no_new_privs:
        spec.no_new_privileges = True
    options = ExecOptions(detach=detach, pid_file=pid_file, console_socket=console_socket,
                          preserve_fds=_count(preserve_fds, "--preserve-fds"),
                          ignore_paused=ignore_paused, cgroup=list(cgroup))
    try:
        return exec_in_container(container_id, spec, options)
    except (KubirunError, OSError) as err:
        # The process never ran (no such program, a cwd or pid file that
        # cannot be): runc says so with status 255, and engines (containerd,
        # podman) read that status and the message, not the shell's 126/127.
        from kubirun.base import log
        from kubirun.base.errors import describe

        log.error(str(err) if isinstance(err, KubirunError) else describe(err))
        return EXEC_DID_NOT_START


EXEC_DID_NOT_START = 255


def checkpoint(container_id: str) -> int:
    raise KubirunError(f"checkpoint {container_id}: not supported: kubirun has no CRIU"
                       " integration yet")


def restore(container_id: str) -> int:
    raise KubirunError(f"restore {container_id}: not supported: kubirun has no CRIU"
                       " integration yet")


# --- looking at containers ---------------------------------------------------

def ps(container_id: str, format: str, ps_args: tuple) -> int:
    from kubirun.container import Container

    pids = Container(container_id).processes()
    if format == "json":
        from kubirun.base import jsonio

        print(jsonio.dumps(pids))
        return 0
    if format != "table":
        raise KubirunError(f"--format: expected table or json, got {format!r}")
    import subprocess

    args = list(ps_args)
    if args and args[0] == "--":
        args = args[1:]
    output = subprocess.run(["ps", *(args or ["-ef"])], capture_output=True, text=True)
    if output.returncode != 0:
        raise KubirunError(f"ps failed: {output.stderr.strip()}")
    lines = output.stdout.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise KubirunError("ps output has no PID column")
    column = header.index("PID")
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            print(line)
    return 0


def gc(store: str | None) -> int:
    from kubirun import garbage
    from kubirun.state import default_root

    for line in garbage.gc(default_root(), os.path.abspath(store) if store else None):
        print(f"removed {line}")
    return 0


def pause(container_id: str) -> int:
    from kubirun.container import Container

    Container(container_id).pause()
    return 0


def resume(container_id: str) -> int:
    from kubirun.container import Container

    Container(container_id).resume()
    return 0


def events(container_id: str, stats: bool, interval: str) -> int:
    from kubirun.cli.lifetime import long_lived
    from kubirun.events import stream
    from kubirun.state import default_root

    long_lived()
    return stream(container_id, once=stats, interval=parse_duration(interval), root=default_root())


def update(container_id: str, resources: str | None, **flags) -> int:
    from kubirun.base import log
    from kubirun.container import Container
    from kubirun.resource_flags import resources_from_flags, resources_from_file

    changes = resources_from_file(resources) if resources else {}
    for section, values in resources_from_flags(flags).items():
        changes.setdefault(section, {}).update(values)
    if not changes:
        raise KubirunError("update: nothing to change (give -r FILE or a limit flag)")
    for warning in Container(container_id).update(changes):
        log.warning(warning)
    return 0


def spec(bundle: str | None, rootless: bool) -> int:
    from kubirun.base import jsonio
    from kubirun.spec import default_config

    path = os.path.join(bundle or ".", "config.json")
    if os.path.exists(path):
        raise KubirunError(f"File {path} exists. Remove it first")
    with open(path, "x") as f:
        f.write(jsonio.dumps(default_config(rootless), indent=2) + "\n")
    return 0


def features() -> int:
    from kubirun.base import jsonio
    from kubirun.features import features as describe

    print(jsonio.dumps(describe(), indent=2))
    return 0


def demo_namespaces(image: str | None) -> int:
    from kubirun import demo

    return demo.namespaces(image)


def demo_cgroups(image: str | None) -> int:
    from kubirun import demo

    return demo.cgroups(image)


def demo_escape(image: str | None) -> int:
    from kubirun import demo, demo_escape

    return demo_escape.escape(demo._image(image))


def demo_redis(image: str | None) -> int:
    from kubirun import demo_redis

    return demo_redis.redis(image)


def demo_image(image: str | None) -> int:
    from kubirun import demo, demo_image

    return demo_image.image(demo._image(image))


def demo_ps(image: str | None) -> int:
    from kubirun import demo

    return demo.ps(image)


def _explain() -> None:
    """--explain: narration on from here, inherited by the forked init."""
    from kubirun.base import explain

    explain.enable()


# --- parsing helpers -----------------------------------------------------------

def _count(value: str, flag: str) -> int:
    if not value.isdigit():
        raise KubirunError(f"{flag}: expected a non-negative number, got {value!r}")
    return int(value)


def parse_duration(text: str) -> float:
    """5s, 500ms, 1m, 1.5s, or plain seconds."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            break
    else:
        number, scale = text, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        raise KubirunError(f"invalid duration {text!r} (e.g. 5s, 500ms)") from None
    if value <= 0:
        raise KubirunError(f"duration must be positive, got {text!r}")
    return value
