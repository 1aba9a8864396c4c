"""The container's process: its argv, environment, working directory and
user, and how the program is found in the container's ``PATH``.

Everything here that reads files (``/etc/passwd``, ``PATH`` lookup) runs in
the container's init *after* ``pivot_root``, so it reads the container's
files, never the host's.
"""
from __future__ import annotations

import errno
import os
import stat

from kubirun import _native
from kubirun.base import explain
from kubirun.base.errors import ExecError, KubirunError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ARGS = ("/bin/sh",)
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 is not an id: it tells the kernel "unchanged"
DB_MAX_BYTES = 16 << 20  # an /etc/passwd or /etc/group larger than this is refused


class ProcessSpec:
    """What to run inside the container."""

    def __init__(self, args: list[str] | None = None, env: list[str] | None = None,
                 cwd: str = "/", user: str | None = None, terminal: bool = False,
                 interactive: bool = False) -> None:
        self.args = list(args or DEFAULT_ARGS)
        self.env = list(env or ())  # "KEY=VALUE" items, last wins
        self.cwd = cwd
        self.user = user  # "UID[:GID]" or "NAME[:GROUP]"
        self.terminal = terminal
        self.interactive = interactive
        # OCI fields (config.json's process); image runs leave the defaults.
        self.oci = False  # environment exactly as given, user as numbers
        self.uid = 0
        self.gid = 0
        self.additional_gids: tuple[int, ...] = ()
        self.umask: int | None = None
        self.no_new_privileges = False
        self.capabilities: dict[str, list[str]] | None = None  # None: leave them as they are
        self.rlimits: list[tuple[str, int, int]] = []
        self.oom_score_adj: int | None = None
        self.console_size: tuple[int, int] | None = None
        # `run --init`: PID 1 is the exec helper as an init (forwards
        # signals, reaps), the program its child.  "pause": the exec
        # helper as PID 1 with no program (a pod sandbox, kubirun.api).
        self.init: bool | str = False
        # config.json has no process: the container is created, never started.
        self.absent = False


def absent_process() -> ProcessSpec:
    """The stand-in for a config.json without ``process`` (the runtime-spec
    requires it only at start): the init sets up the container as for
    any other and waits, and ``start`` refuses."""
    spec = ProcessSpec(args=["(no process)"])
    spec.oci = True
    spec.absent = True
    return spec


# What `exec` needs of an image run's process, kept in its state.json: the
# process an image run got is the command line's, not a config's.
IMAGE_PROCESS_FIELDS = ("env", "cwd", "user", "umask", "no_new_privileges", "capabilities",
                        "oom_score_adj")


def image_process_state(spec: ProcessSpec, hostname: str) -> dict:
    """An image run's process as state.json records it for ``exec``."""
    state = {name: getattr(spec, name) for name in IMAGE_PROCESS_FIELDS}
    state["rlimits"] = [list(limit) for limit in spec.rlimits]
    state["hostname"] = hostname
    return state


def exec_process_from_image_state(state: dict, args: list[str]) -> ProcessSpec:
    """``exec ARGS`` in an image run's container: its user, environment,
    working directory, capabilities, no_new_privs and limits, as ``docker
    exec`` starts from the container's process."""
    spec = ProcessSpec(args=args, env=[f"HOSTNAME={state.get('hostname', '')}", *state["env"]],
                       cwd=state["cwd"], user=state["user"])
    for name in IMAGE_PROCESS_FIELDS[3:]:
        setattr(spec, name, state[name])
    spec.rlimits = [tuple(limit) for limit in state["rlimits"]]
    return spec


class Identity:
    """A resolved user: numeric ids, supplementary groups, home directory."""

    def __init__(self, uid: int, gid: int, groups: tuple[int, ...], home: str) -> None:
        self.uid, self.gid, self.groups, self.home = uid, gid, groups, home

    def __repr__(self) -> str:
        return f"Identity(uid={self.uid}, gid={self.gid}, groups={self.groups}, home={self.home!r})"


def parse_env_items(items: list[str], caller_env: dict[str, str]) -> list[str]:
    """``-e KEY=VALUE`` as given; ``-e KEY`` takes KEY from the caller's
    environment (skipped when unset), as docker and podman do."""
    result = []
    for item in items:
        if "=" in item:
            key = item.split("=", 1)[0]
            if not key:
                raise KubirunError(f"invalid environment variable {item!r}: empty name")
            result.append(item)
        elif item in caller_env:
            result.append(f"{item}={caller_env[item]}")
    return result


