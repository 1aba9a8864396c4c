"""Help, version and unknown-command answers, generated from ``table`` in
runc's layout (``NAME:``, ``USAGE:``, ``DESCRIPTION:``, ``OPTIONS:``: what
scripts grep), without click: ``kubirun --help`` costs one start of the
interpreter, not click's import as well.

``answer(argv)`` recognises the command lines that ask for help or the
version (or name no command) and returns what to print; everything else is
the parsers' business.
"""
from __future__ import annotations

from kubirun.cli.table import APP_HELP, COMMANDS, GLOBAL_OPTIONS, GROUPS, Argument, Command, Option

HELP = ("-h", "--help")
VERSION = ("-v", "--version")
HELP_COMMANDS = ("help", "h")
UNKNOWN_STATUS = 3  # runc's (urfave/cli's) status for "No help topic for 'X'"
INDENT = "   "
WIDTH = 80


class Answer:
    """What to print, where, and the exit status."""

    def __init__(self, text: str, status: int = 0, error: bool = False) -> None:
        self.text = text
        self.status = status
        self.error = error  # a one-line error (through the log), not help on stdout


def answer(argv: list[str]) -> Answer | None:
    """The help, version or unknown-command answer ``argv`` asks for, or
    None when it is an ordinary command line (valid or not)."""
    i = _skip_globals(argv)
    if i is None:
        return None
    if isinstance(i, Answer):
        return i
    words = argv[i:]
    if not words:
        return Answer(app_help())
    name, rest = words[0], words[1:]
    if name in HELP_COMMANDS:
        return _help_topic(rest)
    if name in GROUPS:
        return _group_answer(name, rest)
    if name not in COMMANDS:
        return _unknown(name)
    if _asks_help(COMMANDS[name], rest):
        return Answer(command_help(COMMANDS[name]))
    return None


def _skip_globals(argv: list[str]):
    """The index of the command's name; an Answer for -h/-v among the
    global options; None for a global option we do not know (the
    parsers explain that)."""
    by_name = {name: opt for opt in GLOBAL_OPTIONS for name in opt.names}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        word = argv[i]
        if word in HELP:
            return Answer(app_help())
        if word in VERSION:
            return Answer(version_text())
        opt = by_name.get(word.partition("=")[0])
        if opt is None:
            return None
        i += 2 if opt.kind != "flag" and "=" not in word else 1
    return i


def _help_topic(words: list[str]) -> Answer:
    """``kubirun help [COMMAND [SUBCOMMAND]]``."""
    if not words:
        return Answer(app_help())
    if words[0] in GROUPS:
        group_help, members = GROUPS[words[0]]
        if len(words) > 1:
            if words[1] not in members:
                return _unknown(words[1])
            return Answer(command_help(members[words[1]], words[0]))
        return Answer(group_help_text(words[0]))
    if words[0] not in COMMANDS:
        return _unknown(words[0])
    return Answer(command_help(COMMANDS[words[0]]))


def _group_answer(group: str, words: list[str]) -> Answer | None:
    members = GROUPS[group][1]
    if not words or words[0] in HELP or words[0] in HELP_COMMANDS:
        return Answer(group_help_text(group))
    if words[0] not in members:
        return _unknown(words[0])
    command = members[words[0]]
    if _asks_help(command, words[1:]):
        return Answer(command_help(command, group))
    return None


def _unknown(name: str) -> Answer:
    return Answer(f"No help topic for '{name}'", UNKNOWN_STATUS, error=True)


def _asks_help(command: Command, words: list[str]) -> bool:
    """Whether -h/--help is among the command's own options: not after
    ``--``, nor among the words of a variadic argument (``exec ID sh
    --help`` is sh's)."""
    by_name = {name: opt for opt in command.options for name in opt.names}
    fixed = sum(1 for a in command.arguments if not a.variadic)
    variadic = any(a.variadic for a in command.arguments)
    positional = 0
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return False
        if word in HELP:
            return True
        if word.startswith("-") and word != "-":
            opt = by_name.get(word.partition("=")[0])
            takes_next = opt is not None and opt.kind != "flag" and "=" not in word
            i += 2 if takes_next else 1
            continue
        positional += 1
        if variadic and positional >= fixed:  # the rest is the variadic's (as fastpath)
            return False
        i += 1
    return False


