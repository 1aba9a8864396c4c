"""The lesson pages (docs/lessons/*.md) stay true: every command of their
``sh`` blocks runs and succeeds (from the repository's root, kubirun on
PATH), and every piece of code they point at (``path: function``) exists.

A ``# needs: PATH`` comment in a ``sh`` block applies to the command after
it: skipped, saying why, where PATH (relative to the repository) is
missing.  Other comments are ignored; a line ending in ``\\`` continues."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import KUBIRUN_SCRIPT, REPO

LESSONS = REPO / "docs" / "lessons"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `kubirun/x/y.py: name` or `kubirun/x.py: Class.method`
_REFERENCE = re.compile(r"`((?:kubirun|tests)/[\w/]+\.py):\s+([A-Za-z_][\w.]*)`")


class Command:
    def __init__(self, page: str, text: str, needs: str | None) -> None:
        self.page = page
        self.text = text
        self.needs = needs


def commands(text: str, page: str) -> list[Command]:
    found = []
    for block in _BLOCK.findall(text):
        needs = None
        pending = ""
        for line in block.splitlines():
            if pending:
                line = pending + " " + line.strip()
                pending = ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            stripped = line.strip()
            if stripped.startswith("# needs:"):
                needs = stripped.removeprefix("# needs:").split()[0]
            elif stripped and not stripped.startswith("#"):
                found.append(Command(page, stripped, needs))
                needs = None
    return found


def _pages() -> list:
    return sorted(LESSONS.glob("*.md"))


def _all_commands() -> list[Command]:
    return [c for page in _pages() for c in commands(page.read_text(), page.name)]


def test_the_lessons_have_runnable_commands_on_every_demo_page():
    pages = {c.page for c in _all_commands()}
    assert pages == {p.name for p in _pages() if p.name != "README.md"}


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: f"{c.page}:{c.text[:50]}")
def test_every_command_of_the_lessons_succeeds(command, tmp_path):
    if command.needs and not (REPO / command.needs).exists():
        pytest.skip(f"{command.needs} is not built (the page says how)")
    env = dict(os.environ, PATH=f"{KUBIRUN_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}",
               KUBIRUN_ROOT=str(tmp_path / "root"))
    # As the reader types them: `kubirun run` in its default network mode,
    # a bridge, which the test makes in a network namespace of its own,
    # never in the host's (and the leases under a state root of its own).
    result = subprocess.run(["unshare", "--net", "bash", "-c", command.text], cwd=REPO, env=env,
                            text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, (
        f"{command.page}: `{command.text}` exited {result.returncode}\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _references() -> list[tuple[str, str, str]]:
    return [(page.name, path, name) for page in _pages()
            for path, name in _REFERENCE.findall(page.read_text())]


def test_the_lessons_point_at_code():
    assert len(_references()) >= 10


@pytest.mark.parametrize("page,path,name", _references(), ids=lambda v: str(v))
def test_every_piece_of_code_a_lesson_names_exists(page, path, name):
    source = REPO / path
    assert source.exists(), f"{page}: {path} does not exist"
    text = source.read_text()
    *classes, function = name.split(".")
    for cls in classes:
        assert re.search(rf"^class {cls}\b", text, re.MULTILINE), f"{page}: no class {cls} in {path}"
    assert re.search(rf"^\s*def {function}\(", text, re.MULTILINE), \
        f"{page}: no function {function} in {path}"
