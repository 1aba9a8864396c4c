"""kubirun's node supervisor with bridged pods: the pod's address in its
status, and probes sent to it from the supervisor's own network namespace
(as kubelet probes the pod IP), not on sockets made in the pod's.  The
supervisor runs inside the test's network namespace (see conftest)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, TEST_CGROUP_PARENT, remove_cgroup_parent

NODE = """
import asyncio, json, os, sys
from kubirun.node.supervisor import Node

async def main():
    node = Node(sys.argv[3], network="bridge",
                store=os.environ["KUBIRUN_STORE"], cgroup_parent=sys.argv[2])
    try:
        await node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                          "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "app", "image": sys.argv[1], "ports": [{"containerPort": 8080}],
            "command": ["sh", "-c", "mkdir /www; echo ok > /www/index.html;"
                        " exec httpd -f -p 8080 -h /www"],
            "readinessProbe": {"httpGet": {"port": 8080}, "periodSeconds": 1}}]}})
        for _ in range(400):
            pod = node.status("web")
            if pod["status"]["containerStatuses"][0]["ready"]:
                break
            await asyncio.sleep(0.05)
        # probes' sockets made here, not by the fork server in the pod's namespace
        in_pod = node.pods["web"].dialer.sandbox is not None
        return {"ready": pod["status"]["containerStatuses"][0]["ready"],
                "podIP": pod["status"].get("podIP"), "in_pod": in_pod}
    finally:
        await node.close()

print(json.dumps(asyncio.run(main())))
"""


def test_a_bridged_pod_has_its_address_and_is_probed_on_it(netns, busybox_tarball, tmp_path):
    parent = f"{TEST_CGROUP_PARENT}/node-bridge"
    root = tmp_path / "node"
    try:
        result = subprocess.run([*netns.prefix(), sys.executable, "-c", NODE,
                                 str(busybox_tarball), parent, str(root)],
                                capture_output=True, text=True,
                                timeout=120, cwd=str(REPO))
    finally:
        remove_cgroup_parent(parent)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["podIP"].startswith("10.89.")
    assert report == dict(report, ready=True, in_pod=False)
    pool = root / "containers" / "network:kubi0"
    assert [n for n in os.listdir(pool) if n[0].isdigit()] == [], "a lease left behind"
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                 if not d.startswith(str(pool))]
    assert not leftovers, f"left behind: {leftovers}"