# --- the texts ---------------------------------------------------------------

def version_text() -> str:
    """runc-style version lines (engines parse the ``spec:`` line)."""
    import sys

    from kubirun import OCI_SPEC_VERSION, __version__

    python = "%d.%d.%d" % sys.version_info[:3]
    return f"kubirun version {__version__}\nspec: {OCI_SPEC_VERSION}\npython: {python}"


def app_help() -> str:
    from kubirun import __version__

    summary, description = _split(APP_HELP)
    commands = [(c.name, _split(c.help)[0]) for c in COMMANDS.values()]
    commands += [(name, _split(text)[0]) for name, (text, _) in GROUPS.items()]
    commands.append(("help, h", "Shows a list of commands or help for one command"))
    options = [_option_row(o) for o in GLOBAL_OPTIONS]
    options += [("--help, -h", "show help"), ("--version, -v", "print the version")]
    version = version_text().split("\n", 1)
    parts = [_section("NAME", f"kubirun - {summary}")]
    if description:
        parts.append(description + "\n")  # wrapped by hand: textwrap costs ~5 ms to import
    parts += [
        _section("USAGE", "kubirun [global options] command [command options] [arguments...]"),
        _section("VERSION", __version__) + version[1] + "\n",
        _section("COMMANDS", _table(commands)),
        _section("GLOBAL OPTIONS", _table(options)),
    ]
    return "\n".join(parts).rstrip("\n")


def group_help_text(group: str) -> str:
    text, members = GROUPS[group]
    summary, description = _split(text)
    parts = [_section("NAME", f"kubirun {group} - {summary}"),
             _section("USAGE", f"kubirun {group} command [command options] [arguments...]")]
    if description:
        parts.append(_section("DESCRIPTION", _wrap(description)))
    parts += [_section("COMMANDS", _table([(c.name, _split(c.help)[0]) for c in members.values()])),
              _section("OPTIONS", _table([("--help, -h", "show help")]))]
    return "\n".join(parts).rstrip("\n")


def command_help(command: Command, group: str | None = None) -> str:
    full = f"kubirun {group} {command.name}" if group else f"kubirun {command.name}"
    summary, description = _split(command.help)
    usage = full + (" [command options]" if command.options else "")
    args = " ".join(_argument_usage(a) for a in command.arguments)
    parts = [_section("NAME", f"{full} - {summary}"),
             _section("USAGE", f"{usage} {args}".rstrip())]
    description = "\n\n".join(p for p in (description, command.epilog) if p)
    if description:
        parts.append(_section("DESCRIPTION", _wrap(description)))
    if command.options:
        parts.append(_section("OPTIONS", _table([_option_row(o) for o in command.options])))
    return "\n".join(parts).rstrip("\n")


def _argument_usage(arg: Argument) -> str:
    name = arg.dest.replace("_", "-")
    if arg.variadic:
        return f"<{name}>..." if arg.required else f"[{name}...]"
    return f"<{name}>" if arg.required else f"[{name}]"


def _option_row(opt: Option) -> tuple[str, str]:
    """runc's spelling: long names first, each with its value's name."""
    names = sorted(opt.names, key=lambda n: not n.startswith("--"))
    value = "" if opt.kind == "flag" else f" {opt.metavar or 'value'}"
    text = opt.help
    if opt.kind == "value" and opt.default not in (None, ""):
        text += f' (default: "{opt.default}")'
    return ", ".join(n + value for n in names), text


def _split(text: str) -> tuple[str, str]:
    """A help text's summary (its first paragraph) and the rest."""
    summary, _, rest = text.strip().partition("\n\n")
    return " ".join(summary.split()), rest.strip()


def _section(title: str, body: str) -> str:
    lines = body.split("\n")
    return f"{title}:\n" + "\n".join(INDENT + line if line else "" for line in lines) + "\n"


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(left) for left, _ in rows)
    return "\n".join(f"{left.ljust(width)}  {right}".rstrip() for left, right in rows)


def _wrap(text: str) -> str:
    """Paragraphs refilled to fit the terminal's usual width, indent included."""
    import textwrap

    return "\n\n".join(textwrap.fill(" ".join(p.split()), WIDTH - len(INDENT),
                                     break_on_hyphens=False)
                       for p in text.split("\n\n"))
