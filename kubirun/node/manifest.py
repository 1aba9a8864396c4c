"""Pod manifests: the subset of Kubernetes' Pod ``v1`` that kubirun's node
runs, read from YAML or JSON into typed dataclasses, with the API server's
names and defaults, so a Pod pasted from the Kubernetes docs applies as is.

Every field is declared once, as a dataclass field (``snake_case`` here,
``camelCase`` in the manifest); one generic reader walks them, so an
unknown field or a wrong type is one ``KubirunError`` naming the field's
path (``spec.containers[1].livenessProbe.periodSeconds: expected an
integer``) and nothing is started.  Fields kubirun accepts but does not act
on (``resources.requests``, ``imagePullPolicy``...) leave a note in
``Pod.notes``.
"""
from __future__ import annotations

import re
import typing
from dataclasses import MISSING, dataclass, field, fields

from kubirun.api import KubirunError
from kubirun.node import prober, restart


class IntOrString:
    """A field that is a number or a name (a port: 8080 or "http")."""


class Quantity:
    """A resource quantity: 128Mi, 1G, 500m, 0.5, 2."""


class Anything:
    """A field taken as is and ignored (``status`` of a pod read back)."""


# --- the schema ------------------------------------------------------------------

@dataclass
class EnvVar:
    name: str
    value: str = ""


@dataclass
class ContainerPort:
    container_port: int
    name: str = ""
    host_port: int = 0
    protocol: str = "TCP"


@dataclass
class ResourceRequirements:
    limits: dict[str, Quantity] = field(default_factory=dict)
    requests: dict[str, Quantity] = field(default_factory=dict)


@dataclass
class SecurityContext:
    run_as_user: typing.Optional[int] = None
    run_as_group: typing.Optional[int] = None
    read_only_root_filesystem: bool = False


@dataclass
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass
class ExecAction:
    command: list[str] = field(default_factory=list)


@dataclass
class HTTPHeader:
    name: str
    value: str


@dataclass
class HTTPGetAction:
    port: IntOrString
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    http_headers: list[HTTPHeader] = field(default_factory=list)


@dataclass
class TCPSocketAction:
    port: IntOrString
    host: str = ""


@dataclass
class GRPCAction:
    port: int
    service: str = ""


@dataclass
class SleepAction:
    seconds: int


@dataclass
class LifecycleHandler:
    exec: typing.Optional[ExecAction] = None
    http_get: typing.Optional[HTTPGetAction] = None
    tcp_socket: typing.Optional[TCPSocketAction] = None
    sleep: typing.Optional[SleepAction] = None


@dataclass
class Lifecycle:
    post_start: typing.Optional[LifecycleHandler] = None
    pre_stop: typing.Optional[LifecycleHandler] = None


@dataclass
class Probe:
    exec: typing.Optional[ExecAction] = None
    http_get: typing.Optional[HTTPGetAction] = None
    tcp_socket: typing.Optional[TCPSocketAction] = None
    grpc: typing.Optional[GRPCAction] = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: typing.Optional[int] = None
    # The prober's view of it (checked numbers), set once read.
    rules: typing.Any = field(default=None, metadata={"internal": True})


@dataclass
class Container:
    name: str
    image: str
    command: typing.Optional[list[str]] = None
    args: typing.Optional[list[str]] = None
    working_dir: str = ""
    env: list[EnvVar] = field(default_factory=list)
    ports: list[ContainerPort] = field(default_factory=list)
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    security_context: SecurityContext = field(default_factory=SecurityContext)
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    liveness_probe: typing.Optional[Probe] = None
    readiness_probe: typing.Optional[Probe] = None
    startup_probe: typing.Optional[Probe] = None
    restart_policy: str = ""  # init containers only: Always makes a sidecar
    image_pull_policy: str = ""
    termination_message_path: str = ""
    termination_message_policy: str = ""
    stdin: bool = False
    tty: bool = False

    @property
    def sidecar(self) -> bool:
        return self.restart_policy == "Always"

    def probes(self) -> dict[str, Probe]:
        return {kind: probe for kind, probe in ((prober.STARTUP, self.startup_probe),
                                                (prober.LIVENESS, self.liveness_probe),
                                                (prober.READINESS, self.readiness_probe))
                if probe is not None}

    def port_number(self, port: int | str) -> int:
        """A probe's port, by number or by the name of one of ``ports``."""
        if isinstance(port, int):
            return port
        for declared in self.ports:
            if declared.name == port:
                return declared.container_port
        raise KubirunError(f"container {self.name}: no port named {port!r}")


