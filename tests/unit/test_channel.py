"""The runtime <-> init channel (kubirun.channel), both ends in one
process: the runtime may send a go-ahead before the init asks for it, so
two may wait in the pipe together, and two of the init's tags too; each
end still reads them one message at a time."""
from __future__ import annotations

import os

import pytest

from kubirun.channel import CGROUP, READY, USERNS, InitChannel
from kubirun.base.errors import ContainerStartError


@pytest.fixture
def channel():
    made = InitChannel()
    yield made
    for fd in (made._to_runtime_r, made._to_runtime_w, made._to_init_r, made._to_init_w):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the test


def test_two_go_aheads_sent_before_the_asks_are_read_one_by_one(channel):
    channel.go()  # the answer to USERNS
    channel.go(b'{"join": [], "binds": []}')  # the cgroup's, sent ahead
    assert channel.ask(USERNS) == b""
    assert channel.ask(CGROUP) == b'{"join": [], "binds": []}'


def test_two_tags_waiting_in_the_pipe_are_two_messages(channel):
    channel.tell(CGROUP)
    channel.tell(READY)
    channel.expect(CGROUP, "setting up")
    channel.expect(READY, "preparing")


def test_a_go_ahead_to_an_init_that_died_is_not_the_error_its_report_is(channel):
    channel.report_error(1, "mount: No such file or directory")
    channel.parent_side()  # the init is gone: its ends are closed
    channel.go_ahead(b"{}")  # no BrokenPipeError
    with pytest.raises(ContainerStartError, match="mount: No such file"):
        channel.expect(CGROUP, "setting up its namespaces and mounts")
