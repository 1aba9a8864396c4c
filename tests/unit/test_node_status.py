"""A pod's status as Kubernetes shows it, driven by kubelet's rules on a
clock moved by hand: the crash-loop ladder, the 600 s reset, phases,
conditions and kubectl's STATUS column."""
from __future__ import annotations

from kubirun.node import status
from kubirun.node.clock import FakeClock
from kubirun.node.events import Events


def _tracker(clock, policy="Always", **kw) -> status.ContainerTracker:
    return status.ContainerTracker("app", "busybox.tar.gz", "app-1", policy=policy, clock=clock,
                                   pod="web", **kw)


def _run_once(tracker, clock, runs_for=1.0, code=1) -> float | None:
    tracker.creating()
    tracker.running(f"web.app.{tracker.restart_count}")
    clock.advance(runs_for)
    return tracker.exited(code)


def test_a_crash_loop_climbs_the_ladder_in_crash_loop_back_off():
    clock = FakeClock()
    tracker = _tracker(clock)
    waits, reasons = [], []
    for _ in range(9):
        wait = _run_once(tracker, clock)
        waits.append(wait)
        if wait:
            reasons.append(tracker.state["waiting"]["reason"])
            assert tracker.last_state["terminated"]["exitCode"] == 1
            clock.advance(wait)
            assert tracker.next_start() == 0
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert set(reasons) == {"CrashLoopBackOff"}
    assert tracker.restart_count == 8
    (back_off,) = [e for e in tracker.events.items if e["reason"] == "BackOff"]
    assert back_off["count"] == 8 and back_off["type"] == "Warning"  # repeated: counted
    assert tracker.state["waiting"]["message"] == \
        "back-off 300s restarting failed container=app pod=web"


def test_running_600_s_resets_the_ladder():
    clock = FakeClock()
    tracker = _tracker(clock)
    for expected in (0, 10, 20):
        wait = _run_once(tracker, clock)
        assert wait == expected
        clock.advance(wait)
        tracker.next_start()
    assert _run_once(tracker, clock, runs_for=601) == 0
    assert _run_once(tracker, clock) == 10


def test_restart_count_and_last_state_follow_each_new_instance():
    clock = FakeClock()
    tracker = _tracker(clock)
    assert _run_once(tracker, clock, code=2) == 0
    assert tracker.state["terminated"]["reason"] == "Error"
    tracker.creating()
    tracker.running("web.app.1")
    assert tracker.restart_count == 1
    assert tracker.last_state["terminated"]["exitCode"] == 2
    assert tracker.state["running"]["startedAt"] == "2026-12-07T17:00:01Z"
    assert tracker.ready and tracker.started


def test_on_failure_and_never_stop_for_good():
    clock = FakeClock()
    assert _run_once(_tracker(clock, "OnFailure"), clock, code=0) is None
    assert _run_once(_tracker(clock, "OnFailure"), clock, code=1) == 0
    never = _tracker(clock, "Never")
    assert _run_once(never, clock, code=1) is None and never.done


def test_oom_killed_is_the_terminated_reason():
    clock = FakeClock()
    tracker = _tracker(clock, "Never")
    tracker.creating()
    tracker.running("x")
    tracker.exited(137, oom_killed=True)
    assert tracker.state["terminated"]["reason"] == "OOMKilled"


def test_ready_waits_for_startup_and_readiness():
    clock = FakeClock()
    tracker = _tracker(clock, has_startup_probe=True, has_readiness_probe=True)
    tracker.creating()
    tracker.running("x")
    assert not tracker.started and not tracker.ready
    tracker.startup_succeeded()
    assert tracker.started and not tracker.ready
    tracker.readiness(True)
    assert tracker.ready
    tracker.readiness(False)
    assert not tracker.ready


def test_events_repeat_as_a_count():
    clock = FakeClock()
    events = Events(clock)
    for _ in range(3):
        events.warning("Unhealthy", "Liveness probe failed: x", "spec.containers{app}")
        clock.advance(1)
    assert len(events.items) == 1 and events.items[0]["count"] == 3