def build_env(spec_env: list[str], hostname: str, home: str, terminal: bool) -> dict[str, str]:
    """The container's environment: defaults first, then the user's items."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": home}
    if terminal:
        env["TERM"] = "xterm"
    for item in spec_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def oci_env(spec_env: list[str], home: str) -> dict[str, str]:
    """An OCI process's environment: exactly its ``env``, plus ``HOME`` from
    the image's passwd when unset (as runc does)."""
    env = {}
    for item in spec_env:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("HOME", home)
    return env


def oci_identity(spec: "ProcessSpec") -> Identity:
    """The numeric user of an OCI process; the home directory from the
    image's ``/etc/passwd`` when the uid is listed there."""
    home = "/"
    for entry in _read_db("/", "etc/passwd"):
        if len(entry) >= 7 and entry[2] == str(spec.uid):
            home = entry[5] or "/"
            break
    return Identity(spec.uid, spec.gid, spec.additional_gids, home)


def is_id(text: str) -> bool:
    """Is ``text`` a uid or gid written in decimal (ASCII digits only)?"""
    return text.isascii() and text.isdigit()


def parse_id(text: str, what: str) -> int:
    """A uid or gid in decimal; out of range is an error naming ``what``."""
    value = int(text)
    if value > MAX_ID:
        raise KubirunError(f"{what}: {text} is out of range (0 to {MAX_ID})")
    return value


def check_user_option(user: str, what: str) -> None:
    """``UID[:GID]`` or ``NAME[:GROUP]`` as given (``-u``): numbers in
    range, checked before any container is made (names are resolved in
    the image)."""
    for part in user.split(":", 1):
        if is_id(part):
            parse_id(part, f"{what} {user}")


