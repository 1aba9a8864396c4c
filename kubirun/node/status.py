"""A pod's status as Kubernetes shows it, and the per-container state
machine that kubelet's rules drive.

``ContainerTracker`` is one container of a pod across its restarts: it is
told what happened (created, started, exited, probe results) and answers
what kubelet would do next (restart now, wait ``N`` s of back-off, or stop
for good), keeping ``state`` (``waiting`` / ``running`` / ``terminated``
with kubelet's reasons), ``lastState``, ``restartCount``, ``ready`` and
``started``, and recording the events kubelet records.

``pod_phase``, ``conditions`` and ``kubectl_status`` compute, from the
trackers, the pod's ``phase`` (kubelet's ``getPhase``), its conditions and
the STATUS column ``kubectl get pods`` prints (``CrashLoopBackOff``,
``Init:0/1``, ``Completed``...).
"""
from __future__ import annotations

import time
from typing import Optional

from kubirun.node import backoff as backoff_rules
from kubirun.node import restart as restart_rules
from kubirun.node.clock import Clock
from kubirun.node.events import Events

RUNNING, WAITING, TERMINATED = "running", "waiting", "terminated"


def timestamp(wall: float) -> str:
    """RFC 3339, seconds, UTC: Kubernetes' ``metav1.Time``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class ContainerTracker:
    """One container of a pod, across its restarts."""

    def __init__(self, name: str, image: str, spec_key: str, *, policy: str,
                 init: bool = False, sidecar: bool = False, has_startup_probe: bool = False,
                 has_readiness_probe: bool = False, clock: Clock | None = None,
                 backoff: backoff_rules.Backoff | None = None, events: Events | None = None,
                 pod: str = "") -> None:
        self.name, self.image, self.pod = name, image, pod
        self.spec_key = spec_key  # name + spec hash: a changed spec is a new ladder
        self.policy = policy
        self.init, self.sidecar = init, sidecar
        self.has_startup_probe, self.has_readiness_probe = has_startup_probe, has_readiness_probe
        self.clock = clock or Clock()
        self.backoff = backoff or backoff_rules.Backoff(self.clock)
        self.events = events if events is not None else Events(self.clock)
        self.state: dict = {WAITING: {"reason": "PodInitializing" if not init else
                                      "ContainerCreating"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.container_id = ""
        self.finished_at: Optional[float] = None  # clock.now() of the last exit
        self.done = False  # will not run again
        self._instances = 0

    # --- what happened -------------------------------------------------------

    @property
    def object(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def creating(self) -> None:
        """About to create an instance: ``ContainerCreating`` (the first),
        and the restart counted (the next ones, as kubelet counts)."""
        if self._instances:
            self.restart_count += 1
            if TERMINATED in self.state:
                self.last_state = {TERMINATED: self.state[TERMINATED]}
        else:
            self.state = {WAITING: {"reason": "ContainerCreating"}}
        self._instances += 1
        self.events.normal("Pulled", f'Container image "{self.image}" already present on'
                           " machine", self.object)

    def failed_to_create(self, message: str) -> None:
        self.state = {WAITING: {"reason": "CreateContainerError", "message": message}}
        self.events.warning("Failed", f"Error: {message}", self.object)

    def running(self, container_id: str) -> None:
        self.container_id = container_id
        self.events.normal("Created", f"Created container {self.name}", self.object)
        self.state = {RUNNING: {"startedAt": timestamp(self.clock.wall())}}
        self._started_mono = self.clock.now()
        self.started = not self.has_startup_probe
        self.ready = not self.has_readiness_probe and self.started
        self.events.normal("Started", f"Started container {self.name}", self.object)

    def startup_succeeded(self) -> None:
        self.started = True
        if not self.has_readiness_probe:
            self.ready = True

    def readiness(self, ready: bool) -> None:
        self.ready = ready and RUNNING in self.state

    def exited(self, exit_code: int, oom_killed: bool = False, signal: int | None = None,
               pod_deleting: bool = False, reason: str | None = None) -> float | None:
        """The instance ended: its ``terminated`` state; then kubelet's
        decision: None (it stays down), 0 (restart now) or the seconds of
        back-off to wait first (``CrashLoopBackOff`` meanwhile)."""
        started_at = self.state.get(RUNNING, {}).get("startedAt", "")
        terminated = {"exitCode": exit_code,
                      "reason": reason or restart_rules.terminated_reason(exit_code, oom_killed),
                      "startedAt": started_at, "finishedAt": timestamp(self.clock.wall()),
                      "containerID": f"kubirun://{self.container_id}"}
        if signal:
            terminated["signal"] = signal
        self.state = {TERMINATED: terminated}
        self.ready = False
        self.started = False
        self.finished_at = self.clock.now()
        # A sidecar restarts whatever its exit (its own restartPolicy: Always).
        init = self.init and not self.sidecar
        if not restart_rules.should_restart(self.policy, exit_code, init, pod_deleting):
            self.done = True
            return None
        return self.next_start()

    def next_start(self) -> float:
        """0: restart now; else wait that long, ``CrashLoopBackOff``."""
        assert self.finished_at is not None
        wait = self.backoff.should_wait(self.spec_key, self.finished_at)
        if wait:
            delay = self.backoff.delay(self.spec_key)
            message = (f"back-off {delay:g}s restarting failed container={self.name}"
                       f" pod={self.pod}")
            self.last_state = {TERMINATED: self.state.get(TERMINATED) or
                               self.last_state.get(TERMINATED)}
            self.state = {WAITING: {"reason": "CrashLoopBackOff", "message": message}}
            self.events.warning("BackOff", "Back-off restarting failed container"
                                f" {self.name} in pod {self.pod}", self.object)
        return wait

    _SAVED = ("state", "last_state", "restart_count", "ready", "started", "container_id",
              "finished_at", "done", "_instances")

    def snapshot(self) -> dict:
        """What a restarted supervisor needs to go on with this container."""
        return {name: getattr(self, name) for name in self._SAVED}

    def restore(self, saved: dict) -> None:
        for name in self._SAVED:
            if name in saved:
                setattr(self, name, saved[name])

    def to_dict(self) -> dict:
        status = {"name": self.name, "state": self.state, "lastState": self.last_state,
                  "ready": self.ready, "restartCount": self.restart_count, "image": self.image,
                  "imageID": "", "started": self.started}
        if self.container_id:
            status["containerID"] = f"kubirun://{self.container_id}"
        return status


# --- the pod -------------------------------------------------------------------------

def _terminated(status: dict) -> dict | None:
    return status["state"].get(TERMINATED)


def pod_phase(policy: str, init: list[dict], regular: list[dict],
              sidecars: frozenset[str] = frozenset()) -> str:
    """kubelet's ``getPhase`` from the container statuses (``to_dict``)."""
    pending_init = failed_init = 0
    for status in init:
        state, last = status["state"], status["lastState"]
        if status["name"] in sidecars and ((RUNNING in state and status["started"])
                                           or TERMINATED in state):
            continue  # a started sidecar counts as initialized (a stopped one restarts, or
            # was stopped because the containers are done)
        if TERMINATED in state and state[TERMINATED]["exitCode"] == 0:
            continue
        if TERMINATED in state or (WAITING in state and TERMINATED in last
                                   and last[TERMINATED]["exitCode"] != 0):
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for status in regular:
        state, last = status["state"], status["lastState"]
        if RUNNING in state:
            running += 1
        elif TERMINATED in state:
            stopped += 1
            succeeded += state[TERMINATED]["exitCode"] == 0
        elif TERMINATED in last:
            stopped += 1  # waiting to restart
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if policy == "Never" else "Running"


