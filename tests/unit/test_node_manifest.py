"""Pod manifests as kubirun's node reads them: Kubernetes' names and
defaults, and one line naming the field for anything wrong."""
from __future__ import annotations

import copy
import re

import pytest

from kubirun.api import KubirunError
from kubirun.node import manifest

# From the Kubernetes docs ("Configure Liveness, Readiness and Startup Probes"), as is.
DOCS_PODS = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    test: liveness
  name: liveness-exec
spec:
  containers:
  - name: liveness
    image: registry.k8s.io/busybox
    args:
    - /bin/sh
    - -c
    - touch /tmp/healthy; sleep 30; rm -f /tmp/healthy; sleep 600
    livenessProbe:
      exec:
        command:
        - cat
        - /tmp/healthy
      initialDelaySeconds: 5
      periodSeconds: 5
---
apiVersion: v1
kind: Pod
metadata:
  labels:
    test: liveness
  name: liveness-http
spec:
  containers:
  - name: liveness
    image: registry.k8s.io/e2e-test-images/agnhost:2.40
    args:
    - liveness
    livenessProbe:
      httpGet:
        path: /healthz
        port: 8080
        httpHeaders:
        - name: Custom-Header
          value: Awesome
      initialDelaySeconds: 3
      periodSeconds: 3
---
apiVersion: v1
kind: Pod
metadata:
  name: goproxy
  labels:
    app: goproxy
spec:
  containers:
  - name: goproxy
    image: registry.k8s.io/goproxy:0.1
    ports:
    - containerPort: 8080
    readinessProbe:
      tcpSocket:
        port: 8080
      initialDelaySeconds: 15
      periodSeconds: 10
    livenessProbe:
      tcpSocket:
        port: 8080
      initialDelaySeconds: 15
      periodSeconds: 10
"""

STARTUP = """\
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  containers:
  - name: app
    image: busybox.tar.gz
    ports:
    - name: liveness-port
      containerPort: 8080
    livenessProbe:
      httpGet:
        path: /healthz
        port: liveness-port
      failureThreshold: 1
      periodSeconds: 10
    startupProbe:
      httpGet:
        path: /healthz
        port: liveness-port
      failureThreshold: 30
      periodSeconds: 10
"""

GOOD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "a", "image": "busybox.tar.gz"},
                                {"name": "b", "image": "busybox.tar.gz",
                                 "livenessProbe": {"exec": {"command": ["true"]}}}]}}


def _pod(**changes) -> dict:
    raw = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target = raw
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value
    return raw


def test_the_docs_probe_pods_parse_with_kubernetes_defaults():
    exec_pod, http_pod, tcp_pod = [manifest.parse(doc) for doc in manifest.load_text(DOCS_PODS)]
    assert exec_pod.name == "liveness-exec" and exec_pod.metadata.labels == {"test": "liveness"}
    assert exec_pod.spec.restart_policy == "Always"
    assert exec_pod.spec.termination_grace_period_seconds == 30
    probe = exec_pod.spec.containers[0].liveness_probe
    assert probe.exec.command == ["cat", "/tmp/healthy"]
    assert (probe.initial_delay_seconds, probe.period_seconds, probe.timeout_seconds,
            probe.success_threshold, probe.failure_threshold) == (5, 5, 1, 1, 3)
    assert probe.rules.period == 5 and probe.rules.failure_threshold == 3
    http = http_pod.spec.containers[0].liveness_probe.http_get
    assert (http.path, http.port, http.scheme) == ("/healthz", 8080, "HTTP")
    assert [(h.name, h.value) for h in http.http_headers] == [("Custom-Header", "Awesome")]
    goproxy = tcp_pod.spec.containers[0]
    assert goproxy.ports[0].container_port == 8080 and goproxy.ports[0].protocol == "TCP"
    assert goproxy.readiness_probe.tcp_socket.port == 8080


def test_a_named_port_resolves_against_the_containers_ports():
    (raw,) = manifest.load_text(STARTUP)
    container = manifest.parse(raw).spec.containers[0]
    assert container.port_number(container.startup_probe.http_get.port) == 8080
    assert list(container.probes()) == ["startup", "liveness"]


def test_json_is_read_too():
    (raw,) = manifest.load_text('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},'
                                ' "spec": {"containers": [{"name": "c", "image": "i"}]}}')
    assert manifest.parse(raw).spec.containers[0].image == "i"


def test_requests_and_pull_policy_are_accepted_with_a_note():
    pod = manifest.parse(_pod(spec__containers__0__resources={
        "requests": {"cpu": "100m"}, "limits": {"memory": "64Mi", "cpu": "500m"}},
        spec__containers__0__imagePullPolicy="IfNotPresent"))
    assert any("requests: ignored" in note for note in pod.notes)
    assert any("imagePullPolicy: ignored" in note for note in pod.notes)


def test_quantities():
    assert manifest.quantity("128Mi", "x") == 128 * 2**20
    assert manifest.quantity("1G", "x") == 1e9
    assert manifest.quantity("500m", "x") == 0.5
    assert manifest.quantity(2, "x") == 2


def test_a_sidecar_is_an_init_container_with_restart_policy_always():
    pod = manifest.parse(_pod(spec__initContainers=[
        {"name": "init", "image": "i"},
        {"name": "side", "image": "i", "restartPolicy": "Always",
         "readinessProbe": {"tcpSocket": {"port": 1}}}]))
    assert [c.sidecar for c in pod.spec.init_containers] == [False, True]


@pytest.mark.parametrize("changes, says", [
    ({"spec__containers__1__livenessProbe__periodSeconds": "10"},
     "spec.containers[1].livenessProbe.periodSeconds: expected an integer"),
    ({"spec__containers__1__livenessProbe__periodSeconds": True},
     "spec.containers[1].livenessProbe.periodSeconds: expected an integer"),
    ({"spec__containers__1__livenessProbe__successThreshold": 2},
     "spec.containers[1].livenessProbe.successThreshold: must be 1 for liveness"),
    ({"spec__containers__1__livenessProbe__tcpSocket": {"port": 80}},
     "spec.containers[1].livenessProbe: exactly one of"),
    ({"spec__containers__1__livenessProbe__periodSeconds": 0},
     "spec.containers[1].livenessProbe: periodSeconds"),
    ({"spec__containers__0__imagee": "x"}, "spec.containers[0].imagee: unknown field"),
    ({"spec__containers__0__env": [{"name": "A", "valueFrom": {}}]},
     r"spec.containers\[0\].env\[0\].valueFrom: unknown field"),
    ({"spec__containers__0__env": {"A": "1"}}, r"spec.containers\[0\].env: expected a list"),
    ({"spec__containers__0__command": "sleep 1"},
     r"spec.containers\[0\].command: expected a list"),
    ({"spec__containers__0__args": [1]}, r"spec.containers\[0\].args\[0\]: expected a string"),
    ({"spec__containers__0__name": "B_b"}, r"spec.containers\[0\].name: 'B_b' is not a DNS"),
    ({"spec__containers__1__name": "a"}, r"spec.containers\[1\].name: 'a' is already"),
    ({"spec__containers": []}, "spec.containers: at least one"),
    ({"spec__restartPolicy": "Sometimes"}, "spec.restartPolicy: expected one of"),
    ({"spec__terminationGracePeriodSeconds": -1}, "spec.terminationGracePeriodSeconds"),
    ({"spec__hostNetwork": "yes"}, "spec.hostNetwork: expected a boolean"),
    ({"metadata__name": "Web"}, "metadata.name: 'Web' is not a DNS subdomain"),
    ({"metadata__labels": {"a": 1}}, "metadata.labels.a: expected a string"),
    ({"kind": "Deployment"}, "kind: expected Pod"),
    ({"apiVersion": "apps/v1"}, "apiVersion: expected v1"),
    ({"spec__containers__0__ports": [{"containerPort": 70000}]},
     r"spec.containers\[0\].ports\[0\].containerPort: 70000 is not a port"),
    ({"spec__containers__0__ports": [{"hostPort": 80}]},
     r"spec.containers\[0\].ports\[0\].containerPort: required"),
    ({"spec__containers__0__resources": {"limits": {"memory": "lots"}}},
     r"spec.containers\[0\].resources.limits.memory: 'lots' is not a quantity"),
    ({"spec__containers__0__resources": {"limits": {"nvidia.com/gpu": 1}}},
     r"resources.limits.nvidia.com/gpu: kubirun limits memory and cpu"),
    ({"spec__containers__0__volumeMounts": [{"name": "data", "mountPath": "/d"}]},
     r"spec.containers\[0\].volumeMounts\[0\].name: no volume 'data'"),
    ({"spec__volumes": [{"name": "data"}]}, r"spec.volumes\[0\]: exactly one of emptyDir"),
    ({"spec__volumes": [{"name": "data", "hostPath": {"path": "rel"}}]},
     r"spec.volumes\[0\].hostPath.path: must be absolute"),
    ({"spec__containers__0__restartPolicy": "Always"},
     r"spec.containers\[0\].restartPolicy: only an init container"),
    ({"spec__containers__1__livenessProbe": {"httpGet": {"port": "web"}}},
     r"livenessProbe: port 'web': the container declares no port"),
    ({"spec__containers__0__lifecycle": {"preStop": {}}},
     r"spec.containers\[0\].lifecycle.preStop: exactly one of"),
    ({"spec__containers__0__lifecycle": {"preStop": {"sleep": {"seconds": "5"}}}},
     r"lifecycle.preStop.sleep.seconds: expected an integer"),
    ({"spec__containers__0__securityContext": {"runAsUser": "root"}},
     r"securityContext.runAsUser: expected an integer"),
    ({"spec__containers__0__livenessProbe": {"exec": {"command": ["x"]}, "timeoutSecond": 1}},
     r"livenessProbe.timeoutSecond: unknown field"),
    ({"spec__initContainers": [{"name": "i", "image": "x",
                                "livenessProbe": {"exec": {"command": ["x"]}}}]},
     r"spec.initContainers\[0\].livenessProbe: init containers have no probes"),
    ({"spec": []}, "spec: expected an object"),
    ({"metadata": {}}, "metadata.name: required"),
])
def test_a_bad_manifest_is_one_line_naming_the_field(changes, says):
    if "\\[" not in says:
        says = re.escape(says)  # the plain ones are the message as is
    with pytest.raises(KubirunError, match=says) as caught:
        manifest.parse(_pod(**changes))
    assert "\n" not in str(caught.value)


def test_bad_yaml_says_where():
    with pytest.raises(KubirunError, match=r"pod.yaml:2:\d+: not YAML or JSON"):
        manifest.load_text("a: [1\nb: 2\n", "pod.yaml")


@pytest.mark.parametrize("text", ["", "- 1\n- 2\n", "just text"])
def test_not_a_pod_object(text):
    with pytest.raises(KubirunError):
        manifest.load_text(text, "pod.yaml")


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(KubirunError, match="No such file"):
        manifest.load_file(str(tmp_path / "nope.yaml"))