def _read_db(root: str, name: str) -> list[list[str]]:
    """The lines of ``root/name`` (/etc/passwd or /etc/group) as fields;
    none if it is missing.  It is the image's: resolved inside ``root``
    (a symlink in it cannot lead out, nor through /proc's magic links),
    and only a regular file is read (a FIFO there would block for ever,
    a device could be endless)."""
    from kubirun import _native

    what = f"the image's /{name}"
    resolve = _native.RESOLVE_IN_ROOT | _native.RESOLVE_NO_MAGICLINKS
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        try:
            # O_PATH first: opening a FIFO or a device for reading could
            # block or do something; looking at one cannot.
            probe = _native.openat2(root_fd, name, os.O_PATH | os.O_CLOEXEC, 0, resolve)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise KubirunError(f"{what}: cannot open it: {err.strerror}") from None
        try:
            _check_regular(probe, what)
            fd = _native.openat2(root_fd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
                                 | os.O_CLOEXEC, 0, resolve)
        except OSError as err:
            raise KubirunError(f"{what}: cannot open it: {err.strerror}") from None
        finally:
            os.close(probe)
    finally:
        os.close(root_fd)
    try:
        _check_regular(fd, what)  # (the same file, unless swapped meanwhile)
        data = os.read(fd, DB_MAX_BYTES + 1)
        while len(data) <= DB_MAX_BYTES:
            more = os.read(fd, DB_MAX_BYTES + 1 - len(data))
            if not more:
                break
            data += more
    except OSError as err:
        raise KubirunError(f"{what}: cannot read it: {err.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > DB_MAX_BYTES:
        raise KubirunError(f"{what} is larger than {DB_MAX_BYTES >> 20} MiB: not read")
    lines = data.decode("utf-8", "replace").split("\n")
    return [line.split(":") for line in lines if line.strip() and not line.startswith("#")]


def _check_regular(fd: int, what: str) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory", stat.S_IFCHR: "a device",
                stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a file")
        raise KubirunError(f"{what} is not a regular file ({kind}): not read")


def _db_id(entry: list[str], index: int, what: str) -> int:
    """Field ``index`` of a passwd or group line: a uid or gid."""
    text = entry[index]
    if not is_id(text):
        raise KubirunError(f"{what}: {entry[0]!r} has an invalid id {text!r}")
    return parse_id(text, f"{what}: {entry[0]!r}")


def resolve_user(user: str | None, root: str = "/") -> Identity:
    """Resolve ``UID[:GID]`` or ``NAME[:GROUP]`` against the image's
    ``/etc/passwd`` and ``/etc/group`` (read under ``root``)."""
    passwd = [e for e in _read_db(root, "etc/passwd") if len(e) >= 7]
    groups = [e for e in _read_db(root, "etc/group") if len(e) >= 3]
    spec = user or "0"
    user_part, _, group_part = spec.partition(":")

    entry = None
    if is_id(user_part):
        uid = parse_id(user_part, f"user {spec!r}")
        entry = next((e for e in passwd if e[2] == user_part), None)
    else:
        entry = next((e for e in passwd if e[0] == user_part), None)
        if entry is None:
            raise KubirunError(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = _db_id(entry, 2, "the image's /etc/passwd")

    if group_part:
        if is_id(group_part):
            gid = parse_id(group_part, f"user {spec!r}: group")
        else:
            match = next((g for g in groups if g[0] == group_part), None)
            if match is None:
                raise KubirunError(f"group {group_part!r} not found in the image's /etc/group")
            gid = _db_id(match, 2, "the image's /etc/group")
    else:
        gid = _db_id(entry, 3, "the image's /etc/passwd") if entry else 0

    extra: tuple[int, ...] = ()
    if entry is not None and not group_part:
        # Supplementary groups: those listing the user as a member (a line
        # with a malformed gid names nobody's group: skipped).
        members = (g for g in groups if len(g) > 3 and is_id(g[2]) and int(g[2]) <= MAX_ID)
        extra = tuple(dict.fromkeys(
            int(g[2]) for g in members if entry[0] in g[3].split(",") and int(g[2]) != gid))
    home = entry[5] if entry and entry[5] else ("/root" if uid == 0 else "/")
    return Identity(uid, gid, extra, home)


def switch_user(identity: Identity, kernel) -> None:
    """Drop to the container user: groups first, then gid, then uid.  A
    failure names the call (a seccomp profile may forbid one of them)."""
    for name, call, arg in (("setgroups", kernel.setgroups, list(identity.groups)),
                            ("setgid", kernel.setgid, identity.gid),
                            ("setuid", kernel.setuid, identity.uid)):
        explain.say("{}({})", "become the container's user", name, arg)
        try:
            call(arg)
        except PermissionError as err:
            if name == "setgroups" and not arg:
                continue  # rootless: setgroups is denied there, and no groups are asked for
            raise OSError(err.errno, f"{name}({arg}): {err.strerror}") from None
        except OSError as err:
            raise OSError(err.errno, f"{name}({arg}): {err.strerror}") from None


def _is_executable_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


def find_executable(name: str, search_path: str) -> str:
    """``execvp``'s lookup, with the error messages engines understand
    (podman maps "executable file not found" to exit 127)."""
    if not name:
        raise ExecError('exec: "": executable file not found in $PATH', 127)
    if "/" in name:
        # As Go's exec.LookPath (runc): a path must name an executable file.
        try:
            st = os.stat(name)
        except FileNotFoundError:
            raise ExecError(f'exec: "{name}": no such file or directory', 127,
                            errno=errno.ENOENT, syscall="stat", path=name) from None
        except OSError as err:
            raise ExecError(f'exec: "{name}": {err.strerror.lower()}', 126,
                            errno=err.errno, syscall="stat", path=name) from None
        if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
            raise ExecError(f'exec: "{name}": permission denied', 126,
                            errno=errno.EACCES, syscall="execve", path=name)
        return name
    for directory in search_path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if _is_executable_file(candidate):
            return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH', 127,
                    errno=errno.ENOENT, syscall="execve", path=name)


def exec_program(kernel, path: str, args: list[str], env: dict[str, str], helper: int,
                 report_fds: tuple[int, ...] = (), say_on_stderr: bool = False,
                 execveat_allowed: bool = True, as_init: "bool | str" = False) -> None:
    """Become the program, through the exec helper (``_native``: the
    CVE-2019-5736 defence): its ``execve`` failure is reported by the
    helper on ``report_fds`` with the exit codes shells use.  ``as_init``:
    become the helper as an init, the program its child (``run --init``)."""
    explain.say("execveat(memfd kubirun-exec, AT_EMPTY_PATH) -> execve({!r}, {!r})", "become"
                " the program: the last step, nothing of kubirun remains", path, args)
    try:
        kernel.exec_through_helper(helper, path, args, env, report_fds, say_on_stderr,
                                   execveat_allowed, as_init)
    except OSError as err:
        raise ExecError(f"cannot run kubirun's exec helper: {err.strerror}", 126,
                        errno=err.errno, syscall="execveat") from err


def preload(spec: ProcessSpec) -> None:
    """Import now what ``become`` will need: after ``pivot_root`` (or
    ``setns`` into the container's mount namespace) Python's own files are
    out of reach, and a lazy import there fails."""
    if spec.rlimits:
        import kubirun.rlimits  # noqa: F401
    if spec.capabilities is not None:
        import kubirun.capabilities  # noqa: F401
    if spec.oom_score_adj is not None:
        import kubirun.ns.procfs  # noqa: F401


def prepare(spec: ProcessSpec, hostname: str) -> tuple[Identity, str, dict[str, str]]:
    """In the new root, as root: who the process will be, its environment,
    and the program's path (found now, so a missing program fails the
    container's creation with the message engines map to 127)."""
    if spec.oci:
        identity = oci_identity(spec)
        env = oci_env(spec.env, identity.home)
    else:
        identity = resolve_user(spec.user)
        env = build_env(spec.env, hostname, identity.home, spec.terminal)
    if not os.path.isdir(spec.cwd):
        # Create a missing working directory, as runc, docker and podman do.
        try:
            os.makedirs(spec.cwd, 0o755, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise KubirunError(f"working directory {spec.cwd!r}: not a directory in the"
                               " container") from None
        except OSError as err:  # e.g. /proc/self/fd/N of a pipe: ENOENT
            raise KubirunError(f"working directory {spec.cwd!r}: cannot make it in the"
                               f" container: {err.strerror}") from None
    if spec.init == "pause":
        return identity, spec.args[0], env  # the exec helper runs nothing: no program to find
    program = find_executable(spec.args[0], env.get("PATH", DEFAULT_PATH))
    return identity, program, env


def set_oom_score(spec: ProcessSpec) -> None:
    """``process.oomScoreAdj``, once (lowering it needs privileges)."""
    if spec.oom_score_adj is None:
        return
    from kubirun.ns.procfs import ProcFS

    with ProcFS("/proc") as proc:
        proc.write(f"{os.getpid()}/oom_score_adj", str(spec.oom_score_adj))
    spec.oom_score_adj = None


def become(spec: ProcessSpec, identity: Identity, kernel) -> None:
    """Turn this (root) process into the container's process: limits and
    OOM score first (they may need privileges), then capabilities around
    the user switch, no_new_privs, umask and working directory last."""
    if spec.rlimits:
        from kubirun import rlimits

        rlimits.apply(spec.rlimits, kernel)
    set_oom_score(spec)
    # As runc: the working directory is entered while still root (a
    # directory the runtime may enter but the user may not still works),
    # and only if that is refused, again as the user.
    entered = enter_workdir(kernel, spec.cwd, permission_error_is_fatal=False)
    caps = None
    if spec.capabilities is not None:
        from kubirun.capabilities import CapabilityPlan, last_cap

        sets = spec.capabilities
        if not spec.oci and identity.uid != 0:
            # An image run as a non-root user gets no capabilities, only the
            # bound (as docker since 23.0): setuid binaries still work within it.
            sets = {"bounding": sets.get("bounding", [])}
        caps = CapabilityPlan(sets, last_cap())
        caps.drop_bounding(kernel)
        caps.keep_across_user_switch(kernel, True)
    switch_user(identity, kernel)
    if caps is not None:
        caps.keep_across_user_switch(kernel, False)
        caps.set_thread_sets(kernel)
    if spec.no_new_privileges:
        explain.say("prctl(PR_SET_NO_NEW_PRIVS, 1)", "no setuid binary can raise privileges")
        kernel.prctl(_native.PR_SET_NO_NEW_PRIVS, 1)
    if spec.umask is not None:
        kernel.umask(spec.umask)
    if not entered:
        enter_workdir(kernel, spec.cwd)


def enter_workdir(kernel, cwd: str, permission_error_is_fatal: bool = True) -> bool:
    """``chdir`` and verify that the result is inside the new root: a cwd
    reached through a leaked host fd would be "unreachable" (CVE-2024-21626).
    False (not entered) for EACCES/EPERM unless ``permission_error_is_fatal``."""
    explain.say("chdir({!r}), then getcwd()", "its working directory, checked to be inside the"
                " root", cwd)
    try:
        kernel.chdir(cwd)
    except PermissionError as err:
        if not permission_error_is_fatal:
            return False
        raise KubirunError(f"cannot enter working directory {cwd!r}: {err.strerror}") from None
    except OSError as err:
        raise KubirunError(f"cannot enter working directory {cwd!r}: {err.strerror}") from None
    try:
        here = kernel.getcwd()
    except FileNotFoundError:
        here = ""
    except PermissionError:
        # A seccomp profile may refuse getcwd(2) (runtime-tools' does): the
        # kernel's own link says the same, "(unreachable)/..." outside the root.
        here = kernel.readlink("/proc/self/cwd")
    if not here.startswith("/"):
        try:  # the kernel's name for it, "(unreachable)/...": where it would have led
            where = f" ({kernel.readlink('/proc/self/cwd')})"
        except OSError:
            where = ""
        raise ExecError(f"working directory {cwd!r} is outside the container's root{where}", 1)
    return True
