"""``kubirun node ...``: the node daemon (``serve``) and kubectl's habits
on top of its unix-socket API (apply, get, describe, logs, exec, delete)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time

from kubirun.base.errors import KubirunError

POD_KINDS = ("pods", "pod", "po")


def default_socket() -> str:
    from kubirun.state import default_root

    return os.environ.get("KUBIRUN_NODE_SOCKET") or os.path.join(default_root(), "node.sock")


# --- the daemon -------------------------------------------------------------------

def serve(socket_path: str | None, network: str | None, store: str | None,
          cgroup_parent: str | None) -> int:
    import asyncio
    import logging

    from kubirun.node.daemon import serve as serve_forever
    from kubirun.node.supervisor import Node
    from kubirun.state import default_root

    from kubirun.cli.lifetime import long_lived

    long_lived()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    node = Node(os.path.join(default_root(), "node"), store=store, network=network or "none",
                cgroup_parent=cgroup_parent)
    asyncio.run(serve_forever(node, socket_path or default_socket()))
    return 0


# --- the client -------------------------------------------------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.unix_path)
        except OSError as err:
            sock.close()
            raise KubirunError(f"cannot reach the node at {self.unix_path}: {err.strerror}"
                               " (is `kubirun node serve` running?)") from None
        self.sock = sock


def _request(method: str, path: str, body: object = None, stream: bool = False):
    connection = _UnixConnection(default_socket() if _SOCKET[0] is None else _SOCKET[0])
    data = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=data,
                       headers={"Content-Type": "application/json"} if data else {})
    response = connection.getresponse()
    if response.status >= 400:
        try:
            message = json.loads(response.read()).get("error")
        except ValueError:
            message = None
        raise KubirunError(message or f"the node answered {response.status} {response.reason}")
    if stream:
        return response
    return json.loads(response.read())


_SOCKET: list[str | None] = [None]


def _use(socket_path: str | None) -> None:
    _SOCKET[0] = socket_path


def _pod_kind(kind: str) -> None:
    if kind not in POD_KINDS:
        raise KubirunError(f'the server doesn\'t have a resource type "{kind}"'
                           " (kubirun's node has pods)")


# --- commands -----------------------------------------------------------------------

def apply(file: str | None, socket_path: str | None) -> int:
    from kubirun.node import manifest

    _use(socket_path)
    if not file:
        raise KubirunError("apply: -f FILE is required (a pod manifest, YAML or JSON; - for stdin)")
    documents = manifest.load_text(sys.stdin.read(), "stdin") if file == "-" else \
        manifest.load_file(file)
    for raw in documents:
        manifest.parse(raw)  # refused here, with the field's path, before anything is sent
        for container in (raw["spec"].get("initContainers") or []) + raw["spec"]["containers"]:
            image = container.get("image")
            if isinstance(image, str) and os.path.exists(image):
                container["image"] = os.path.abspath(image)  # the node's cwd is not ours
    for raw in documents:
        name = raw["metadata"]["name"]
        existed = _exists(name)
        _request("POST", "/pods", raw)
        print(f"pod/{name} {'unchanged' if existed else 'created'}")
    return 0


def _exists(name: str) -> bool:
    try:
        _request("GET", f"/pods/{name}")
        return True
    except KubirunError as err:
        if "not found" in str(err):
            return False
        raise


def get(kind: str, name: str | None, output: str | None, socket_path: str | None) -> int:
    from kubirun.node import status as rules

    _use(socket_path)
    _pod_kind(kind)
    if output not in (None, "wide", "json", "yaml", "name"):
        raise KubirunError(f"-o: expected wide, json, yaml or name, got {output!r}")
    pods = [_request("GET", f"/pods/{name}")] if name else _request("GET", "/pods")["items"]
    if output in ("json", "yaml"):
        document = pods[0] if name else {"apiVersion": "v1", "kind": "List", "items": pods}
        if output == "json":
            print(json.dumps(document, indent=4))
        else:
            import yaml

            print(yaml.safe_dump(document, sort_keys=False), end="")
        return 0
    if output == "name":
        for pod in pods:
            print(f"pod/{pod['metadata']['name']}")
        return 0
    if not pods:
        print("No resources found.", file=sys.stderr)
        return 0
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP"] if output == "wide" else [])
    rows = [header]
    for pod in pods:
        rows.append(_row(pod, rules) + ([pod["status"].get("podIP", "<none>")]
                                         if output == "wide" else []))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _row(pod: dict, rules) -> list[str]:
    status = pod["status"]
    init = status.get("initContainerStatuses", [])
    regular = status.get("containerStatuses", [])
    sidecars = frozenset(c["name"] for c in pod["spec"].get("initContainers") or []
                         if c.get("restartPolicy") == "Always")
    reason, ready, restarts = rules.kubectl_status(
        status["phase"], init, regular, "deletionTimestamp" in pod["metadata"], sidecars)
    restarted = [s["lastState"]["terminated"]["finishedAt"] for s in init + regular
                 if "terminated" in s.get("lastState", {})]
    restarts_text = str(restarts)
    if restarts and restarted:
        restarts_text += f" ({rules.human_duration(time.time() - _epoch(max(restarted)))} ago)"
    age = rules.human_duration(time.time() - _epoch(pod["metadata"]["creationTimestamp"]))
    return [pod["metadata"]["name"], f"{ready}/{len(regular)}", reason, restarts_text, age]


def _epoch(stamp: str) -> float:
    import calendar

    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def describe(kind: str, name: str, socket_path: str | None) -> int:
    _use(socket_path)
    _pod_kind(kind)
    pod = _request("GET", f"/pods/{name}")
    events = _request("GET", f"/pods/{name}/events")["items"]
    meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
    out = [f"Name:             {meta['name']}",
           f"Namespace:        {meta.get('namespace', 'default')}",
           f"Start Time:       {status.get('startTime', '<none>')}",
           "Labels:           " + (", ".join(f"{k}={v}" for k, v in
                                             (meta.get("labels") or {}).items()) or "<none>"),
           f"Status:           {'Terminating' if 'deletionTimestamp' in meta else status['phase']}",
           f"IP:               {status.get('podIP', '')}"]
    specs = {c["name"]: c for c in (spec.get("initContainers") or []) + spec["containers"]}
    for title, key in (("Init Containers", "initContainerStatuses"),
                       ("Containers", "containerStatuses")):
        if not status.get(key):
            continue
        out.append(f"{title}:")
        for container in status[key]:
            out += _describe_container(container, specs.get(container["name"], {}))
    out.append("Conditions:")
    out.append("  Type              Status")
    for condition in status["conditions"]:
        out.append(f"  {condition['type']:<17} {condition['status']}")
    out.append("Events:")
    if not events:
        out.append("  <none>")
    else:
        from kubirun.node.status import human_duration

        rows = [("Type", "Reason", "Age", "From", "Message"),
                ("----", "------", "----", "----", "-------")]
        for event in events:
            age = human_duration(time.time() - event["lastTimestamp"])
            if event["count"] > 1:
                age += f" (x{event['count']} over " \
                       f"{human_duration(time.time() - event['firstTimestamp'])})"
            rows.append((event["type"], event["reason"], age, "kubelet", event["message"]))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths))
                       + "  " + row[4])
    print("\n".join(out))
    return 0


def _describe_container(container: dict, spec: dict) -> list[str]:
    out = [f"  {container['name']}:",
           f"    Container ID:  {container.get('containerID', '')}",
           f"    Image:         {container['image']}"]
    for title, key in (("State", "state"), ("Last State", "lastState")):
        state = container.get(key) or {}
        if not state:
            if key == "lastState":
                out.append(f"    {title}:     <none>")
            continue
        (kind, details), = state.items()
        out.append(f"    {title + ':':<15}{kind.capitalize()}")
        for field in ("reason", "message", "exitCode", "signal", "startedAt", "finishedAt"):
            if field in details and details[field] != "":
                label = {"exitCode": "Exit Code", "startedAt": "Started",
                         "finishedAt": "Finished"}.get(field, field.capitalize())
                out.append(f"      {label + ':':<13}{details[field]}")
    out.append(f"    Ready:         {str(container['ready']).capitalize()}")
    out.append(f"    Restart Count: {container['restartCount']}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in spec:
            out.append(f"    {probe[:-5].capitalize() + ':':<15}{_probe_text(spec[probe])}")
    return out


def _probe_text(probe: dict) -> str:
    if "exec" in probe:
        action = f"exec {probe['exec'].get('command')}"
    elif "httpGet" in probe:
        get_ = probe["httpGet"]
        action = f"http-get {get_.get('scheme', 'HTTP').lower()}://:{get_['port']}" \
                 f"{get_.get('path', '/')}"
    elif "tcpSocket" in probe:
        action = f"tcp-socket :{probe['tcpSocket']['port']}"
    else:
        action = "grpc"
    return (f"{action} delay={probe.get('initialDelaySeconds', 0)}s"
            f" timeout={probe.get('timeoutSeconds', 1)}s period={probe.get('periodSeconds', 10)}s"
            f" #success={probe.get('successThreshold', 1)}"
            f" #failure={probe.get('failureThreshold', 3)}")


def logs(name: str, container: str | None, previous: bool, tail: str | None, follow: bool,
         socket_path: str | None) -> int:
    from urllib.parse import urlencode

    from kubirun.node.logs import message

    _use(socket_path)
    if tail is not None and not tail.lstrip("-").isdigit():
        raise KubirunError(f"--tail: expected a number, got {tail!r}")
    query = {k: v for k, v in (("container", container), ("previous", "1" if previous else None),
                               ("tail", tail), ("follow", "1" if follow else None)) if v}
    response = _request("GET", f"/pods/{name}/log?{urlencode(query)}", stream=True)
    while True:
        line = response.readline()
        if not line:
            break
        text, full = message(line.decode(errors="replace").rstrip("\n"))
        sys.stdout.write(text + ("\n" if full else ""))
        sys.stdout.flush()
    return 0


def exec_(name: str, container: str | None, command: tuple[str, ...],
          socket_path: str | None) -> int:
    _use(socket_path)
    command = tuple(command)
    if command and command[0] == "--":  # `exec NAME -- CMD`: the separator is ours, not CMD's
        command = command[1:]
    if not command:
        raise KubirunError("exec: a command is required: kubirun node exec NAME -- CMD...")
    answer = _request("POST", f"/pods/{name}/exec",
                      {"container": container, "command": list(command)})
    sys.stdout.write(answer["output"])
    code = answer["exitCode"]
    return 137 if code is None else code


def delete(kind: str, name: str, grace_period: str | None, socket_path: str | None) -> int:
    _use(socket_path)
    _pod_kind(kind)
    query = ""
    if grace_period is not None:
        if not grace_period.isdigit():
            raise KubirunError(f"--grace-period: expected seconds, got {grace_period!r}")
        query = f"?grace={grace_period}"
    _request("DELETE", f"/pods/{name}{query}")
    print(f'pod "{name}" deleted')
    return 0
