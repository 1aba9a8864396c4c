"""The fast-path parser must mean exactly what click means for every command
line it accepts, and hand everything else to click."""
from __future__ import annotations

import pytest

from kubirun.cli import fastpath
from kubirun.cli.table import RUN

click = pytest.importorskip("click")


def _click_params(words: list[str]) -> dict:
    from kubirun.cli.app import cli

    ctx = cli.make_context("kubirun", ["run", *words], resilient_parsing=False)
    sub = cli.get_command(ctx, "run")
    sub_ctx = sub.make_context("run", list(words))
    params = dict(sub_ctx.params)
    from kubirun.cli.table import RUN

    for opt in RUN.options:  # click gives a tuple for a multiple option, the fast path a list
        if opt.kind == "multiple":
            params[opt.dest] = list(params[opt.dest])
    return params


ACCEPTED = [
    ["img"],
    ["img", "--", "ls", "-l"],
    ["img", "ls", "-l", "--name", "x"],
    ["--name", "c1", "--hostname=h", "img", "sh"],
    ["-it", "img"],
    ["-e", "A=1", "-eB=2", "--env", "C=3", "--env=D=4", "img"],
    ["-w", "/tmp", "-u", "1000:1000", "--keep", "img", "id"],
    ["-tiw/etc", "img", "pwd"],
    ["--", "img", "cmd"],
]


@pytest.mark.parametrize("words", ACCEPTED, ids=[" ".join(w) for w in ACCEPTED])
def test_fast_path_agrees_with_click(words):
    fast = fastpath.parse(RUN, words)
    assert fast is not None
    assert fast == _click_params(words)


@pytest.mark.parametrize("words", [
    [], ["--help"], ["--help", "img"], ["--bogus", "img"], ["-x", "img"],
    ["--name"], ["-e"], ["--keep=yes", "img"],
])
def test_fast_path_hands_the_rest_to_click(words):
    assert fastpath.parse(RUN, words) is None


def test_options_after_the_image_belong_to_the_command():
    params = fastpath.parse(RUN, ["img", "--name", "x"])
    assert params["name"] is None
    assert params["command"] == ("--name", "x")


def test_find_command_reaches_group_members():
    command, rest = fastpath.find_command(["demo", "ps", "--image", "x"])
    assert command.name == "ps" and rest == ["--image", "x"]
    assert fastpath.find_command(["nope"])[0] is None


@pytest.mark.parametrize("words, container, command", [
    (["web", "-c", "app", "--", "ls", "-l"], "app", ["ls", "-l"]),   # kubectl's order
    (["-c", "app", "web", "--", "ls"], "app", ["ls"]),
    (["web", "--container=app", "--", "sh", "-c", "x"], "app", ["sh", "-c", "x"]),
    (["web", "--", "ls", "-c"], None, ["ls", "-c"]),                 # after --: the command's
    (["web", "ls", "-l"], None, ["ls", "-l"]),                       # the command began
])
def test_node_exec_takes_options_between_the_pod_and_the_command(words, container, command):
    from kubirun.cli.table import NODE_EXEC

    params = fastpath.parse(NODE_EXEC, words)
    assert params["name"] == "web" and params["container"] == container
    assert list(params["command"]) == command


def test_node_logs_takes_options_after_the_pod():
    from kubirun.cli.table import NODE_LOGS

    params = fastpath.parse(NODE_LOGS, ["web", "-c", "app", "--tail", "3", "-p"])
    assert (params["name"], params["container"], params["tail"], params["previous"]) == \
        ("web", "app", "3", True)


def test_runc_commands_still_take_everything_after_the_id_as_the_command():
    from kubirun.cli.table import EXEC

    params = fastpath.parse(EXEC, ["box", "ls", "-t"])
    assert params["tty"] is False and list(params["command"]) == ["ls", "-t"]
