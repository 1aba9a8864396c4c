"""The command line, declared once as data.

Two parsers read this table: ``fastpath`` parses the everyday forms of the
hot commands without importing click (click alone costs ~25 ms to import
here, more than runc needs to run a whole container), and ``app`` builds
the click application for everything else: ``--help``, error messages,
unusual spellings.  Whatever ``fastpath`` does not fully understand goes to
click, so the two can never disagree on a valid command line's meaning.
"""
from __future__ import annotations

# Plain classes, not dataclasses: importing dataclasses costs ~5 ms at
# every start (it imports inspect).


class Option:
    def __init__(self, names: tuple[str, ...], dest: str, help: str, kind: str = "flag",
                 metavar: str | None = None, default: object = None) -> None:
        self.names = names  # e.g. ("-e", "--env")
        self.dest = dest  # the handler's keyword
        self.help = help
        self.kind = kind  # "flag" | "value" | "multiple"
        self.metavar = metavar
        self.default = default


class Argument:
    def __init__(self, dest: str, required: bool = True, variadic: bool = False) -> None:
        self.dest = dest
        self.required = required
        self.variadic = variadic  # takes every remaining word, options included


class Command:
    def __init__(self, name: str, help: str, handler: str, options: tuple[Option, ...] = (),
                 arguments: tuple[Argument, ...] = (), epilog: str = "") -> None:
        self.name = name
        self.help = help
        self.handler = handler  # "module:function", imported only when the command runs
        self.options = options
        self.arguments = arguments
        self.epilog = epilog


RUN = Command(
    name="run",
    help="Run a command in a new container made from IMAGE.\n\n"
         "IMAGE is a root filesystem: a directory (used in place) or a tar archive "
         "(.tar, .tar.gz, ...) unpacked for this container. CMD defaults to /bin/sh.",
    handler="kubirun.cli.handlers:run",
    options=(
        Option(("--name",), "name", "Container name (default: a random id).", "value", "NAME"),
        Option(("--hostname",), "hostname", "Hostname inside (default: the name).", "value", "NAME"),
        Option(("-e", "--env"), "env", "Set KEY=VALUE (or pass KEY from this environment).",
               "multiple", "KEY[=VALUE]", ()),
        Option(("-w", "--workdir"), "workdir", "Working directory inside (default: /).",
               "value", "DIR", "/"),
        Option(("-u", "--user"), "user", "Run as UID[:GID] or NAME[:GROUP] of the image.",
               "value", "USER"),
        Option(("-t", "--tty"), "tty", "Give the container a terminal (a pty made inside it)."),
        Option(("-i", "--interactive"), "interactive",
               "With -t, forward this terminal's input (without -t, stdin is always the caller's)."),
        Option(("--keep",), "keep", "Keep the container's unpacked root after it exits."),
    ),
    arguments=(Argument("image"), Argument("command", required=False, variadic=True)),
    epilog="Example: kubirun run rootfs/busybox.tar.gz -- ps aux",
)

DEMO_PS = Command(
    name="ps",
    help="Show `ps aux` on the host, then inside a container: the PID namespace at work.",
    handler="kubirun.cli.handlers:demo_ps",
    options=(
        Option(("--image",), "image", "Image to use (default: the demo busybox image).",
               "value", "IMAGE"),
    ),
)

# Top-level commands; `demo` is a group of teaching demos.
COMMANDS = {"run": RUN}
GROUPS = {"demo": ("Teaching demos: one command, one lesson.", {"ps": DEMO_PS})}
