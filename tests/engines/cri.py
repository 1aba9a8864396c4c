"""A small client of containerd's CRI (``runtime.v1.RuntimeService``) for
the engine tests: what kubelet (or crictl) sends, over gRPC on containerd's
unix socket, with the few messages the pod life-cycle needs encoded here by
field number (protobuf's wire format), so the tests need grpcio only.

Field numbers are those of Kubernetes' CRI v1 ``api.proto``.
"""
from __future__ import annotations

import time

SERVICE = "/runtime.v1.RuntimeService/"

# NamespaceMode and ContainerState values of the CRI.
NODE = 2
CONTAINER_EXITED = 2


# --- protobuf's wire format (the part these messages use) ---------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def message(*fields: tuple[int, object]) -> bytes:
    """Encode (number, value) pairs: str and bytes as length-delimited,
    bool and non-negative int as varints, a list as repeated values, and
    a ``Nested`` as an embedded message."""
    out = bytearray()
    for number, value in fields:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (bool, int)):
                out += _varint(number << 3) + _varint(int(item))
            else:
                data = item.encode() if isinstance(item, str) else bytes(item)
                out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def entry(key: str, value: str) -> bytes:
    """One entry of a ``map<string, string>`` field."""
    return message((1, key), (2, value))


def decode(data: bytes) -> dict[int, list]:
    """Field number -> values (ints for varints, bytes otherwise)."""
    fields: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        fields.setdefault(number, []).append(value)
    return fields


# --- the runtime service -------------------------------------------------------

class CriClient:
    """The pod and container calls of the CRI runtime service."""

    def __init__(self, address: str, timeout: float = 60.0) -> None:
        import grpc

        self.channel = grpc.insecure_channel(f"unix://{address}")
        self.timeout = timeout

    def call(self, method: str, request: bytes) -> dict[int, list]:
        rpc = self.channel.unary_unary(SERVICE + method)  # bytes in, bytes out
        return decode(rpc(request, timeout=self.timeout))

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def pod_config(name: str, uid: str, cgroup_parent: str, log_directory: str) -> bytes:
        """A PodSandboxConfig: host network (no CNI needed), in ``cgroup_parent``."""
        metadata = message((1, name), (2, uid), (3, "kubirun-test"), (4, 0))
        security = message((1, message((1, NODE))))  # namespace_options.network = NODE
        linux = message((1, cgroup_parent), (2, security))
        return message((1, metadata), (3, log_directory), (8, linux))

    def run_pod_sandbox(self, config: bytes, runtime_handler: str) -> str:
        reply = self.call("RunPodSandbox", message((1, config), (2, runtime_handler)))
        return reply[1][0].decode()

    def create_container(self, pod_id: str, pod_config: bytes, name: str, image: str,
                         command: list[str], log_path: str) -> str:
        config = message((1, message((1, name), (2, 0))), (2, message((1, image))),
                         (3, command), (11, log_path))
        reply = self.call("CreateContainer", message((1, pod_id), (2, config), (3, pod_config)))
        return reply[1][0].decode()

    def start_container(self, container_id: str) -> None:
        self.call("StartContainer", message((1, container_id)))

    def container_state(self, container_id: str) -> tuple[int, int]:
        """(ContainerState, exit code)."""
        status = decode(self.call("ContainerStatus", message((1, container_id)))[1][0])
        return status.get(3, [0])[0], status.get(7, [0])[0]

    def wait_exited(self, container_id: str, timeout: float = 30.0) -> int:
        """The exit code, once the container's process has exited."""
        deadline = time.monotonic() + timeout
        while True:
            state, code = self.container_state(container_id)
            if state == CONTAINER_EXITED:
                return code
            if time.monotonic() > deadline:
                raise AssertionError(f"container {container_id} still in state {state}")
            time.sleep(0.1)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self.call("StopContainer", message((1, container_id), (2, timeout)))

    def remove_container(self, container_id: str) -> None:
        self.call("RemoveContainer", message((1, container_id)))

    def stop_pod_sandbox(self, pod_id: str) -> None:
        self.call("StopPodSandbox", message((1, pod_id)))

    def remove_pod_sandbox(self, pod_id: str) -> None:
        self.call("RemovePodSandbox", message((1, pod_id)))

    def list_containers(self) -> list[str]:
        reply = self.call("ListContainers", message())
        return [decode(c)[1][0].decode() for c in reply.get(1, [])]

    def list_pod_sandboxes(self) -> list[str]:
        reply = self.call("ListPodSandbox", message())
        return [decode(p)[1][0].decode() for p in reply.get(1, [])]
