"""kubirun's command line: ``main`` tries the fast path, then click."""
from __future__ import annotations

import os
import sys

from kubirun.cli.spec import Command


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"] or args == ["-v"]:
        print(version_text())
        raise SystemExit(0)

    from kubirun.cli import fastpath

    command, words = fastpath.find_command(args)
    params = fastpath.parse(command, words) if command else None
    if command is not None and params is not None:
        code = dispatch(command, params)
        # Skip interpreter teardown (a few ms of module cleanup): nothing
        # is left to do but flushing our own output.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    from kubirun.cli.app import cli

    cli.main(args=args, prog_name="kubirun")


def dispatch(command: Command, params: dict) -> int:
    """Call the command's handler; a ``KubirunError`` becomes one line on
    stderr and the error's exit code."""
    from kubirun.errors import KubirunError, describe

    module, _, function = command.handler.partition(":")
    handler = getattr(__import__(module, fromlist=[function]), function)
    try:
        return handler(**params)
    except KubirunError as err:
        print(f"kubirun: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a system call of the runtime itself failed
        print(f"kubirun: {describe(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def version_text() -> str:
    """runc-style version lines (engines parse the ``spec:`` line)."""
    import platform

    from kubirun import OCI_SPEC_VERSION, __version__

    return f"kubirun version {__version__}\nspec: {OCI_SPEC_VERSION}\npython: {platform.python_version()}"
