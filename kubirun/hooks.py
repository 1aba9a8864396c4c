"""OCI hooks: programs the runtime runs at fixed points of the lifecycle,
with the container's state JSON on their stdin.

Which hook runs where (runtime-spec config.md#posix-platform-hooks):
  prestart, createRuntime   by the runtime, after the namespaces exist
  createContainer           in the container's namespaces, before pivot_root
  startContainer            in the container, just before the program runs
  poststart                 by the runtime, after ``start``
  poststop                  by the runtime, at ``delete``
A failing hook is an error, except poststart and poststop, whose failures
are warnings (runtime.md: "the remaining hooks and lifecycle continue").

Hooks are spawned with ``posix_spawn``, not ``subprocess`` (which would
cost ~10 ms of imports on every start).
"""
from __future__ import annotations

import os
import select

from kubirun import _native
from kubirun.base.errors import KubirunError
from kubirun.spec import Hook

WARN_ONLY = ("poststart", "poststop")


class HookError(KubirunError):
    pass


def run_hooks(phase: str, hooks: list[Hook], state: dict, warn=None, exec_helper: int = -1,
              execveat_allowed: bool = True) -> None:
    """Run each hook of ``phase`` in order; raise on the first failure
    (or call ``warn(message)`` and go on, for poststart and poststop).
    ``exec_helper``: for the hooks the container's init runs, in the
    container's namespaces, which must not be exec'd from Python (see
    ``_native.exec_helper_fd``); ``execveat_allowed`` as for the program
    (a seccomp filter is in force)."""
    if not hooks:
        return
    from kubirun.base import jsonio

    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks):
        try:
            run_hook(hook, payload, exec_helper, execveat_allowed)
        except (HookError, OSError) as err:
            message = f"{phase} hook #{i} ({hook.path}) failed: {err.strerror if isinstance(err, OSError) else err}"
            if phase in WARN_ONLY:
                if warn is not None:
                    warn(message)
                continue
            raise HookError(message) from None


def run_hook(hook: Hook, payload: bytes, exec_helper: int = -1,
             execveat_allowed: bool = True) -> None:
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    try:
        if exec_helper < 0:
            pid = os.posix_spawn(hook.path, hook.args or [hook.path], _env(hook.env),
                                 file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0)],
                                 setsigdef=(13, 25))  # SIGPIPE, SIGXFSZ: Python ignores them
        else:
            pid = _spawn_through_helper(hook, stdin_r, exec_helper, execveat_allowed)
    finally:
        os.close(stdin_r)
    pidfd = _native.pidfd_open(pid)
    try:
        _write_state(stdin_w, payload)
        if not _wait_readable(pidfd, hook.timeout):
            _native.pidfd_send_signal(pidfd, 9)
            os.waitpid(pid, 0)
            raise HookError(f"timed out after {hook.timeout}s")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    code = os.waitstatus_to_exitcode(status)
    if code > 0:
        raise HookError(f"exit status {code}")
    if code < 0:
        raise HookError(f"killed by signal {-code}")


def _spawn_through_helper(hook: Hook, stdin_r: int, exec_helper: int,
                          execveat_allowed: bool) -> int:
    """posix_spawn's work by hand, ending in the exec helper's execve."""
    import _signal

    pid = _native.fork()
    if pid == 0:
        try:
            os.dup2(stdin_r, 0)
            for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)
            _native.exec_through_helper(exec_helper, hook.path, hook.args or [hook.path],
                                        _env(hook.env), execveat_allowed=execveat_allowed)
        finally:
            os._exit(127)
    return pid


def _env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _write_state(fd: int, payload: bytes) -> None:
    """Give the hook its state; a hook that exits without reading it closes
    the pipe (EPIPE), which is its right, not an error of ours."""
    try:
        while payload:
            payload = payload[os.write(fd, payload):]
    except (BrokenPipeError, OSError):
        pass
    finally:
        os.close(fd)


_POLL_MAX_MS = 0x7FFFFFFF  # poll(2) takes an int of milliseconds (24.8 days)


def _wait_readable(fd: int, timeout: int | None) -> bool:
    """Wait for ``fd`` (a pidfd: its process exited) at most ``timeout``
    seconds; a timeout longer than one poll(2) can wait is waited in parts."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if timeout is None:
        return bool(poller.poll(None))
    left = timeout * 1000
    while left > 0:
        step = min(left, _POLL_MAX_MS)
        if poller.poll(step):
            return True
        left -= step
    return False
