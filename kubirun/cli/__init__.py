"""kubirun's command line: ``main`` tries the fast path, then help and
version (``helptext``), then click (which explains a bad command line)."""
from __future__ import annotations

import gc
import os
import sys

gc.disable()  # before anything else is imported: kubirun.cli.lifetime says why

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
            _error(answer.text, split)
        else:
            try:
                print(answer.text)
            except BrokenPipeError:
                die_of_sigpipe()
        _exit(answer.status)

    import click

    from kubirun.cli.app import cli

    try:
        cli.main(args=args, prog_name="kubirun", standalone_mode=False)
    except BrokenPipeError:
        die_of_sigpipe()
    except click.UsageError as err:
        # One line, as every other error (click's own is a usage block):
        # what is wrong, and where the help is.
        where = err.ctx.command_path if err.ctx is not None else "kubirun"
        command = where.partition(" ")[2]  # the log says "kubirun: " already
        _error((f"{command}: " if command else "") + _one_line(err.format_message())
               + f" (see '{where} --help')", split)
        _exit(err.exit_code)
    except click.ClickException as err:
        _error(_one_line(err.format_message()), split)
        _exit(err.exit_code)
    except click.exceptions.Exit as done:  # --help, --version by way of click
        _exit(done.exit_code)
    except click.exceptions.Abort:
        _exit(130)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(text: str, split) -> None:
    """Say a command-line error as the log says every error (--log and
    --log-format apply, if they could be read)."""
    from kubirun.base import log

    globals_ = split[0] if split is not None else {}
    log.configure(globals_.get("log"), globals_.get("log_format"), False)
    log.error(text)


def _exit(code: int) -> "NoReturn":  # noqa: F821
    """Skip interpreter teardown (a few ms of module cleanup): nothing is
    left to do but flushing our own output."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        die_of_sigpipe()
    sys.stderr.flush()
    os._exit(code)
