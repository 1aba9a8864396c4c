"""containerd's CRI drives the runtime under test as kubelet does (through
the runc v2 shim): a pod's whole life, one behaviour per test, with every
runtime of the ``oci_runtime`` fixture (a CRI runtime handler each)."""
from __future__ import annotations

import uuid

from tests.engines.harness import (
    CRI_CGROUP_PARENT,
    CRI_NAMESPACE,
    IMAGE,
    cgroup_tops,
    names_under,
    pids_mentioning,
    wait_for,
)


def _mount_points(pid: int) -> list[str]:
    """The mount points in the mount namespace of process ``pid`` (the
    daemon's: in the covered view it is not ours)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


def _leftovers(daemon, handler: str, ids: list[str]) -> list[str]:
    """What is left of the pod and container ``ids``, anywhere."""
    found = []
    for top in cgroup_tops(CRI_CGROUP_PARENT):
        found += [f"cgroup {d}" for d in names_under(top) if d.name in ids and d.is_dir()]
    found += [f"mount {m}" for m in _mount_points(daemon.process.pid) if any(i in m for i in ids)]
    state = daemon.runtime_root(handler) / CRI_NAMESPACE
    found += [f"runtime state {p}" for p in state.glob("*") if p.name in ids]
    for where in (daemon.base / "state", daemon.base / "root"):
        found += [f"containerd's {p}" for p in names_under(where) if p.name in ids]
    found += [f"process {p}" for i in ids for p in pids_mentioning(i)]
    for kind in ("tasks", "containers"):
        listed = daemon.ctr(kind, "list", "--quiet", namespace=CRI_NAMESPACE).stdout.split()
        found += [f"{kind} {i}" for i in listed if i in ids]
    return found


def test_a_pod_stopped_and_removed_after_its_container_exited_leaves_nothing(cri, cri_containerd, tmp_path):
    client, handler = cri
    logs = tmp_path / "logs"
    logs.mkdir()
    config = client.pod_config(f"pod-{handler}", uuid.uuid4().hex,
                               f"/{CRI_CGROUP_PARENT}/pod-{uuid.uuid4().hex[:10]}", str(logs))
    pod = client.run_pod_sandbox(config, handler)
    container = client.create_container(pod, config, "c1", IMAGE,
                                        ["sh", "-c", "echo from the pod; exit 3"], "c1.log")
    client.start_container(container)
    assert client.wait_exited(container) == 3
    # What kubelet does next: StopContainer of the exited container (the
    # shim's `kill --all ID 9`, which must not fail), then the removals.
    client.stop_container(container, timeout=0)
    client.remove_container(container)
    client.stop_pod_sandbox(pod)
    client.remove_pod_sandbox(pod)
    assert "from the pod" in (logs / "c1.log").read_text()
    assert pod not in client.list_pod_sandboxes() and container not in client.list_containers()
    wait_for(lambda: not _leftovers(cri_containerd, handler, [pod, container]), timeout=5)
    left = _leftovers(cri_containerd, handler, [pod, container])
    assert not left, f"left behind: {left}"