# --- the pod ---------------------------------------------------------------------------

def _s(name="a", state=None, last=None, ready=False, started=False, restarts=0) -> dict:
    return {"name": name, "state": state or {}, "lastState": last or {}, "ready": ready,
            "started": started, "restartCount": restarts}


RUNNING = {"running": {"startedAt": "t"}}
CREATING = {"waiting": {"reason": "ContainerCreating"}}
BACKOFF = {"waiting": {"reason": "CrashLoopBackOff"}}


def _done(code, reason=None):
    return {"terminated": {"exitCode": code, "reason": reason or
                           ("Completed" if code == 0 else "Error")}}


def test_phases_as_kubelet_computes_them():
    assert status.pod_phase("Always", [], [_s(state=CREATING)]) == "Pending"
    assert status.pod_phase("Always", [], [_s(state=RUNNING)]) == "Running"
    assert status.pod_phase("Always", [], [_s(state=BACKOFF, last=_done(1))]) == "Running"
    assert status.pod_phase("Always", [], [_s(state=_done(0))]) == "Running"
    assert status.pod_phase("OnFailure", [], [_s(state=_done(0))]) == "Succeeded"
    assert status.pod_phase("OnFailure", [], [_s(state=_done(1))]) == "Running"
    assert status.pod_phase("Never", [], [_s(state=_done(1))]) == "Failed"
    assert status.pod_phase("Never", [], [_s(state=_done(0)), _s("b", _done(0))]) == "Succeeded"
    assert status.pod_phase("Never", [_s("i", _done(1))], [_s(state=CREATING)]) == "Failed"
    assert status.pod_phase("Always", [_s("i", _done(1))], [_s(state=CREATING)]) == "Pending"
    assert status.pod_phase("Always", [_s("i", RUNNING, started=True)], [_s(state=RUNNING)],
                            sidecars=frozenset({"i"})) == "Running"


def test_kubectl_status_column():
    assert status.kubectl_status("Running", [], [_s(state=BACKOFF, last=_done(1), restarts=3)]) \
        == ("CrashLoopBackOff", 0, 3)
    assert status.kubectl_status("Running", [], [_s(state=RUNNING, ready=True)]) == \
        ("Running", 1, 0)
    assert status.kubectl_status("Succeeded", [], [_s(state=_done(0))])[0] == "Completed"
    assert status.kubectl_status("Failed", [], [_s(state=_done(3))])[0] == "Error"
    assert status.kubectl_status("Pending", [_s("i", RUNNING), _s("j")],
                                 [_s(state={"waiting": {"reason": "PodInitializing"}})])[0] \
        == "Init:0/2"
    assert status.kubectl_status("Pending", [_s("i", _done(1))], [_s()])[0] == "Init:Error"
    assert status.kubectl_status("Pending", [_s("i", BACKOFF, _done(1))], [_s()])[0] == \
        "Init:CrashLoopBackOff"
    assert status.kubectl_status("Running", [], [_s(state=RUNNING)], deleting=True)[0] == \
        "Terminating"


def test_conditions_name_the_unready_containers():
    transitions: dict = {}
    conditions = status.conditions([], [_s("a", RUNNING, ready=True), _s("b", RUNNING)],
                                   transitions, FakeClock.EPOCH)
    by_type = {c["type"]: c for c in conditions}
    assert by_type["Initialized"]["status"] == "True"
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Ready"]["message"] == "containers with unready status: [b]"
    assert by_type["Ready"]["lastTransitionTime"] == "2026-12-07T17:00:00Z"


def test_age_is_kubectls():
    assert [status.human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60, 30 * 3600,
                                              3 * 86400)] == \
        ["5s", "119s", "2m30s", "10m", "3h1m", "30h", "3d"]


def test_a_sidecar_stopped_after_the_containers_do_not_fail_the_pod():
    sidecar = _s("side", _done(137), started=False)
    assert status.pod_phase("Never", [sidecar], [_s(state=_done(0))],
                            sidecars=frozenset({"side"})) == "Succeeded"
