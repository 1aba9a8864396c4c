"""The container's process: its argv, environment, working directory and
user, and how the program is found in the container's ``PATH``.

Everything here that reads files (``/etc/passwd``, ``PATH`` lookup) runs in
the container's init *after* ``pivot_root``, so it reads the container's
files, never the host's.
"""
from __future__ import annotations

import os
import stat

from kubirun.errors import ExecError, KubirunError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ARGS = ("/bin/sh",)


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


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(user: str | None, root: str = "/") -> Identity:
    """Resolve ``UID[:GID]`` or ``NAME[:GROUP]`` against the image's
    ``/etc/passwd`` and ``/etc/group`` (read under ``root``)."""
    passwd = [e for e in _read_db(os.path.join(root, "etc/passwd")) if len(e) >= 7]
    groups = [e for e in _read_db(os.path.join(root, "etc/group")) if len(e) >= 3]
    spec = user or "0"
    user_part, _, group_part = spec.partition(":")

    entry = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in passwd if e[2] == user_part), None)
    else:
        entry = next((e for e in passwd if e[0] == user_part), None)
        if entry is None:
            raise KubirunError(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = int(entry[2])

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = next((g for g in groups if g[0] == group_part), None)
            if match is None:
                raise KubirunError(f"group {group_part!r} not found in the image's /etc/group")
            gid = int(match[2])
    else:
        gid = int(entry[3]) if entry else 0

    extra: tuple[int, ...] = ()
    if entry is not None and not group_part:
        # Supplementary groups: those listing the user as a member.
        members = (g for g in groups if len(g) > 3 and g[2].isdigit())
        extra = tuple(dict.fromkeys(
            int(g[2]) for g in members if entry[0] in g[3].split(",") and int(g[2]) != gid))
    home = entry[5] if entry and entry[5] else ("/root" if uid == 0 else "/")
    return Identity(uid, gid, extra, home)


def switch_user(identity: Identity) -> None:
    """Drop to the container user: groups first, then gid, then uid."""
    os.setgroups(list(identity.groups))
    os.setgid(identity.gid)
    os.setuid(identity.uid)


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
        return name
    for directory in search_path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if _is_executable_file(candidate):
            return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH', 127)


def exec_program(path: str, args: list[str], env: dict[str, str]) -> None:
    """``execve``, with failures turned into the exit codes shells use."""
    try:
        os.execve(path, args, env)
    except PermissionError as err:
        raise ExecError(f'exec: "{args[0]}": permission denied', 126) from err
    except FileNotFoundError as err:
        raise ExecError(f'exec: "{args[0]}": no such file or directory', 127) from err
    except OSError as err:
        raise ExecError(f'exec: "{args[0]}": {err.strerror}', 126) from err