@dataclass
class EmptyDirVolumeSource:
    medium: str = ""
    size_limit: typing.Optional[Quantity] = None


@dataclass
class HostPathVolumeSource:
    path: str
    type: str = ""


@dataclass
class Volume:
    name: str
    empty_dir: typing.Optional[EmptyDirVolumeSource] = None
    host_path: typing.Optional[HostPathVolumeSource] = None


@dataclass
class PodSpec:
    containers: list[Container]
    init_containers: list[Container] = field(default_factory=list)
    restart_policy: str = "Always"
    termination_grace_period_seconds: int = 30
    volumes: list[Volume] = field(default_factory=list)
    host_network: bool = False
    hostname: str = ""
    share_process_namespace: bool = False


@dataclass
class ObjectMeta:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    creation_timestamp: Anything = None


@dataclass
class Pod:
    metadata: ObjectMeta
    spec: PodSpec
    api_version: str = "v1"
    kind: str = "Pod"
    status: Anything = None
    notes: list[str] = field(default_factory=list, metadata={"internal": True})

    @property
    def name(self) -> str:
        return self.metadata.name


# --- reading -----------------------------------------------------------------------

def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_HINTS: dict[type, dict[str, object]] = {}


def _hints(cls: type) -> dict[str, object]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(hint: object) -> str:
    return {int: "an integer", str: "a string", bool: "a boolean", IntOrString:
            "an integer or a string", Quantity: "a quantity (a number or a string)"}.get(
        hint, "an object" if isinstance(hint, type) else "a list"
        if typing.get_origin(hint) is list else "an object")


