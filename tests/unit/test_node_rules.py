"""kubelet's rules in kubirun.node, on a clock moved by hand: the back-off
ladder, restart policies, probe thresholds (the checks themselves:
test_node_checks.py)."""
from __future__ import annotations

import pytest

from kubirun.node import backoff, prober, restart
from kubirun.node.clock import FakeClock


# --- back-off --------------------------------------------------------------------

def _exit_and_restart(ladder: backoff.Backoff, clock: FakeClock, runs_for: float) -> float:
    """A container that ran ``runs_for`` s exits; kubelet's syncs wait as
    long as it is in back-off, then restart it.  How long they waited."""
    clock.advance(runs_for)
    finished = clock.now()
    wait = ladder.should_wait("c", finished)
    if wait:
        clock.advance(wait)
        assert ladder.should_wait("c", finished) == 0.0  # over: restarted now
    return wait


def _crash_loop(runs_for: float, exits: int) -> list[float]:
    clock = FakeClock()
    ladder = backoff.Backoff(clock)
    return [_exit_and_restart(ladder, clock, runs_for) for _ in range(exits)]


def test_the_ladder_is_immediate_then_10_doubling_to_300():
    # (each wait counted as kubelet does: from the exit; the container ran 1 s)
    assert _crash_loop(1, 9) == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_a_container_that_ran_600_s_starts_the_ladder_again():
    clock = FakeClock()
    ladder = backoff.Backoff(clock)
    assert [_exit_and_restart(ladder, clock, 1) for _ in range(4)] == [0, 10, 20, 40]
    assert _exit_and_restart(ladder, clock, 601) == 0  # ran more than twice the maximum
    assert ladder.delay("c") == 10
    assert _exit_and_restart(ladder, clock, 1) == 10


def test_another_spec_is_another_ladder():
    clock = FakeClock()
    ladder = backoff.Backoff(clock)
    assert ladder.should_wait("c-hash1", clock.now()) == 0.0
    clock.advance(1)
    assert ladder.should_wait("c-hash1", clock.now()) == 10
    assert ladder.should_wait("c-hash2", clock.now()) == 0.0  # a new ladder


# --- restart policy ------------------------------------------------------------------

@pytest.mark.parametrize("policy, code, init, restarts", [
    ("Always", 0, False, True), ("Always", 1, False, True),
    ("OnFailure", 0, False, False), ("OnFailure", 137, False, True),
    ("Never", 1, False, False),
    ("Always", 0, True, False), ("Always", 1, True, True),  # init: Always is OnFailure
    ("Never", 1, True, False),
])
def test_should_restart(policy, code, init, restarts):
    assert restart.should_restart(policy, code, init_container=init) is restarts


def test_a_pod_being_deleted_restarts_nothing():
    assert restart.should_restart("Always", 1, pod_deleting=True) is False


def test_terminated_reasons():
    assert [restart.terminated_reason(0, False), restart.terminated_reason(2, False),
            restart.terminated_reason(137, True)] == ["Completed", "Error", "OOMKilled"]


# --- probe workers ------------------------------------------------------------------

def _worker(probe_type: str, clock, **numbers) -> prober.Worker:
    raw = {"exec": {"command": ["true"]}, **numbers}
    return prober.Worker(prober.Probe(raw, probe_type, "probe"), clock)


def test_initial_results_are_readiness_failure_and_liveness_success():
    clock = FakeClock()
    assert _worker(prober.READINESS, clock).result == prober.FAILURE
    assert _worker(prober.LIVENESS, clock).result == prober.SUCCESS
    assert _worker(prober.STARTUP, clock).result == prober.SUCCESS


def test_no_probe_before_the_initial_delay_then_one_per_period():
    clock = FakeClock()
    worker = _worker(prober.LIVENESS, clock, initialDelaySeconds=5, periodSeconds=2)
    worker.container_running("c1", clock.now())
    assert not worker.due()
    clock.advance(5)
    assert worker.due()
    worker.record(prober.SUCCESS)
    clock.advance(1.9)
    assert not worker.due()
    clock.advance(0.1)
    assert worker.due()


def test_a_result_flips_only_after_its_threshold_in_a_row():
    clock = FakeClock()
    worker = _worker(prober.READINESS, clock, failureThreshold=3, successThreshold=2)
    worker.container_running("c1", clock.now())
    assert worker.record(prober.SUCCESS) is False and worker.result == prober.FAILURE
    assert worker.record(prober.SUCCESS) is True and worker.result == prober.SUCCESS
    worker.record(prober.FAILURE)
    worker.record(prober.FAILURE)
    worker.record(prober.SUCCESS)  # the run of failures starts again
    worker.record(prober.FAILURE)
    worker.record(prober.FAILURE)
    assert worker.result == prober.SUCCESS
    assert worker.record(prober.FAILURE) is True and worker.result == prober.FAILURE


def test_after_a_liveness_failure_the_worker_holds_until_a_new_container_runs():
    clock = FakeClock()
    worker = _worker(prober.LIVENESS, clock, failureThreshold=1)
    worker.container_running("c1", clock.now())
    assert worker.record(prober.FAILURE) is True
    clock.advance(100)
    assert not worker.due()
    worker.container_running("c1", clock.now())  # the same one: still held
    assert not worker.due()
    worker.container_running("c2", clock.now())
    assert worker.due() and worker.result == prober.SUCCESS


def test_startup_gates_liveness_and_readiness_and_stops_once_it_succeeded():
    clock = FakeClock()
    startup, liveness = _worker(prober.STARTUP, clock), _worker(prober.LIVENESS, clock)
    for worker in (startup, liveness):
        worker.container_running("c1", clock.now())
    assert startup.due(started=False) and not liveness.due(started=False)
    assert not startup.due(started=True) and liveness.due(started=True)


@pytest.mark.parametrize("raw, says", [
    ({"exec": {"command": ["true"]}, "successThreshold": 2}, "successThreshold: must be 1"),
    ({"exec": {}, "tcpSocket": {}}, "exactly one of"),
    ({"tcpSocket": {"port": 1}, "periodSeconds": "10"}, "periodSeconds: expected"),
])
def test_bad_probes_say_where(raw, says):
    with pytest.raises(prober.ProbeError, match=says):
        prober.Probe(raw, prober.LIVENESS, "spec.containers[0].livenessProbe")
