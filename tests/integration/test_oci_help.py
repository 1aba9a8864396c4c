"""Help, version and an unknown command, as runc prints them: the
``NAME:`` and ``USAGE:`` sections scripts grep, ``-v`` lines engines parse,
runc's words and status for a command that does not exist; against kubirun
and runc (``oci``)."""
from __future__ import annotations

import os

import pytest

# Every command runc 1.1 has, with whether its help has an OPTIONS section
# (checkpoint and restore: runc's options are criu's, kubirun refuses them).
RUNC_COMMANDS = {
    "create": True, "delete": True, "events": True, "exec": True, "kill": True, "list": True,
    "pause": False, "ps": True, "resume": False, "run": True, "spec": True, "start": False,
    "state": False, "update": True, "features": False, "checkpoint": None, "restore": None,
}


def name_of(oci) -> str:
    return os.path.basename(oci.binary)


def test_help_has_runcs_sections(oci):
    result = oci.cmd("--help")
    assert result.returncode == 0, result.stderr
    name = name_of(oci)
    assert result.stdout.startswith(f"NAME:\n   {name} - ")
    assert f"\nUSAGE:\n   {name} [global options] command [command options] [arguments...]\n" \
        in result.stdout
    for section in ("\nVERSION:\n", "\nCOMMANDS:\n", "\nGLOBAL OPTIONS:\n"):
        assert section in result.stdout


def test_help_lists_every_runc_command(oci):
    result = oci.cmd("-h")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("\nCOMMANDS:\n", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0].rstrip(",") for line in commands.splitlines()}
    assert set(RUNC_COMMANDS) | {"help"} <= listed


def test_no_command_prints_the_help(oci):
    result = oci.cmd()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"NAME:\n   {name_of(oci)} - ")


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", sorted(RUNC_COMMANDS))
def test_every_commands_help_has_runcs_sections(oci, command, flag):
    result = oci.cmd(command, flag)
    assert result.returncode == 0, result.stderr
    name = name_of(oci)
    assert result.stdout.startswith(f"NAME:\n   {name} {command} - "), result.stdout
    assert f"\n\nUSAGE:\n   {name} {command}" in result.stdout
    if RUNC_COMMANDS[command] is not None:
        assert ("\nOPTIONS:\n" in result.stdout) == RUNC_COMMANDS[command]


def test_help_command_is_the_commands_help(oci):
    result = oci.cmd("help", "kill")
    assert result.returncode == 0, result.stderr
    assert result.stdout == oci.cmd("kill", "--help").stdout


def test_a_commands_help_lists_its_options_long_name_first(oci):
    result = oci.cmd("kill", "--help")
    options = result.stdout.split("\nOPTIONS:\n", 1)[1]
    assert options.lstrip().startswith("--all, -a ")


def test_help_after_the_containers_command_is_the_containers(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    result = oci.cmd("exec", cid, "echo", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--help\n"


def test_v_prints_the_version(oci):
    result = oci.cmd("-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{name_of(oci)} version ")
    assert any(line.startswith("spec: 1.") for line in lines[1:])


def test_an_unknown_command_has_no_help_topic_and_exits_3(oci):
    result = oci.cmd("frobnicate")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "No help topic for 'frobnicate'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
