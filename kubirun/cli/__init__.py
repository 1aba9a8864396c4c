"""kubirun's command line: ``main`` tries the fast path, then help and
version (``helptext``), then click (which explains a bad command line)."""
from __future__ import annotations

import os
import sys

from kubirun.cli.lifetime import short_lived

short_lived()  # before anything else is imported: see kubirun.cli.lifetime

from kubirun.cli.dispatch import die_of_sigpipe, dispatch  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from kubirun.cli import fastpath

    split = fastpath.split_globals(args)
    if split is not None:
        global_params, rest = split
        command, words = fastpath.find_command(rest)
        params = fastpath.parse(command, words) if command else None
        if command is not None and params is not None:
            _exit(dispatch(command, params, global_params))

    # Not an everyday command line: help, the version, an unknown command?
    from kubirun.cli import helptext

    answer = helptext.answer(args)
    if answer is not None:
        if answer.error:
            from kubirun.base import log

            globals_ = split[0] if split is not None else {}
            log.configure(globals_.get("log"), globals_.get("log_format"), False)
            log.error(answer.text)
        else:
            try:
                print(answer.text)
            except BrokenPipeError:
                die_of_sigpipe()
        _exit(answer.status)

    from kubirun.cli.app import cli

    try:
        cli.main(args=args, prog_name="kubirun")
    except BrokenPipeError:
        die_of_sigpipe()


def _exit(code: int) -> "NoReturn":  # noqa: F821
    """Skip interpreter teardown (a few ms of module cleanup): nothing is
    left to do but flushing our own output."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        die_of_sigpipe()
    sys.stderr.flush()
    os._exit(code)
