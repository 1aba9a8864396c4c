"""A parsed command line run: the global options applied, the command's
handler called, an error made one line and an exit status (the fast path
and click both end here)."""
from __future__ import annotations

import os
import sys

from kubirun.cli.table import Command


def die_of_sigpipe() -> None:
    """Whoever read our output is gone (``kubirun features | head -1``):
    end as any Unix filter does, killed by SIGPIPE, without a word (Python
    ignores SIGPIPE, so the write failed with EPIPE instead)."""
    import _signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing buffered may fail again on the way out
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGPIPE)
    os._exit(128 + _signal.SIGPIPE)


def _stdout_is_broken() -> bool:
    """Is fd 1 a pipe whose reader has closed it (POLLERR)?"""
    import select

    poller = select.poll()
    poller.register(1, 0)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def dispatch(command: Command, params: dict, global_params: dict) -> int:
    """Apply the global options, call the command's handler; an error
    becomes one line (on stderr, and in the log) and a non-zero status."""
    from kubirun.base import log
    from kubirun.base.errors import KubirunError, describe

    log.configure(global_params.get("log"), global_params.get("log_format"),
                  bool(global_params.get("debug")))
    module, _, function = command.handler.partition(":")
    try:
        _check_globals(global_params)
        handler = getattr(__import__(module, fromlist=[function]), function)
        if global_params.get("root"):
            from kubirun import state

            state.use_root(global_params["root"])
        return handler(**params)
    except KubirunError as err:
        log.error(str(err))
        return err.exit_code
    except BrokenPipeError as err:
        if _stdout_is_broken():
            die_of_sigpipe()
        log.error(describe(err))
        return 1
    except OSError as err:  # a system call of the runtime itself failed
        log.error(describe(err))
        return 1
    except Exception as err:
        # A bug of ours: still one line (engines show the last line of
        # stderr); the traceback with --debug.
        if global_params.get("debug"):
            import traceback

            traceback.print_exc()
        log.error(f"internal error: {type(err).__name__}: {err}")
        return 1
    except KeyboardInterrupt:
        return 130


def _check_globals(global_params: dict) -> None:
    from kubirun.base.errors import KubirunError

    if global_params.get("systemd_cgroup"):
        raise KubirunError("--systemd-cgroup is not supported: kubirun manages cgroups through"
                           " cgroupfs (configure your engine with cgroupfs)")
    if global_params.get("log_format") not in (None, "text", "json"):
        raise KubirunError(f"--log-format: expected text or json, got {global_params['log_format']!r}")
    if global_params.get("rootless") not in (None, "auto", "false"):
        raise KubirunError("--rootless=true is not supported yet")

