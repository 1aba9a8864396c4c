"""The last steps of init and exec (kubirun.tail), in order, with every call
that would change this process recorded instead: no root, no fork."""
from __future__ import annotations

import errno

import pytest

from kubirun import tail
from kubirun.base.errors import ExecError
from kubirun.process import ProcessSpec


class FakeFilter:
    def __init__(self, calls: list, early: bool) -> None:
        self.calls = calls
        self.early = early
        self.execveat_allowed = not early

    def must_load_early(self, spec) -> bool:
        return self.early

    def load(self, kernel=None):
        self.calls.append("seccomp")
        return None


class TailKernel:
    """The tail's own system calls, recorded (the rest of the seam:
    tests/unit/recording_kernel.py, test_init_steps.py)."""

    def __init__(self, recorded: list) -> None:
        self.recorded = recorded

    def reset_signals(self) -> None:
        self.recorded.append("signals")

    def set_inheritable(self, fd: int) -> None:
        self.recorded.append(("inherit", fd))

    def close_range(self, first: int, last: int, flags: int) -> None:
        self.recorded.append(("cloexec from", first))


@pytest.fixture
def calls(monkeypatch) -> list:
    recorded: list = []
    monkeypatch.setattr(tail.process, "set_oom_score", lambda spec: recorded.append("oom score"))
    monkeypatch.setattr(tail.process, "become",
                        lambda spec, identity, kernel: recorded.append("become"))
    monkeypatch.setattr(tail.process, "exec_program",
                        lambda kernel, path, args, env, helper, fds, say, execveat, as_init:
                        recorded.append(("execve", path, fds, say, execveat, as_init)))
    return recorded


def finish(calls: list, seccomp=None, preserve_fds: int = 0, **kwargs) -> None:
    tail.finish_and_exec(TailKernel(calls), ProcessSpec(args=["/bin/true"]), None, "/bin/true", {},
                         preserve_fds=preserve_fds, seccomp=seccomp, exec_helper=-1,
                         report_fds=(9,), say_on_stderr=False,
                         before_exec=lambda execveat: calls.append("before exec"), **kwargs)


def test_without_a_filter_signals_fds_user_then_execve(calls):
    finish(calls)
    assert calls == ["signals", ("cloexec from", 3), "become", "before exec",
                     ("execve", "/bin/true", (9,), False, True, False)]


def test_preserved_fds_stay_open_across_execve(calls):
    finish(calls, preserve_fds=2)
    assert calls[1:4] == [("inherit", 3), ("inherit", 4), ("cloexec from", 5)]


def test_the_filter_is_loaded_after_the_user_switch_when_it_can_be(calls):
    finish(calls, seccomp=FakeFilter(calls, early=False))
    assert calls[2:5] == ["become", "seccomp", "before exec"]


def test_a_filter_that_must_load_early_comes_after_the_oom_score_before_the_user_switch(calls):
    finish(calls, seccomp=FakeFilter(calls, early=True))
    assert calls[2:6] == ["oom score", "seccomp", "become", "before exec"]
    assert calls[-1][4] is False  # a filter denying execveat: the helper uses execve


def test_the_guard_wraps_the_filter_and_the_execve(calls):
    guarded = []

    def guard(step, *args):
        guarded.append(step.__name__)
        return step(*args)

    finish(calls, seccomp=FakeFilter(calls, early=False), guard=guard)
    assert guarded == ["load_seccomp", "<lambda>"]  # exec_program, as patched


def test_the_listeners_connection_is_asked_for_after_the_fds_before_the_filter(calls):
    finish(calls, seccomp=FakeFilter(calls, early=False),
           seccomp_conn=lambda: calls.append("connect"))
    assert calls[:5] == ["signals", ("cloexec from", 3), "connect", "become", "seccomp"]


class FakeChannel:
    def __init__(self) -> None:
        self.reports: list = []

    def report_error(self, code, message, errno=None) -> None:
        self.reports.append((code, message, errno))


@pytest.fixture
def no_exit(monkeypatch):
    def _exit(code):
        raise SystemExit(code)

    monkeypatch.setattr(tail.os, "_exit", _exit)


@pytest.mark.parametrize("error, report", [
    (ExecError('exec: "/x": permission denied', 126, errno=errno.EACCES),
     (126, 'exec: "/x": permission denied', errno.EACCES)),
    (PermissionError(errno.EPERM, "Operation not permitted", "/proc/sys/x"),
     (1, "Operation not permitted: /proc/sys/x", errno.EPERM)),
    (ValueError("a bug"), (1, "ValueError: a bug", None)),
], ids=["kubirun error", "os error", "bug"])
def test_the_childs_boundary_reports_code_message_and_errno_then_exits(no_exit, error, report):
    channel, also = FakeChannel(), []

    def body():
        raise error

    with pytest.raises(SystemExit) as exited:
        tail.run_child(channel, body, also=lambda *a: also.append(a))
    assert exited.value.code == 1
    assert channel.reports == [report] and also == [report]
