"""A small parser for the everyday forms of ``kubirun`` commands.

It understands long options (``--opt value``, ``--opt=value``), short ones
(``-e X``, ``-eX``, clusters such as ``-it``), ``--`` and positional
arguments, all as declared in ``spec``.  Anything else (``--help``, an
unknown option, a missing value or argument) returns ``None`` and the caller
hands the command line to click, which explains the problem properly.
"""
from __future__ import annotations

from kubirun.cli.table import COMMANDS, GLOBAL_OPTIONS, GROUPS, Command, Option


def split_globals(argv: list[str]) -> tuple[dict, list[str]] | None:
    """Parse the global options before the command's name (``--root DIR
    --log F create ...``); None if one of them is not understood."""
    by_name = {name: opt for opt in GLOBAL_OPTIONS for name in opt.names}
    params: dict = {opt.dest: _initial(opt) for opt in GLOBAL_OPTIONS}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i = _take_option(argv, i, by_name, params)
        if i is None:
            return None
    return params, argv[i:]


def find_command(argv: list[str]) -> tuple[Command | None, list[str]]:
    if not argv:
        return None, argv
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]], argv[1:]
    if argv[0] in GROUPS and len(argv) > 1 and argv[1] in GROUPS[argv[0]][1]:
        return GROUPS[argv[0]][1][argv[1]], argv[2:]
    return None, argv


def parse(command: Command, words: list[str]) -> dict | None:
    """Parse the words after the command's name into handler keywords."""
    by_name = {name: opt for opt in command.options for name in opt.names}
    params: dict = {opt.dest: _initial(opt) for opt in command.options}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if command.interspersed and word == "--":
            positional.extend(words[i:])
            break
        if (positional and not command.interspersed) or word == "-" or not word.startswith("-"):
            positional.append(word)
            if _variadic_reached(command, positional):
                positional.extend(words[i:])
                break
            continue
        if word == "--":
            positional.extend(words[i:])
            break
        i = _take_option(words, i - 1, by_name, params)
        if i is None:
            return None
    return _bind_arguments(command, positional, params)


def _take_option(words: list[str], i: int, by_name: dict, params: dict) -> int | None:
    """Store the option word ``words[i]`` (and its value, which may be the
    next word); the index after what was used, or None if not understood."""
    items = _split_option_word(words[i], by_name)
    i += 1
    if items is None:
        return None
    for opt, value in items:
        if opt.kind == "flag":
            if value is not None:
                return None
            params[opt.dest] = True
            continue
        if value is None:  # the value is the next word
            if i >= len(words):
                return None
            value = words[i]
            i += 1
        _store(params, opt, value)
    return i


def _split_option_word(word: str, by_name: dict) -> list | None:
    """``--name=x`` -> [(name, "x")]; ``-it`` -> [(i, None), (t, None)];
    ``-eFOO=1`` -> [(e, "FOO=1")]; None for an option we do not declare."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        opt = by_name.get(name)
        return None if opt is None else [(opt, value if eq else None)]
    items = []
    for pos in range(1, len(word)):
        opt = by_name.get("-" + word[pos])
        if opt is None:
            return None
        if opt.kind != "flag":  # takes the rest of the word, or the next word
            items.append((opt, word[pos + 1:] or None))
            break
        items.append((opt, None))
    return items


def _initial(opt: Option):
    if opt.kind == "flag":
        return False
    if opt.kind == "multiple":
        return list(opt.default or ())
    return opt.default


def _store(params: dict, opt: Option, value: str) -> None:
    if opt.kind == "multiple":
        params[opt.dest].append(value)
    else:
        params[opt.dest] = value


def _variadic_reached(command: Command, positional: list[str]) -> bool:
    """runc's way: the words after the fixed arguments are the variadic
    one's, options included; kubectl's (``interspersed``): from its first
    word on (options may come between the fixed arguments and it)."""
    fixed = [a for a in command.arguments if not a.variadic]
    has_variadic = any(a.variadic for a in command.arguments)
    return has_variadic and len(positional) >= len(fixed) + command.interspersed


def _bind_arguments(command: Command, positional: list[str], params: dict) -> dict | None:
    for arg in command.arguments:
        if arg.variadic:
            params[arg.dest] = tuple(positional)
            positional = []
        elif positional:
            params[arg.dest] = positional.pop(0)
        elif arg.required:
            return None
        else:
            params[arg.dest] = None
    if positional:
        return None
    return params
