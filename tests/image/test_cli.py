"""The image commands on the fast path mean what click means."""
from __future__ import annotations

import pytest

from kubirun.cli import fastpath
from kubirun.cli.table import BUNDLE, GROUPS, RUN

click = pytest.importorskip("click")

IMAGES = GROUPS["images"][1]


def _click_params(path: list[str], words: list[str]) -> dict:
    from kubirun.cli.app import cli

    ctx = cli.make_context("kubirun", [*path, *words])
    command = cli
    for name in path:
        command = command.get_command(ctx, name)
    params = dict(command.make_context(path[-1], list(words)).params)
    return {k: list(v) if isinstance(v, tuple) and k not in ("command", "images") else v
            for k, v in params.items()}


def _normalise(params: dict) -> dict:
    return {k: list(v) if isinstance(v, (list, tuple)) and k not in ("command", "images") else v
            for k, v in params.items()}


@pytest.mark.parametrize("path, command, words", [
    (["images", "ls"], IMAGES["ls"], ["--format", "json"]),
    (["images", "ls"], IMAGES["ls"], ["-q", "--store", "/s"]),
    (["images", "import"], IMAGES["import"], ["--platform", "linux/arm64", "img.tar"]),
    (["images", "rm"], IMAGES["rm"], ["-f", "a", "b"]),
    (["images", "prune"], IMAGES["prune"], ["-a"]),
    (["bundle"], BUNDLE, ["img.tar", "dir", "--", "echo", "hi"]),
    (["run"], RUN, ["--platform", "linux/amd64", "--entrypoint", "/bin/sh", "--store", "/s",
                    "img", "-c", "true"]),
    (["run"], RUN, ["--entrypoint=", "img", "echo"]),
])
def test_fast_path_agrees_with_click(path, command, words):
    fast = fastpath.parse(command, words)
    assert fast is not None
    assert _normalise(fast) == _normalise(_click_params(path, words))


def test_find_command_reaches_the_images_group():
    command, rest = fastpath.find_command(["images", "rm", "x"])
    assert command is IMAGES["rm"] and rest == ["x"]


def test_workdir_is_unset_unless_given():
    assert fastpath.parse(RUN, ["img"])["workdir"] is None
    assert fastpath.parse(RUN, ["-w", "/", "img"])["workdir"] == "/"
