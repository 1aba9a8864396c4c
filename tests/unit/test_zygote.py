"""Which inits a spare of the fork server's zygote may be (kubirun.zygote):
only what its fork decided (a new PID namespace, no new user namespace,
no cgroup to be born in) and no socket the server holds for it."""
from __future__ import annotations

import pytest

from kubirun import zygote
from kubirun.init import InitConfig


class Namespace:
    def __init__(self, path: str | None = None) -> None:
        self.path = path


def config(**changes) -> InitConfig:
    made = InitConfig("/rootfs", None, None, [])
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def test_a_new_pid_namespace_and_nothing_else_decided_at_the_fork_fits():
    assert zygote.fits(Namespace(), config(), None)


@pytest.mark.parametrize("pid_ns, changes, born, why", [
    (None, {}, None, "the host's PID namespace"),
    (Namespace("/proc/1/ns/pid"), {}, None, "a PID namespace joined by path"),
    (Namespace(), {"new_user": True}, None, "a user namespace made by the fork"),
    (Namespace(), {}, object(), "a cgroup to be born in"),
    (Namespace(), {"console_socket": object()}, None, "a terminal's socket"),
    (Namespace(), {"seccomp_socket": object()}, None, "a seccomp listener's socket"),
])
def test_what_a_spare_cannot_be(pid_ns, changes, born, why):
    assert not zygote.fits(pid_ns, config(**changes), born), why
