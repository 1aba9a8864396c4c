"""Seccomp notify: the listener of a filter with ``SCMP_ACT_NOTIFY`` rules
goes to the seccomp agent at ``linux.seccomp.listenerPath``, with the
container process state (runtime.md), in one ``SCM_RIGHTS`` message on a
new connection::

    {"ociVersion": ..., "fds": ["seccompFd"], "pid": <the process>,
     "metadata": <listenerMetadata>, "state": <the container's state>}

Only the process that loads the filter gets the listener, and kubirun's
processes load it as late as they can: the init once ``start`` has let it
go on (``kubirun.init``, steps 16-17), an ``exec``'d process right before
``execve``.  Who then sends it to the agent:

    not the process itself: by then it may run as the container's user,
    in a user namespace, after ``pivot_root``; connecting to the agent's
    socket needs the runtime's view of the host and its credentials (runc
    and crun connect from the runtime too)

    but the kubirun command waiting for it: ``exec``, or ``start`` (also
    within ``run``), not ``create``, long gone.  The process passes the fd
    to it (``SCM_RIGHTS``) and waits for its answer, so that the agent has
    the listener before the process makes a call it notifies, and a
    failure to reach the agent stops the process before its program runs
    (the command then fails, as runc's does).  ``exec`` makes a socketpair
    for that; ``start`` finds the init on a socket bound in the
    container's state directory (``SOCKET``, 0600 in a 0711 directory:
    no one but the runtime's user can connect), which ``create`` made and
    the init inherited, and connects to it once the init is released.

The process, once its filter is loaded, makes these calls before the
agent has its listener: ``sendmsg`` (refused as a notified call, see
``kubirun.seccomp.NOT_NOTIFIABLE``), then ``recvfrom`` and ``close``
(those may be notified: the agent has the listener by then).

The listener is the process's own until it is sent: close-on-exec, and
closed once sent; kubirun's copy too, so that once the agent is gone a
notified call fails (ENOSYS) instead of waiting for an answer that
cannot come.
"""
from __future__ import annotations

import os
import sys

from kubirun.base.errors import ContainerStartError, describe
from kubirun.state import SECCOMP_SOCKET as SOCKET  # in the container's state directory
FD_NAME = "seccompFd"  # the listener's name in "fds" (runtime.md)
GO, ERROR = b"G", b"E"  # the runtime's answer to the process
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less its NUL


# --- the process that loads the filter (the init, or exec's child) -----------

def accept(listening_fd: int):
    """The init's end: the connection of the ``start`` that released it
    (it connects right after opening the exec fifo).  Called before the
    filter is loaded, so that ``accept4`` need not be allowed."""
    import _socket

    listening = _socket.socket(fileno=listening_fd)
    try:
        fd, _ = listening._accept()
    except OSError as err:
        raise ContainerStartError(f"cannot receive kubirun start's connection for the seccomp"
                                  f" listener: accept: {describe(err)}") from None
    finally:
        listening.close()
    return _socket.socket(fileno=fd)


def hand_over(conn, listener: int) -> None:
    """Send the listener to the runtime on ``conn`` (a connected
    ``_socket.socket``) and wait for its answer: the agent has it, or why
    not (raised).  Both fds are closed."""
    import _socket

    try:
        try:
            conn.sendmsg([b"L"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                    listener.to_bytes(4, sys.byteorder))], _socket.MSG_NOSIGNAL)
        finally:
            os.close(listener)
        answer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    except OSError as err:
        raise ContainerStartError(f"cannot pass the seccomp listener to kubirun:"
                                  f" {describe(err)}") from None
    finally:
        conn.close()
    if answer == GO:
        return
    if answer.startswith(ERROR):
        raise AgentUnreachable(answer[1:].decode(errors="replace"))
    raise ContainerStartError("kubirun went away before the seccomp agent had the listener")


class AgentUnreachable(ContainerStartError):
    """The runtime could not give the listener to the agent: it says so
    itself (the process need not repeat it on the container's stderr)."""

    reported_by_runtime = True


# --- the runtime -------------------------------------------------------------

def listen(state_dir: str):
    """``create``: the socket ``start`` reaches the init on, bound in the
    state directory, its file readable and writable by its owner only.
    The forked init holds it (close-on-exec); the caller closes its copy."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        _with_unix_path(os.path.join(state_dir, SOCKET), sock.bind)
        sock.listen(1)
    except OSError as err:
        sock.close()
        raise ContainerStartError(f"cannot make the seccomp listener's socket in {state_dir}:"
                                  f" {describe(err)}") from None
    finally:
        os.umask(old_umask)
    return sock


def connect_to_init(state_dir: str):
    """``start``: the init's socket, or None if the init is gone (its
    error, if any, comes through the exec fifo)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _with_unix_path(os.path.join(state_dir, SOCKET), sock.connect)
    except OSError:
        sock.close()
        return None
    return sock


def relay(conn, listener_path: str, state: dict) -> None:
    """Take the listener the process sends on ``conn`` and send it, with
    ``state``, to the agent at ``listener_path``; tell the process how
    that went, and close ``conn`` (its end of file ends the answer).
    Nothing comes if the process failed before: its own report says why."""
    import socket

    try:
        try:
            _, fds, _, _ = socket.recv_fds(conn, 16, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            return
        if not fds:
            return
        answer = GO
        try:
            send_to_agent(listener_path, state, fds[0])
        except ContainerStartError as err:
            answer = ERROR + str(err).encode(errors="replace")
        finally:
            for fd in fds:
                os.close(fd)
        try:
            conn.sendall(answer, socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the process is gone: its report (or its absence) says so
    finally:
        conn.close()


def send_to_agent(listener_path: str, state: dict, listener: int) -> None:
    """One connection, one message (the state, with the listener), closed:
    runtime.md's rule for ``listenerPath``."""
    import socket

    from kubirun.base import jsonio

    data = jsonio.dumps(state).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            _with_unix_path(listener_path, sock.connect)
        except OSError as err:
            raise ContainerStartError(f"cannot reach the seccomp agent at"
                                      f" linux.seccomp.listenerPath {listener_path}:"
                                      f" {describe(err)}") from None
        try:
            sent = socket.send_fds(sock, [data], [listener], socket.MSG_NOSIGNAL)
            if sent < len(data):
                sock.sendall(data[sent:], socket.MSG_NOSIGNAL)
        except OSError as err:
            raise ContainerStartError(f"cannot send the seccomp listener to the agent at"
                                      f" {listener_path}: {describe(err)}") from None
    finally:
        sock.close()


def process_state(oci_version: str, pid: int, metadata: str, container_state: dict) -> dict:
    """The container process state (runtime.md) of the process ``pid``
    (as the runtime sees it); ``metadata`` left out when empty, as runc."""
    state = {"ociVersion": oci_version, "fds": [FD_NAME], "pid": pid}
    if metadata:
        state["metadata"] = metadata
    state["state"] = container_state
    return state


def _with_unix_path(path: str, call) -> None:
    """``call(path)`` (bind or connect); a path longer than sun_path holds
    goes through an O_PATH fd of its directory."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        call(path)
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        call(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)
