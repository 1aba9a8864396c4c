"""``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` for a
container: written next to its root (``$KUBIRUN_STORE/containers/ID/network/``)
and bind-mounted over the image's, which stay untouched (an image without
them gets empty files as mount points, as under docker or podman).

    bridge   hosts: localhost, and the container's address with its name;
             resolv.conf: the host's, less loopback name servers (they
             would be the container's own loopback; behind systemd-resolved,
             its upstream servers)
    host     hosts and resolv.conf: copies of the host's
"""
from __future__ import annotations

import os

HOSTS_LOCALHOST = ("127.0.0.1\tlocalhost\n"
                   "::1\tlocalhost ip6-localhost ip6-loopback\n")
FILES = ("hosts", "hostname", "resolv.conf")
SYSTEMD_RESOLVED = "/run/systemd/resolve/resolv.conf"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def resolv_conf(text: str, keep_loopback: bool) -> str:
    lines = []
    for line in text.splitlines():
        words = line.split()
        if (not keep_loopback and len(words) >= 2 and words[0] == "nameserver"
                and (words[1].startswith("127.") or words[1] == "::1")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def write(directory: str, hostname: str, address: str | None) -> list[dict]:
    """Write the files (``address`` None: host mode); their mounts[] entries."""
    if address is None:
        contents = {"hosts": _read("/etc/hosts") or HOSTS_LOCALHOST,
                    "resolv.conf": resolv_conf(_read("/etc/resolv.conf"), keep_loopback=True)}
    else:
        host = _read("/etc/resolv.conf")
        if "nameserver" in host and "nameserver" not in resolv_conf(host, keep_loopback=False):
            # Only a local resolver (systemd-resolved's 127.0.0.53): its upstream
            # servers, as docker does.
            host = _read(SYSTEMD_RESOLVED) or host
        contents = {"hosts": f"{HOSTS_LOCALHOST}{address}\t{hostname}\n",
                    "resolv.conf": resolv_conf(host, keep_loopback=False)}
    contents["hostname"] = f"{hostname}\n"
    os.makedirs(directory, 0o755, exist_ok=True)
    mounts = []
    for name in FILES:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(contents[name])
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": path,
                       "options": ["bind"]})
    return mounts


def remove(directory: str) -> None:
    for name in FILES:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass
