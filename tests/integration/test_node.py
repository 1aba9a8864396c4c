"""kubirun's node supervisor with real containers (the busybox image, network
"none"): kubelet's restart policies and back-off, probes, hooks, logs, and
nothing left behind once a pod is deleted.  Kubelet's minutes are made
seconds only through the clock (``FastClock``), never by changing a rule."""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.conftest import BUSYBOX_IMAGE, TEST_CGROUP_PARENT, remove_cgroup_parent


def _pod(name: str, *containers: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": list(containers), **spec}}


def _container(name: str, script: str, **more) -> dict:
    return {"name": name, "image": str(BUSYBOX_IMAGE), "command": ["sh", "-c", script], **more}


def _run(tmp_path, scenario, clock=None):
    """Run ``scenario(node)`` in a new event loop; the node closed after
    (every pod deleted), and its root left empty."""
    from kubirun.node.supervisor import Node

    root = tmp_path / "node"

    async def main():
        node = Node(str(root), store=str(tmp_path / "store"), clock=clock,
                    cgroup_parent=f"{TEST_CGROUP_PARENT}/node")
        try:
            return await scenario(node)
        finally:
            await node.close()

    try:
        result = asyncio.run(main())
    finally:
        remove_cgroup_parent(f"{TEST_CGROUP_PARENT}/node")
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    assert not leftovers, f"left behind: {leftovers}"
    return result


async def _until(node, name, predicate, timeout=30.0):
    """Poll the pod's status until ``predicate(pod)``; the pod."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pod = node.status(name)
        if predicate(pod):
            return pod
        if loop.time() > deadline:
            raise AssertionError(f"timed out; the pod: {pod['status']}; events:"
                                 f" {[(e['reason'], e['message']) for e in node.events(name)]}")
        await asyncio.sleep(0.05)


def _children() -> dict[int, str]:
    """Our child processes: pid: command line."""
    found = {}
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if ppid == os.getpid():
            found[int(pid)] = cmdline
    return found


def _container_status(pod, name=None, init=False):
    statuses = pod["status"]["initContainerStatuses" if init else "containerStatuses"]
    return statuses[0] if name is None else next(s for s in statuses if s["name"] == name)


def test_a_healthy_pod_runs_and_its_output_is_logged_in_cri_format(tmp_path):
    async def scenario(node):
        await node.apply(_pod("web", _container("app", "echo hello; echo oops >&2; sleep 100")))
        pod = await _until(node, "web", lambda p: p["status"]["phase"] == "Running")
        status = _container_status(pod)
        assert status["ready"] and status["started"] and status["restartCount"] == 0
        assert "running" in status["state"]
        lines = []
        for _ in range(100):
            lines = node.logs("web")
            if len(lines) == 2:
                break
            await asyncio.sleep(0.05)
        streams = sorted((line.split(" ")[1], line.split(" ", 3)[3]) for line in lines)
        assert streams == [("stderr", "oops"), ("stdout", "hello")]
        assert all(line.split(" ")[2] == "F" and line.split(" ")[0].endswith("Z")
                   for line in lines)
        reasons = [e["reason"] for e in node.events("web")]
        assert reasons == ["Pulled", "Created", "Started"]
        await node.delete("web", grace=0)
        assert node.list() == []

    _run(tmp_path, scenario)


def test_a_crash_loop_restarts_with_the_ladder_and_shows_crash_loop_back_off(tmp_path):
    from kubirun.node.clock import FastClock

    async def scenario(node):
        await node.apply(_pod("crash", _container("app", "echo run; exit 1")))
        # 10 s, 20 s, 40 s of back-off are 0.2, 0.4, 0.8 s at 50 times the speed
        await _until(node, "crash", lambda p: _container_status(p)["restartCount"] >= 3)
        seen = await _until(node, "crash", lambda p: "waiting" in _container_status(p)["state"])
        status = _container_status(seen)
        assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert status["lastState"]["terminated"]["reason"] == "Error"
        assert seen["status"]["phase"] == "Running"  # restartPolicy Always
        back_off = [e for e in node.events("crash") if e["reason"] == "BackOff"]
        assert back_off and back_off[0]["type"] == "Warning"
        assert node.logs("crash", previous=True)[-1].endswith("stdout F run")
        assert seen["status"]["conditions"][2] == {**seen["status"]["conditions"][2],
                                                   "type": "ContainersReady", "status": "False"}

    _run(tmp_path, scenario, clock=FastClock(50))


@pytest.mark.parametrize("policy, code, phase, restarts", [
    ("Never", 1, "Failed", 0), ("Never", 0, "Succeeded", 0),
    ("OnFailure", 0, "Succeeded", 0),
])
def test_a_container_that_exits_under_never_and_on_failure(tmp_path, policy, code, phase,
                                                           restarts):
    async def scenario(node):
        await node.apply(_pod("once", _container("app", f"exit {code}"), restartPolicy=policy))
        pod = await _until(node, "once", lambda p: p["status"]["phase"] == phase)
        status = _container_status(pod)
        assert status["restartCount"] == restarts
        assert status["state"]["terminated"]["exitCode"] == code
        assert status["state"]["terminated"]["reason"] == ("Completed" if code == 0 else "Error")

    _run(tmp_path, scenario)


def test_on_failure_restarts_a_failed_container_until_it_succeeds(tmp_path):
    async def scenario(node):
        # the emptyDir outlives the instances: the second one succeeds
        script = "test -e /data/ran && exit 0; touch /data/ran; exit 3"
        await node.apply(_pod("retry", _container(
            "app", script, volumeMounts=[{"name": "data", "mountPath": "/data"}]),
            restartPolicy="OnFailure", volumes=[{"name": "data", "emptyDir": {}}]))
        pod = await _until(node, "retry", lambda p: p["status"]["phase"] == "Succeeded")
        status = _container_status(pod)
        assert status["restartCount"] == 1
        assert status["lastState"]["terminated"]["exitCode"] == 3

    _run(tmp_path, scenario)


def test_init_containers_run_in_order_before_the_containers(tmp_path):
    async def scenario(node):
        volume = [{"name": "data", "mountPath": "/data"}]
        await node.apply(_pod(
            "init", _container("app", "cat /data/order; sleep 100", volumeMounts=volume),
            initContainers=[_container("first", "echo first >> /data/order", volumeMounts=volume),
                            _container("second", "echo second >> /data/order",
                                       volumeMounts=volume)],
            volumes=[{"name": "data", "emptyDir": {}}]))
        pod = await _until(node, "init", lambda p: p["status"]["phase"] == "Running")
        assert [s["state"]["terminated"]["reason"]
                for s in pod["status"]["initContainerStatuses"]] == ["Completed", "Completed"]
        for _ in range(100):
            if len(node.logs("init")) == 2:
                break
            await asyncio.sleep(0.05)
        assert [line.split(" ", 3)[3] for line in node.logs("init")] == ["first", "second"]
        await node.delete("init", grace=0)

    _run(tmp_path, scenario)


def test_a_failed_init_container_under_never_fails_the_pod(tmp_path):
    async def scenario(node):
        await node.apply(_pod("badinit", _container("app", "sleep 100"), restartPolicy="Never",
                              initContainers=[_container("setup", "exit 2")]))
        pod = await _until(node, "badinit", lambda p: p["status"]["phase"] == "Failed")
        assert "waiting" in _container_status(pod)["state"]  # never started
        from kubirun.node.status import kubectl_status
        assert kubectl_status(pod["status"]["phase"], pod["status"]["initContainerStatuses"],
                              pod["status"]["containerStatuses"])[0] == "Init:Error"

    _run(tmp_path, scenario)


def test_a_failing_liveness_probe_restarts_the_container_with_an_unhealthy_event(tmp_path):
    async def scenario(node):
        probe = {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1,
                 "failureThreshold": 1}
        await node.apply(_pod("live", _container(
            "app", "touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 100",
            livenessProbe=probe), terminationGracePeriodSeconds=1))
        pod = await _until(node, "live", lambda p: _container_status(p)["restartCount"] >= 1)
        events = node.events("live")
        unhealthy = [e for e in events if e["reason"] == "Unhealthy"]
        assert unhealthy and unhealthy[0]["message"].startswith("Liveness probe failed: cat:")
        assert any(e["reason"] == "Killing" and "failed liveness probe, will be restarted"
                   in e["message"] for e in events)
        # busybox sh as PID 1 ignores TERM: KILL after the grace period
        assert _container_status(pod)["lastState"]["terminated"]["exitCode"] == 137
        await node.delete("live", grace=0)

    _run(tmp_path, scenario)


def test_readiness_toggles_ready_without_restarts(tmp_path):
    async def scenario(node):
        probe = {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1,
                 "failureThreshold": 1}
        await node.apply(_pod("ready", _container("app", "sleep 100", readinessProbe=probe)))
        pod = await _until(node, "ready", lambda p: p["status"]["phase"] == "Running")
        assert not _container_status(pod)["ready"]
        await node.exec("ready", None, ["touch", "/tmp/ready"])
        pod = await _until(node, "ready", lambda p: _container_status(p)["ready"])
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        await node.exec("ready", None, ["rm", "/tmp/ready"])
        pod = await _until(node, "ready", lambda p: not _container_status(p)["ready"])
        assert _container_status(pod)["restartCount"] == 0
        await node.delete("ready", grace=0)

    _run(tmp_path, scenario)


def test_an_http_liveness_probe_reaches_the_pods_own_network_and_restarts_on_errors(tmp_path):
    # network "none": the server listens on the pod's loopback, which only
    # the probe's sockets (made in the pod's namespace) can reach
    before = _children()  # (the suite's own, from other tests' fixtures)

    async def scenario(node):
        probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1,
                 "failureThreshold": 2}
        script = ("mkdir -p /www; echo ok > /www/healthz;"
                  " httpd -f -p 127.0.0.1:8080 -h /www & sleep 2; rm /www/healthz; sleep 100")
        await node.apply(_pod("http", _container(
            "app", script, ports=[{"name": "http", "containerPort": 8080}],
            livenessProbe=probe), terminationGracePeriodSeconds=1))
        await _until(node, "http", lambda p: _container_status(p)["restartCount"] >= 1)
        # no helper process: the probe's sockets came from the fork server
        new = {pid: cmd for pid, cmd in _children().items()
               if pid not in before and pid != node.runtime._server.pid}
        assert new == {}
        unhealthy = [e["message"] for e in node.events("http") if e["reason"] == "Unhealthy"]
        assert "Liveness probe failed: HTTP probe failed with statuscode: 404" in unhealthy
        await node.delete("http", grace=0)

    _run(tmp_path, scenario)


def test_a_tcp_readiness_probe_and_two_containers_talking_over_localhost(tmp_path):
    async def scenario(node):
        probe = {"tcpSocket": {"port": 9000}, "periodSeconds": 1}
        await node.apply(_pod(
            "pair",
            _container("server", "while true; do echo hi | nc -l -p 9000; done",
                       readinessProbe=probe),
            _container("client", "sleep 100")))
        await _until(node, "pair", lambda p: _container_status(p, "server")["ready"])
        code, output = await node.exec("pair", "client", ["nc", "127.0.0.1", "9000"], timeout=5)
        assert (code, output.strip()) == (0, "hi")
        await node.delete("pair", grace=0)

    _run(tmp_path, scenario)


def test_an_exec_probe_that_times_out_fails(tmp_path):
    async def scenario(node):
        probe = {"exec": {"command": ["sleep", "10"]}, "periodSeconds": 1, "timeoutSeconds": 1}
        await node.apply(_pod("slow", _container("app", "sleep 100", readinessProbe=probe)))
        await _until(node, "slow", lambda p: any(e["reason"] == "Unhealthy"
                                                 for e in node.events("slow")))
        (event, *_) = [e for e in node.events("slow") if e["reason"] == "Unhealthy"]
        assert event["message"] == "Readiness probe failed: command ['sleep', '10'] timed out"
        assert not _container_status(node.status("slow"))["ready"]
        await node.delete("slow", grace=0)

    _run(tmp_path, scenario)


def test_startup_gates_liveness_until_it_succeeds(tmp_path):
    async def scenario(node):
        startup = {"exec": {"command": ["test", "-e", "/tmp/up"]}, "periodSeconds": 1,
                   "failureThreshold": 30}
        liveness = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}
        await node.apply(_pod("gate", _container("app", "sleep 100", startupProbe=startup,
                                                 livenessProbe=liveness),
                              terminationGracePeriodSeconds=1))
        await asyncio.sleep(2.5)
        pod = node.status("gate")
        assert not _container_status(pod)["started"]
        assert _container_status(pod)["restartCount"] == 0  # liveness held back
        assert not any(e["message"].startswith("Liveness") for e in node.events("gate"))
        await node.exec("gate", None, ["touch", "/tmp/up"])
        await _until(node, "gate", lambda p: _container_status(p)["restartCount"] >= 1)
        await node.delete("gate", grace=0)

    _run(tmp_path, scenario)


def test_pre_stop_runs_before_term_and_kill_follows_the_grace_period(tmp_path):
    async def scenario(node):
        hook = {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop > /proc/1/fd/1"]}}}
        await node.apply(_pod("stop", _container("app", "sleep 100", lifecycle=hook),
                              terminationGracePeriodSeconds=1))
        await _until(node, "stop", lambda p: p["status"]["phase"] == "Running")
        loop = asyncio.get_running_loop()
        began = loop.time()
        statuses = []
        watcher = asyncio.ensure_future(_collect(node, statuses))
        await node.delete("stop")
        took = loop.time() - began
        watcher.cancel()
        # TERM is ignored by sh as PID 1: KILL after at least the 2 s kubelet leaves
        assert took >= 2.0
        assert [e["reason"] for e in statuses][:1] == ["Killing"]

    _run(tmp_path, scenario)


async def _collect(node, into):
    async for event in node.watch():
        into.append(event)


def test_a_memory_limit_kills_with_oom_killed(tmp_path):
    async def scenario(node):
        await node.apply(_pod("oom", _container(
            "app", "x=a; while true; do x=$x$x; done",
            resources={"limits": {"memory": "16Mi"}}), restartPolicy="Never"))
        pod = await _until(node, "oom", lambda p: p["status"]["phase"] == "Failed")
        terminated = _container_status(pod)["state"]["terminated"]
        assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)

    _run(tmp_path, scenario)


def test_a_bad_manifest_starts_nothing(tmp_path):
    from kubirun.api import KubirunError

    async def scenario(node):
        bad = _pod("bad", _container("app", "sleep 1", livenessProbe={
            "exec": {"command": ["true"]}, "periodSeconds": "1"}))
        with pytest.raises(KubirunError, match=r"spec.containers\[0\].livenessProbe.periodSeconds:"
                           " expected an integer"):
            await node.apply(bad)
        assert node.list() == [] and node.runtime.list() == []

    _run(tmp_path, scenario)


def test_a_sidecar_starts_before_the_next_init_container_and_stops_after_the_containers(
        tmp_path):
    async def scenario(node):
        volume = [{"name": "data", "mountPath": "/data"}]
        events = []
        watcher = asyncio.ensure_future(_collect(node, events))
        await node.apply(_pod(
            "side", _container("app", "echo app >> /data/order; sleep 1", volumeMounts=volume),
            restartPolicy="Never", terminationGracePeriodSeconds=1,
            initContainers=[
                _container("helper", "echo sidecar >> /data/order; sleep 100",
                           restartPolicy="Always", volumeMounts=volume,
                           startupProbe={"exec": {"command": ["test", "-s", "/data/order"]},
                                         "periodSeconds": 1}),
                _container("setup", "echo setup >> /data/order", volumeMounts=volume)],
            volumes=[{"name": "data", "emptyDir": {}}]))
        await _until(node, "side", lambda p: p["status"]["phase"] == "Succeeded")
        # then the sidecar is stopped, for good
        pod = await _until(node, "side", lambda p: "terminated" in _container_status(
            p, "helper", init=True)["state"])
        assert _container_status(pod, "helper", init=True)["restartCount"] == 0
        assert pod["status"]["phase"] == "Succeeded"
        order_file = os.path.join(node.root, "pods", "side", "volumes", "data", "order")
        with open(order_file) as f:
            assert f.read().split() == ["sidecar", "setup", "app"]
        started = [e["object"] for e in events if e["reason"] == "Started"]
        assert started == ["spec.initContainers{helper}", "spec.initContainers{setup}",
                           "spec.containers{app}"]
        assert [e["object"] for e in events if e["reason"] == "Killing"] == \
            ["spec.initContainers{helper}"]
        watcher.cancel()

    _run(tmp_path, scenario)


def test_a_failing_post_start_hook_kills_the_container(tmp_path):
    async def scenario(node):
        hook = {"postStart": {"exec": {"command": ["sh", "-c", "echo no; exit 1"]}}}
        await node.apply(_pod("hook", _container("app", "sleep 100", lifecycle=hook),
                              restartPolicy="Never", terminationGracePeriodSeconds=1))
        pod = await _until(node, "hook", lambda p: p["status"]["phase"] == "Failed")
        assert _container_status(pod)["state"]["terminated"]["exitCode"] == 137
        failed = [e for e in node.events("hook") if e["reason"] == "FailedPostStartHook"]
        assert failed and failed[0]["message"].startswith("PostStartHook failed: no")

    _run(tmp_path, scenario)


def test_pre_stop_runs_before_the_stop_signal(tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    async def scenario(node):
        hook = {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /out/order"]}}}
        script = "trap 'echo term >> /out/order; exit 0' TERM; while true; do sleep 0.1; done"
        await node.apply(_pod("order", _container(
            "app", script, lifecycle=hook, volumeMounts=[{"name": "out", "mountPath": "/out"}]),
            volumes=[{"name": "out", "hostPath": {"path": str(out)}}]))
        await _until(node, "order", lambda p: p["status"]["phase"] == "Running")
        await node.delete("order")

    _run(tmp_path, scenario)
    assert (out / "order").read_text().split() == ["prestop", "term"]


def test_watch_is_also_a_plain_iterator_for_another_thread(tmp_path):
    import threading

    seen = []

    async def scenario(node):
        events = node.watch()
        thread = threading.Thread(target=lambda: seen.extend(events))
        thread.start()
        await node.apply(_pod("watched", _container("app", "exit 0"), restartPolicy="Never"))
        await _until(node, "watched", lambda p: p["status"]["phase"] == "Succeeded")
        await node.delete("watched", grace=0)
        return thread

    thread = _run(tmp_path, scenario)  # closing the node ends the iteration
    thread.join(10)
    assert not thread.is_alive()
    reasons = [e["reason"] for e in seen if e["pod"] == "watched"]
    assert reasons[0] == "Scheduled" and "Started" in reasons and reasons[-1] == "Deleted"


def test_watch_refuses_a_blocking_for_inside_the_event_loop(tmp_path):
    from kubirun.api import KubirunError

    async def scenario(node):
        with node.watch() as events:
            with pytest.raises(KubirunError, match="async for"):
                next(iter(events))

    _run(tmp_path, scenario)


_HEALTH_SERVER = """
import sys
from concurrent import futures

import grpc

status_file, services_file = sys.argv[1], sys.argv[2]


def check(request, context):
    with open(services_file, "ab") as f:
        f.write(request.hex().encode() + b"\\n")
    with open(status_file, "rb") as f:
        return bytes([0x08, int(f.read())])


handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(check)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
sys.stdin.read()  # until the test closes it
server.stop(None)
"""


class _HealthServer:
    """A gRPC health/v1 server (grpcio) on the host's loopback whose answer
    the test sets: ``status`` 1 SERVING, 2 NOT_SERVING.  In a process of
    its own: grpcio's threads and fork handlers in the test process would
    hang later tests that fork (its prefork handler waits on them)."""

    def __init__(self, directory) -> None:
        import subprocess
        import sys

        self.status_file = directory / "status"
        self.services_file = directory / "services"
        self.status = 1
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HEALTH_SERVER, str(self.status_file),
             str(self.services_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.port = int(self.process.stdout.readline())

    @property
    def status(self) -> int:
        return int(self.status_file.read_text())

    @status.setter
    def status(self, value: int) -> None:
        self.status_file.write_text(str(value))

    @property
    def services(self) -> list[bytes]:
        return [bytes.fromhex(line) for line in self.services_file.read_text().splitlines()]

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait(timeout=30)


def test_the_grpc_check_reads_serving_and_not_serving(tmp_path):
    from kubirun.node import grpcprobe, prober
    from kubirun.node.netns import Dialer

    health = _HealthServer(tmp_path)
    try:
        serving = asyncio.run(grpcprobe.check(Dialer(None), "127.0.0.1", health.port, "web", 5))
        health.status = 2
        not_serving = asyncio.run(grpcprobe.check(Dialer(None), "127.0.0.1", health.port, "", 5))
    finally:
        health.stop()
    assert serving == (prober.SUCCESS, "")
    assert not_serving == (prober.FAILURE, 'service unhealthy (responded with "NOT_SERVING")')
    assert health.services == [b"\x0a\x03web", b""]  # HealthCheckRequest{service}


def test_a_grpc_readiness_probe_follows_the_health_service(tmp_path):
    health = _HealthServer(tmp_path)

    async def scenario(node):
        probe = {"grpc": {"port": health.port}, "periodSeconds": 1, "failureThreshold": 1}
        await node.apply(_pod("rpc", _container("app", "sleep 100", readinessProbe=probe),
                              hostNetwork=True, terminationGracePeriodSeconds=1))
        await _until(node, "rpc", lambda p: _container_status(p)["ready"])
        health.status = 2
        await _until(node, "rpc", lambda p: not _container_status(p)["ready"])
        unhealthy = [e["message"] for e in node.events("rpc") if e["reason"] == "Unhealthy"]
        assert 'Readiness probe failed: service unhealthy (responded with "NOT_SERVING")' \
            in unhealthy
        assert _container_status(node.status("rpc"))["restartCount"] == 0
        await node.delete("rpc", grace=0)

    try:
        _run(tmp_path, scenario)
    finally:
        health.stop()


def test_logs_follow_misses_no_line_across_rotations(tmp_path):
    from kubirun.node.daemon import Server
    from kubirun.node.supervisor import Node

    root = tmp_path / "node"
    socket_path = str(tmp_path / "node.sock")

    async def main():
        # a log rotated every few lines: 300 lines, each written once
        node = Node(str(root), store=str(tmp_path / "store"), log_max_size=300,
                    cgroup_parent=f"{TEST_CGROUP_PARENT}/node")
        server = Server(node, socket_path)
        await server.start()
        try:
            go = tmp_path / "go"
            go.mkdir()
            await node.apply(_pod("many", _container(
                "app", "while [ ! -e /go/now ]; do sleep 0.05; done; seq 1 300",
                volumeMounts=[{"name": "go", "mountPath": "/go"}]),
                volumes=[{"name": "go", "hostPath": {"path": str(go)}}], restartPolicy="Never"))
            await _until(node, "many", lambda p: "running" in _container_status(p)["state"])
            reader, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(b"GET /pods/many/log?follow=true HTTP/1.1\r\nHost: node\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            (go / "now").touch()
            body = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            await node.delete("many", grace=0)
            return body
        finally:
            await server.close()
            await node.close()

    try:
        body = asyncio.run(main())
    finally:
        remove_cgroup_parent(f"{TEST_CGROUP_PARENT}/node")
    # the API's lines are CRI lines: TIMESTAMP stdout F TEXT
    assert [line.split(" ", 3)[3] for line in body.decode().splitlines()] == \
        [str(i) for i in range(1, 301)]
