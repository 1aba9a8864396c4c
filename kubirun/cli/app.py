"""The click application, built from ``table``: the error messages of a bad
command line, and every command line the fast path passes on (help is
``helptext``'s)."""
from __future__ import annotations

import click

from kubirun import __version__
from kubirun.cli.table import APP_HELP, COMMANDS, GLOBAL_OPTIONS, GROUPS, Command
from kubirun.cli.dispatch import dispatch
from kubirun.cli.helptext import version_text


def _click_options(options) -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for opt in options:
        if opt.kind == "flag":
            params.append(click.Option([*opt.names, opt.dest], is_flag=True, help=opt.help))
        else:
            params.append(click.Option(
                [*opt.names, opt.dest], metavar=opt.metavar, help=opt.help,
                multiple=opt.kind == "multiple",
                default=opt.default if opt.default is not None else (() if opt.kind == "multiple" else None),
            ))
    return params


def _click_command(command: Command) -> click.Command:
    params = _click_options(command.options)
    for arg in command.arguments:
        params.append(click.Argument(
            [arg.dest], nargs=-1 if arg.variadic else 1, required=arg.required and not arg.variadic,
            metavar=(f"[{arg.dest.upper()}...]" if arg.variadic else arg.dest.upper()),
        ))

    def callback(**kwargs):
        root = click.get_current_context().find_root()
        raise SystemExit(dispatch(command, kwargs, dict(root.params)))

    return click.Command(
        command.name, params=params, callback=callback, help=command.help, epilog=command.epilog,
        context_settings={"allow_interspersed_args": not any(a.variadic for a in command.arguments),
                          "help_option_names": ["-h", "--help"]},
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             params=_click_options(GLOBAL_OPTIONS))
@click.version_option(message=version_text(), version=__version__)
def cli(**_global_params) -> None:
    pass


cli.help = APP_HELP


for _command in COMMANDS.values():
    cli.add_command(_click_command(_command))

for _group_name, (_group_help, _members) in GROUPS.items():
    _group = click.Group(_group_name, help=_group_help)
    for _command in _members.values():
        _group.add_command(_click_command(_command))
    cli.add_command(_group)
