"""Signals, durations and sizes as the command line spells them."""
from __future__ import annotations

import signal

import pytest

from kubirun.cli.engine_calls import parse_signal
from kubirun.cli.handlers import parse_duration
from kubirun.base.errors import KubirunError
from kubirun.resource_flags import parse_size, resources_from_flags


@pytest.mark.parametrize("text, number", [
    ("TERM", 15), ("SIGTERM", 15), ("sigkill", 9), ("9", 9), ("USR1", signal.SIGUSR1),
    ("RTMIN+1", signal.SIGRTMIN + 1), ("SIGRTMAX-2", signal.SIGRTMAX - 2), ("WINCH", 28),
])
def test_signals(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["BOGUS", "999", "SIG_DFL", "-1", ""])
def test_bad_signals(text):
    with pytest.raises(KubirunError):
        parse_signal(text)


@pytest.mark.parametrize("text, seconds", [("5s", 5), ("500ms", 0.5), ("1m", 60), ("2", 2)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("1048576", 1 << 20), ("512k", 512 << 10), ("512m", 512 << 20),
                                        ("1G", 1 << 30), ("2mb", 2 << 20), ("-1", -1)])
def test_sizes(text, size):
    assert parse_size(text, "--memory") == size


def test_update_flags_map_to_resources_and_refuse_what_cannot_be_done():
    assert resources_from_flags({"memory": "64m", "pids_limit": "10", "cpu_quota": "50000",
                                 "cpuset_cpus": "0", "memory_swap": None}) == {
        "memory": {"limit": 64 << 20}, "pids": {"limit": 10},
        "cpu": {"quota": 50000, "cpus": "0"}}
    with pytest.raises(KubirunError, match="kernel-memory"):
        resources_from_flags({"kernel_memory": "1m"})