def conditions(init: list[dict], regular: list[dict], transitions: dict[str, tuple[str, str]],
               wall: float, sidecars: frozenset[str] = frozenset()) -> list[dict]:
    """Initialized, ContainersReady, Ready, PodScheduled: kubelet's, with
    ``transitions`` (type -> last transition time) updated in place."""
    uninitialized = [s["name"] for s in init if not (
        (TERMINATED in s["state"] and s["state"][TERMINATED]["exitCode"] == 0)
        or (s["name"] in sidecars and ((RUNNING in s["state"] and s["started"])
                                       or TERMINATED in s["state"])))]
    unready = [s["name"] for s in regular if not s["ready"]]
    result = [("PodScheduled", True, "", ""),
              ("Initialized", not uninitialized, "ContainersNotInitialized",
               f"containers with incomplete status: [{' '.join(uninitialized)}]"),
              ("ContainersReady", not unready, "ContainersNotReady",
               f"containers with unready status: [{' '.join(unready)}]"),
              ("Ready", not unready, "ContainersNotReady",
               f"containers with unready status: [{' '.join(unready)}]")]
    out = []
    for kind, ok, reason, message in result:
        value = "True" if ok else "False"
        previous = transitions.get(kind)
        if previous is None or previous[0] != value:
            transitions[kind] = (value, timestamp(wall))
        condition = {"type": kind, "status": value,
                     "lastTransitionTime": transitions[kind][1]}
        if not ok:
            condition.update(reason=reason, message=message)
        out.append(condition)
    return out


def kubectl_status(phase: str, init: list[dict], regular: list[dict], deleting: bool = False,
                   sidecars: frozenset[str] = frozenset()) -> tuple[str, int, int]:
    """kubectl get pods' STATUS, with READY's count and RESTARTS (as its
    ``printPod``)."""
    reason = phase
    restarts = sum(s["restartCount"] for s in init) + sum(s["restartCount"] for s in regular)
    ready = 0
    initializing = False
    for i, status in enumerate(init):
        state = status["state"]
        if TERMINATED in state and state[TERMINATED]["exitCode"] == 0:
            continue
        if status["name"] in sidecars and ((RUNNING in state and status["started"])
                                           or TERMINATED in state):
            continue
        if TERMINATED in state:
            term = state[TERMINATED]
            reason = ("Init:" + term["reason"]) if term.get("reason") else \
                f"Init:ExitCode:{term['exitCode']}"
        elif WAITING in state and state[WAITING].get("reason") not in (None, "",
                                                                        "PodInitializing"):
            reason = "Init:" + state[WAITING]["reason"]
        else:
            reason = f"Init:{i}/{len(init)}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for status in reversed(regular):
            state = status["state"]
            if WAITING in state and state[WAITING].get("reason"):
                reason = state[WAITING]["reason"]
            elif TERMINATED in state and state[TERMINATED].get("reason"):
                reason = state[TERMINATED]["reason"]
            elif TERMINATED in state:
                reason = f"ExitCode:{state[TERMINATED]['exitCode']}"
            elif RUNNING in state and status["ready"]:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    else:
        ready = sum(1 for s in regular if s["ready"])
    if deleting:
        reason = "Terminating"
    return reason, ready, restarts


def human_duration(seconds: float) -> str:
    """kubectl's AGE (``duration.HumanDuration``)."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d < 365 * 8 else f"{d // 365}y"
