"""The last steps of every process kubirun starts in a container, its init
(kubirun.init, steps 15 to 18) and an exec'd one (kubirun.exec_into), and
the error boundary of those children.  One copy, so the two cannot drift
apart again (exec once kept the caller's blocked signals, which init reset).

In order, once the process is in the container's namespaces and root:

    signals   every disposition back to default, none blocked
    fds       all but stdio and the preserved ones close-on-exec (so the
              channel still carries an ``execve`` failure)
    seccomp   a filter that must be loaded early (neither no_new_privs nor
              CAP_SYS_ADMIN would be left for it), after the OOM score
    who runs  limits, OOM score, capabilities, user, no_new_privs,
              working directory (process.become)
    seccomp   the filter, as late as possible
    before    the caller's last step (init: startContainer hooks; exec:
              READY to the runtime)
    execve    by way of the exec helper, which reports its failure on
              ``report_fds``
"""
from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Callable

from kubirun import process
from kubirun.base import explain
from kubirun._native import CLOSE_RANGE_CLOEXEC
from kubirun.base.errors import KubirunError, describe


def _call(step, *args):
    return step(*args)


def finish_and_exec(kernel, spec: process.ProcessSpec, identity, program: str,
                    env: dict[str, str], *, preserve_fds: int, seccomp, exec_helper: int,
                    report_fds: tuple[int, ...], say_on_stderr: bool, as_init: bool = False,
                    seccomp_conn: Callable[[], object] | None = None,
                    before_exec: Callable[[bool], None] | None = None,
                    guard: Callable = _call, init_steps: bool = False) -> None:
    """Become ``program`` as the container's process, every system call
    through ``kernel`` (a ``_native.Kernel``); returns only by raising.
    ``seccomp_conn()`` gives where a filter's listener goes
    (kubirun.seccomp_notify.hand_over), ``before_exec(execveat_allowed)``
    is the caller's last step, and ``guard(step, *args)`` runs each step
    that may fail (init: also says the failure on stderr, once ``start``
    has returned).  ``init_steps``: narrate (``--explain``) as the init's
    steps 15 to 18."""
    step = explain.step if init_steps else _unnumbered
    step(15, "close_range({}, ~0, CLOSE_RANGE_CLOEXEC)", "no fd of the runtime survives"
         " execve (the CVE-2024-21626 lesson)", 3 + preserve_fds)
    # What the program gets must not depend on what the runtime's caller
    # ignored (a CI job, ``nohup``, a shell's background job ignores SIGINT
    # and SIGQUIT, and an ignored disposition survives execve) nor on
    # Python's own SIG_IGNs, nor on a blocked mask.
    kernel.reset_signals()
    for fd in range(3, 3 + preserve_fds):
        kernel.set_inheritable(fd)
    kernel.close_range(3 + preserve_fds, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC)

    step(16, "rlimits, chdir, capabilities, setgroups/setgid/setuid, no_new_privs",
         "who runs: the process's identity and privileges")
    conn = seccomp_conn() if seccomp_conn is not None else None
    early = seccomp is not None and seccomp.must_load_early(spec)
    if early:
        process.set_oom_score(spec)  # a procfs write the profile may not allow
        guard(load_seccomp, kernel, seccomp, conn)
    process.become(spec, identity, kernel)
    if seccomp is not None and not early:
        guard(load_seccomp, kernel, seccomp, conn)

    execveat_allowed = seccomp is None or seccomp.execveat_allowed
    if before_exec is not None:
        before_exec(execveat_allowed)
    step(18, "execveat(kubirun-exec memfd) -> execve({!r})", "become the program (by way of a"
         " sealed copy of the helper: CVE-2019-5736)", program)
    guard(process.exec_program, kernel, program, spec.args, env, exec_helper, report_fds,
          say_on_stderr, execveat_allowed, as_init)


def _unnumbered(_number: int, call: str, why: str, *args: object) -> None:
    explain.say(call, why, *args, depth=2)


def load_seccomp(kernel, seccomp, conn) -> None:
    """Load the filter; its listener (if any) goes to the seccomp agent by
    way of the runtime (kubirun.seccomp_notify says why not from here)."""
    listener = seccomp.load(kernel)
    if listener is not None:
        from kubirun.seccomp_notify import hand_over

        hand_over(conn, listener)


def run_child(channel, body: Callable[[], None],
              also: Callable[[int, str, int | None], None] | None = None) -> None:
    """The child's error boundary: run ``body`` (which ends in ``execve``);
    any failure goes to the runtime on ``channel`` as one line with its
    exit code and errno (and to ``also``), then the child exits.  Never
    returns: the child must never unwind into the runtime's code."""
    try:
        body()
    except BaseException as err:  # noqa: BLE001 - whatever it is, the runtime hears of it
        if isinstance(err, KubirunError):
            code, message = err.exit_code, str(err)
        else:
            code, message = 1, describe(err)
        errno = getattr(err, "errno", None)
        errno = errno if isinstance(errno, int) else None
        channel.report_error(code, message, errno)
        if also is not None:
            also(code, message, errno)
    os._exit(1)
