"""Probes, with kubelet's semantics (``pkg/kubelet/prober``).

A ``Worker`` per container and probe type (liveness, readiness, startup)
decides when to probe and what the result is:

    initial result      readiness Failure, liveness and startup Success
    before probing      the container runs; ``initialDelaySeconds`` have
                        passed since it started; for liveness and
                        readiness, its startup probe (if any) succeeded;
                        a startup probe that succeeded probes no more
    thresholds          the result flips only after ``failureThreshold``
                        failures or ``successThreshold`` successes in a row
    after a liveness    the worker holds (no probes) until a new container
    or startup failure  runs: the kubelet is restarting this one

The checks themselves (exec, httpGet, tcpSocket: a result plus the output
kubelet puts in the ``Unhealthy`` event) are in ``kubirun.node.checks``,
grpc's in ``kubirun.node.grpcprobe``.
"""
from __future__ import annotations

from kubirun.node.clock import Clock

SUCCESS, FAILURE, UNKNOWN = "Success", "Failure", "Unknown"
LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
MAX_BODY = 10 * 1024
MAX_REDIRECTS = 10
DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
            "successThreshold": 1, "failureThreshold": 3}
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


class ProbeError(ValueError):
    """A probe in a manifest that kubelet would refuse; says where."""


class Probe:
    """A probe of a manifest: its handler and its numbers, defaulted and
    checked as the API server does."""

    def __init__(self, raw: dict, probe_type: str, where: str) -> None:
        if not isinstance(raw, dict):
            raise ProbeError(f"{where}: expected an object")
        handlers = [name for name in HANDLERS if name in raw]
        if len(handlers) != 1:
            raise ProbeError(f"{where}: exactly one of {', '.join(HANDLERS)} is required")
        self.handler, self.params = handlers[0], raw[handlers[0]]
        self.type = probe_type
        for key, default in DEFAULTS.items():
            value = raw.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ProbeError(f"{where}.{key}: expected a non-negative integer")
            setattr(self, _attribute(key), value)
        if self.period < 1 or self.timeout < 1 or self.success_threshold < 1 \
                or self.failure_threshold < 1:
            raise ProbeError(f"{where}: periodSeconds, timeoutSeconds and the thresholds"
                             " must be at least 1")
        if probe_type in (LIVENESS, STARTUP) and self.success_threshold != 1:
            raise ProbeError(f"{where}.successThreshold: must be 1 for {probe_type} probes")
        grace = raw.get("terminationGracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or grace < 1):
            raise ProbeError(f"{where}.terminationGracePeriodSeconds: expected a positive integer")
        self.termination_grace = grace


def _attribute(key: str) -> str:
    return {"initialDelaySeconds": "initial_delay", "periodSeconds": "period",
            "timeoutSeconds": "timeout", "successThreshold": "success_threshold",
            "failureThreshold": "failure_threshold"}[key]


class Worker:
    """One probe of one container: when to probe, and the result."""

    def __init__(self, probe: Probe, clock: Clock | None = None) -> None:
        self.probe = probe
        self.clock = clock or Clock()
        self.result = FAILURE if probe.type == READINESS else SUCCESS
        self._container: str | None = None
        self._started_at = 0.0
        self._last = UNKNOWN
        self._run = 0
        self._on_hold = False
        self._next_probe = 0.0

    def container_running(self, container: str, started_at: float) -> None:
        """The container (its id) runs since ``started_at``: a new one
        ends a hold and starts afresh."""
        if container != self._container:
            self._container, self._started_at = container, started_at
            self._on_hold, self._last, self._run = False, UNKNOWN, 0
            self.result = FAILURE if self.probe.type == READINESS else SUCCESS
            self._next_probe = started_at + self.probe.initial_delay

    def container_stopped(self) -> None:
        self._container = None
        if self.probe.type == READINESS:
            self.result = FAILURE

    def due(self, started: bool = True) -> bool:
        """Probe now?  ``started``: the container's startup probe (if any)
        has succeeded."""
        if self._container is None or self._on_hold:
            return False
        if self.probe.type == STARTUP and started:
            return False  # done: a startup probe succeeds once
        if self.probe.type != STARTUP and not started:
            return False  # liveness and readiness wait for startup
        return self.clock.now() >= self._next_probe

    def seconds_until_due(self) -> float:
        """How long until the next probe is due (gates aside)."""
        return max(0.0, self._next_probe - self.clock.now())

    def record(self, result: str) -> bool:
        """A probe's result; True if the worker's result changed."""
        self._next_probe = self.clock.now() + self.probe.period
        if result == self._last:
            self._run += 1
        else:
            self._last, self._run = result, 1
        if (result == FAILURE and self._run < self.probe.failure_threshold) or \
                (result == SUCCESS and self._run < self.probe.success_threshold):
            return False
        changed = result != self.result
        self.result = result
        if self.probe.type in (LIVENESS, STARTUP) and result == FAILURE:
            self._on_hold, self._run = True, 0  # until the restarted container runs
        return changed
