"""``kubirun.api`` in bridge mode: a pod sandbox on the bridge, a container
of it serving on the pod's address; everything gone after delete.  The
embedding process runs inside the test's network namespace (see conftest)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, TEST_CGROUP_PARENT, remove_cgroup_parent

POD = """
import json, os, socket, sys, time
from kubirun.api import Runtime, Stdio

with Runtime(root=os.environ["KUBIRUN_ROOT"], store=os.environ["KUBIRUN_STORE"],
             cgroup_parent=sys.argv[2]) as rt:
    pod = rt.sandbox("pod", network="bridge", hostname="web", ports=[(18080, 8080)])
    web = rt.run_image(sys.argv[1], ["sh", "-c", "hostname | nc -l -p 8080"], sandbox=pod)
    address, answer = pod.ip_address, b""
    deadline = time.monotonic() + 20
    while not answer and time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 8080), timeout=5) as sock:
                answer = sock.recv(100)
        except OSError:
            time.sleep(0.05)
    status = web.wait(timeout=20)
    web.delete()
    pod.delete(force=True)
    print(json.dumps({"address": address, "answer": answer.decode(), "code": status.code,
                      "left": rt.list(), "store": os.listdir(os.path.join(rt.store, "containers"))}))
"""


def test_a_bridged_pod_sandbox_serves_its_containers_on_its_address(netns, busybox_tarball):
    parent = f"{TEST_CGROUP_PARENT}/bridged-pod"
    try:
        result = subprocess.run([*netns.prefix(), sys.executable, "-c", POD, str(busybox_tarball),
                                 parent], capture_output=True, text=True, timeout=120,
                                cwd=str(REPO))
    finally:
        remove_cgroup_parent(parent)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["address"].startswith("10.89.")
    assert report == dict(report, answer="web\n", code=0, left=[], store=[])
