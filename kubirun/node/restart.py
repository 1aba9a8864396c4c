"""Which exited container restarts: kubelet's ``ShouldContainerBeRestarted``
by the pod's ``restartPolicy``.

    Always     every exit
    OnFailure  a non-zero exit (or a death by signal)
    Never      none

Init containers: ``Always`` behaves as ``OnFailure`` (an init container
that succeeded is done); with ``Never`` a failed one fails the pod.  A pod
being deleted restarts nothing.
"""
from __future__ import annotations

POLICIES = ("Always", "OnFailure", "Never")


def should_restart(policy: str, exit_code: int, init_container: bool = False,
                   pod_deleting: bool = False) -> bool:
    if policy not in POLICIES:
        raise ValueError(f"restartPolicy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    if pod_deleting:
        return False
    if init_container and policy == "Always":
        policy = "OnFailure"
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def terminated_reason(exit_code: int, oom_killed: bool) -> str:
    """The ``terminated.reason`` kubelet shows."""
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"
