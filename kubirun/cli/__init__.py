"""kubirun's command line: ``main`` tries the fast path, then click."""
from __future__ import annotations

import os
import sys

from kubirun.cli.dispatch import die_of_sigpipe, dispatch, version_text


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"] or args == ["-v"]:
        print(version_text())
        raise SystemExit(0)

    from kubirun.cli import fastpath

    split = fastpath.split_globals(args)
    if split is not None:
        global_params, rest = split
        command, words = fastpath.find_command(rest)
        params = fastpath.parse(command, words) if command else None
        if command is not None and params is not None:
            code = dispatch(command, params, global_params)
            # Skip interpreter teardown (a few ms of module cleanup): nothing
            # is left to do but flushing our own output.
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                die_of_sigpipe()
            sys.stderr.flush()
            os._exit(code)

    from kubirun.cli.app import cli

    try:
        cli.main(args=args, prog_name="kubirun")
    except BrokenPipeError:
        die_of_sigpipe()