def _read(hint: object, raw: object, path: str) -> object:
    origin = typing.get_origin(hint)
    if origin is typing.Union:  # Optional[X]
        if raw is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        return _read(hint, raw, path)
    if hint is Anything:
        return raw
    if origin is list:
        if not isinstance(raw, list):
            raise KubirunError(f"{path}: expected a list")
        (item,) = typing.get_args(hint)
        return [_read(item, value, f"{path}[{i}]") for i, value in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            raise KubirunError(f"{path}: expected an object")
        _, value_hint = typing.get_args(hint)
        return {str(key): _read(value_hint, value, f"{path}.{key}") for key, value in raw.items()}
    wrong = KubirunError(f"{path}: expected {_type_name(hint)}")
    if hint is bool:
        if not isinstance(raw, bool):
            raise wrong
        return raw
    if hint is int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise wrong
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise wrong
        return raw
    if hint in (IntOrString, Quantity):
        if isinstance(raw, bool) or not isinstance(raw, (int, str) if hint is IntOrString
                                                     else (int, float, str)):
            raise wrong
        return raw
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _read_object(hint, raw, path)
    raise AssertionError(f"no reader for {hint!r}")  # a schema mistake, not the user's


def _read_object(cls: type, raw: object, path: str) -> object:
    if not isinstance(raw, dict):
        raise KubirunError(f"{path}: expected an object")
    hints = _hints(cls)
    known = {camel(f.name): f for f in fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in known:
            raise KubirunError(f"{_join(path, str(key))}: unknown field"
                               f" (kubirun knows: {', '.join(known)})")
    values = {}
    for key, spec in known.items():
        if key in raw and raw[key] is not None:
            values[spec.name] = _read(hints[spec.name], raw[key], _join(path, key))
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise KubirunError(f"{_join(path, key)}: required")
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- checks beyond types ----------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?\Z")
_SUFFIX = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}


def quantity(value: int | float | str, path: str) -> float:
    """A Kubernetes quantity's value (``128Mi`` is 134217728, ``500m`` 0.5)."""
    match = _QUANTITY.match(str(value).strip())
    try:
        number = float(match.group(1)) if match else None
    except ValueError:
        number = None
    if number is None or number < 0:
        raise KubirunError(f"{path}: {value!r} is not a quantity (e.g. 128Mi, 1G, 500m, 0.5)")
    return number * _SUFFIX[match.group(2)]


def _check(pod: Pod) -> None:
    if pod.api_version != "v1":
        raise KubirunError(f"apiVersion: expected v1, got {pod.api_version!r}")
    if pod.kind != "Pod":
        raise KubirunError(f"kind: expected Pod, got {pod.kind!r} (kubirun node runs pods)")
    name = pod.metadata.name
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise KubirunError(f"metadata.name: {name!r} is not a DNS subdomain name (lower case"
                           " letters, digits, '-' and '.', at most 253)")
    spec = pod.spec
    if spec.restart_policy not in restart.POLICIES:
        raise KubirunError(f"spec.restartPolicy: expected one of {', '.join(restart.POLICIES)},"
                           f" got {spec.restart_policy!r}")
    if spec.termination_grace_period_seconds < 0:
        raise KubirunError("spec.terminationGracePeriodSeconds: must be 0 or more")
    if not spec.containers:
        raise KubirunError("spec.containers: at least one container is required")
    volumes = {}
    for i, volume in enumerate(spec.volumes):
        where = f"spec.volumes[{i}]"
        if not _DNS_LABEL.match(volume.name) or volume.name in volumes:
            raise KubirunError(f"{where}.name: {volume.name!r} is not a unique DNS label")
        if (volume.empty_dir is None) == (volume.host_path is None):
            raise KubirunError(f"{where}: exactly one of emptyDir, hostPath is required")
        if volume.host_path is not None and not volume.host_path.path.startswith("/"):
            raise KubirunError(f"{where}.hostPath.path: must be absolute")
        if volume.host_path is not None and volume.host_path.type not in (
                "", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                "CharDevice", "BlockDevice"):
            raise KubirunError(f"{where}.hostPath.type: {volume.host_path.type!r} is not a type")
        if volume.empty_dir is not None and volume.empty_dir.medium not in ("", "Memory"):
            raise KubirunError(f"{where}.emptyDir.medium: expected '' or Memory")
        volumes[volume.name] = volume
    seen: set[str] = set()
    for kind, containers in (("initContainers", spec.init_containers),
                             ("containers", spec.containers)):
        for i, container in enumerate(containers):
            _check_container(pod, container, f"spec.{kind}[{i}]", kind == "initContainers",
                             volumes, seen)


def _check_container(pod: Pod, container: Container, where: str, init: bool,
                     volumes: dict[str, Volume], seen: set[str]) -> None:
    if not _DNS_LABEL.match(container.name) or len(container.name) > 63:
        raise KubirunError(f"{where}.name: {container.name!r} is not a DNS label (lower case"
                           " letters, digits and '-', at most 63)")
    if container.name in seen:
        raise KubirunError(f"{where}.name: {container.name!r} is already a container's name")
    seen.add(container.name)
    if not container.image:
        raise KubirunError(f"{where}.image: required")
    if container.restart_policy and (not init or container.restart_policy != "Always"):
        raise KubirunError(f"{where}.restartPolicy: only an init container may have one, and"
                           " only Always (a sidecar)")
    for j, port in enumerate(container.ports):
        for key, number in (("containerPort", port.container_port), ("hostPort", port.host_port)):
            if not 0 <= number <= 65535 or (key == "containerPort" and number == 0):
                raise KubirunError(f"{where}.ports[{j}].{key}: {number} is not a port number")
        if port.protocol not in ("TCP", "UDP", "SCTP"):
            raise KubirunError(f"{where}.ports[{j}].protocol: expected TCP, UDP or SCTP")
    for key, value in container.resources.limits.items():
        if key not in ("memory", "cpu"):
            raise KubirunError(f"{where}.resources.limits.{key}: kubirun limits memory and cpu")
        quantity(value, f"{where}.resources.limits.{key}")
    if container.resources.requests:
        pod.notes.append(f"{where}.resources.requests: ignored (no scheduler here)")
    if container.image_pull_policy:
        if container.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise KubirunError(f"{where}.imagePullPolicy: expected Always, IfNotPresent or Never")
        pod.notes.append(f"{where}.imagePullPolicy: ignored (images are files or the store's)")
    for j, mount in enumerate(container.volume_mounts):
        if mount.name not in volumes:
            raise KubirunError(f"{where}.volumeMounts[{j}].name: no volume {mount.name!r}"
                               " in spec.volumes")
        if not mount.mount_path.startswith("/"):
            raise KubirunError(f"{where}.volumeMounts[{j}].mountPath: must be absolute")
    for hook in ("postStart", "preStop"):
        handler = getattr(container.lifecycle, "post_start" if hook == "postStart" else "pre_stop")
        if handler is not None:
            set_ = [h for h in ("exec", "http_get", "tcp_socket", "sleep")
                    if getattr(handler, h) is not None]
            if len(set_) != 1:
                raise KubirunError(f"{where}.lifecycle.{hook}: exactly one of exec, httpGet,"
                                   " tcpSocket, sleep is required")
    probe_fields = {prober.LIVENESS: "livenessProbe", prober.READINESS: "readinessProbe",
                    prober.STARTUP: "startupProbe"}
    for kind, probe in container.probes().items():
        probe_where = f"{where}.{probe_fields[kind]}"
        if init and not container.sidecar:
            raise KubirunError(f"{probe_where}: init containers have no probes"
                               " (only sidecars, restartPolicy: Always)")
        raw = {camel(f.name): getattr(probe, f.name) for f in fields(Probe)
               if not f.metadata.get("internal") and getattr(probe, f.name) is not None}
        try:
            probe.rules = prober.Probe(raw, kind, probe_where)
        except prober.ProbeError as err:
            raise KubirunError(str(err)) from None
        for action in (probe.http_get, probe.tcp_socket):
            if action is not None:
                try:
                    container.port_number(action.port)
                except KubirunError:
                    raise KubirunError(f"{probe_where}: port {action.port!r}: the container"
                                       " declares no port of that name") from None
        if probe.grpc is not None and not 0 < probe.grpc.port < 65536:
            raise KubirunError(f"{probe_where}.grpc.port: expected a port number (1-65535)")
        if probe.http_get is not None and probe.http_get.scheme not in ("HTTP", "HTTPS"):
            raise KubirunError(f"{probe_where}.httpGet.scheme: expected HTTP or HTTPS")


def parse(raw: object) -> Pod:
    """A Pod from its parsed YAML/JSON, checked; KubirunError otherwise."""
    pod = _read_object(Pod, raw, "")
    _check(pod)
    return pod


def load_text(text: str, source: str = "manifest") -> list[dict]:
    """The documents of a YAML or JSON text (``---`` separates pods)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise KubirunError(f"{source}{where}: not YAML or JSON: {problem}") from None
    if not documents:
        raise KubirunError(f"{source}: no pod in it")
    for document in documents:
        if not isinstance(document, dict):
            raise KubirunError(f"{source}: expected a Pod object, got {type(document).__name__}")
    return documents


def load_file(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as err:
        raise KubirunError(f"{path}: {getattr(err, 'strerror', None) or err}") from None
    return load_text(text, path)
