"""What each command does, in terms of the library: thin on purpose."""
from __future__ import annotations

import os
from kubirun.process import DEFAULT_ARGS, ProcessSpec, parse_env_items


def run(image: str, command: tuple, name: str | None, hostname: str | None,
        env: list, workdir: str, user: str | None, tty: bool, interactive: bool,
        keep: bool) -> int:
    from kubirun import container

    args = list(command)
    if args and args[0] == "--":  # `run IMAGE -- CMD`: the separator is ours, not CMD's
        args = args[1:]
    spec = ProcessSpec(
        args=args or list(DEFAULT_ARGS),
        env=parse_env_items(list(env), dict(os.environ)),
        cwd=workdir or "/",
        user=user,
        terminal=tty,
        interactive=interactive,
    )
    return container.run(container.RunOptions(image=image, name=name, hostname=hostname,
                                              process=spec, keep=keep))


def demo_ps(image: str | None) -> int:
    from kubirun import demo

    return demo.ps(image)
