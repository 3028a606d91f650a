"""A small client of the Container Runtime Interface (CRI) over its gRPC socket: what a
container is (name, image, mounts, privileged, start) and which pod it belongs to, as
Falco's container plugin asks containerd or CRI-O.

Only three calls of `runtime.v1.RuntimeService` are used: Version, ContainerStatus
(verbose) and PodSandboxStatus. Messages are encoded and read by their field numbers in
k8s.io/cri-api `pkg/apis/runtime/v1/api.proto` (written down in the `_F` tables below),
so no generated code is needed. The pod comes from the container's labels
(`io.kubernetes.pod.{name,namespace,uid}`, set by kubelet) and its sandbox's status
(pod labels and IP), which closes the race with the API server's watch: a container is
known to the runtime before kubelet reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc

from falconer.sensor import protowire as pw
from falconer.sensor.podmeta import ContainerMeta, Mount, PodMeta, image_parts

#: Where containerd and CRI-O listen by default.
DEFAULT_SOCKETS = ("/run/containerd/containerd.sock", "/run/crio/crio.sock")
#: One call's deadline: a lookup happens on the sensor's event path.
TIMEOUT_S = 0.5
_SERVICE = "/runtime.v1.RuntimeService/"

# Field numbers of runtime.v1 messages (api.proto).
_VERSION_RUNTIME_NAME, _VERSION_RUNTIME_VERSION = 2, 3
_CS_STATUS, _CS_INFO = 1, 2                              # ContainerStatusResponse
_C_ID, _C_METADATA, _C_STARTED_AT, _C_IMAGE, _C_IMAGE_REF, _C_LABELS, _C_MOUNTS = (
    1, 2, 5, 8, 9, 12, 14)                               # ContainerStatus
_META_NAME = 1                                           # ContainerMetadata
_IMAGE_IMAGE = 1                                         # ImageSpec
_M_CONTAINER_PATH, _M_HOST_PATH, _M_READONLY, _M_PROPAGATION = 1, 2, 3, 5  # Mount
_PS_STATUS = 1                                           # PodSandboxStatusResponse
_S_NETWORK, _S_LABELS = 5, 7                             # PodSandboxStatus
_NET_IP = 1                                              # PodSandboxNetworkStatus

#: CRI MountPropagation -> the Linux name Falco prints (libs' CRI container engine).
PROPAGATION = {0: "private", 1: "rslave", 2: "rshared"}

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


class CriError(Exception):
    """The runtime could not be asked (socket missing, timeout, bad reply)."""


@dataclass(frozen=True)
class CriVersion:
    """What Version answers, e.g. ("containerd", "1.6.20")."""

    runtime_name: str
    runtime_version: str


class CriClient:
    """One runtime socket. Calls block for at most `timeout_s`; errors raise CriError,
    except an unknown container, which is None."""

    def __init__(self, socket_path: str, timeout_s: float = TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel("unix://" + socket_path)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: str, request: bytes) -> bytes | None:
        """One unary call; None when the runtime answers NOT_FOUND."""
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(_SERVICE + method, request_serializer=None,
                                         response_deserializer=None)
        try:
            reply = call(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return None
            raise CriError(f"{method} on {self.socket_path}: {code}: "
                           f"{exc.details() if isinstance(exc, grpc.Call) else exc}") from exc
        assert isinstance(reply, bytes)
        return reply

    def version(self) -> CriVersion:
        """The runtime's name and version; raises CriError."""
        reply = self._call("Version", pw.encode((1, "v1"))) or b""
        fields = _decode(reply)
        return CriVersion(pw.string(fields, _VERSION_RUNTIME_NAME),
                          pw.string(fields, _VERSION_RUNTIME_VERSION))

    def container(self, container_id: str) -> PodMeta | None:
        """The pod of one container (full or unique-prefix id), holding just that
        container; None when the runtime does not know it. A container outside any
        pod (no kubelet labels) comes back in a PodMeta with empty name and uid."""
        reply = self._call("ContainerStatus", pw.encode((1, container_id), (2, True)))
        if reply is None:
            return None
        response = _decode(reply)
        status = pw.message(response, _CS_STATUS)
        info = _verbose_info(pw.string_map(response, _CS_INFO))
        labels = pw.string_map(status, _C_LABELS)
        meta = _container_meta(status, labels, info)
        sandbox_id = info.get("sandboxID")
        sandbox = self._sandbox(sandbox_id) if isinstance(sandbox_id, str) else {}
        sandbox_labels = pw.string_map(sandbox, _S_LABELS)
        return PodMeta(
            namespace=labels.get(POD_NAMESPACE, ""), name=labels.get(POD_NAME, ""),
            uid=labels.get(POD_UID, ""),
            ip=pw.string(pw.message(sandbox, _S_NETWORK), _NET_IP),
            labels=tuple(sorted((k, v) for k, v in sandbox_labels.items()
                                if not k.startswith("io.kubernetes."))),
            containers=(meta,),
        )

    def _sandbox(self, sandbox_id: str) -> pw.Fields:
        """A pod sandbox's status message ({} when unknown)."""
        reply = self._call("PodSandboxStatus", pw.encode((1, sandbox_id)))
        return pw.message(_decode(reply), _PS_STATUS) if reply is not None else {}


def _decode(reply: bytes) -> pw.Fields:
    try:
        return pw.decode(reply)
    except pw.WireError as exc:
        raise CriError(f"malformed CRI reply: {exc}") from exc


def _verbose_info(info: dict[str, str]) -> dict[str, object]:
    """The JSON under the verbose `info` key (containerd and CRI-O both use it)."""
    try:
        parsed = json.loads(info.get("info", "{}"))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _privileged(info: dict[str, object]) -> bool:
    """containerd: config.linux.security_context.privileged; CRI-O: privileged."""
    if info.get("privileged") is True:
        return True
    node: object = info
    for key in ("config", "linux", "security_context", "privileged"):
        if not isinstance(node, dict):
            return False
        node = node.get(key)
    return node is True


def _container_meta(status: pw.Fields, labels: dict[str, str],
                    info: dict[str, object]) -> ContainerMeta:
    image = pw.string(pw.message(status, _C_IMAGE), _IMAGE_IMAGE)
    image_ref = pw.string(status, _C_IMAGE_REF)
    if image.startswith("sha256:") and "@" in image_ref:
        image = image_ref.split("@", 1)[0]       # an image id: name it by its repository
    repository, tag, digest = image_parts(image)
    if not digest and "@" in image_ref:
        digest = image_ref.split("@", 1)[1]
    mounts = tuple(
        Mount(source=pw.string(m, _M_HOST_PATH), dest=pw.string(m, _M_CONTAINER_PATH),
              read_write=not pw.integer(m, _M_READONLY),
              propagation=PROPAGATION.get(pw.integer(m, _M_PROPAGATION), "private"))
        for m in pw.messages(status, _C_MOUNTS))
    return ContainerMeta(
        id=pw.string(status, _C_ID),
        name=labels.get(CONTAINER_NAME) or pw.string(pw.message(status, _C_METADATA), _META_NAME),
        image=image, image_repository=repository, image_tag=tag, image_digest=digest,
        privileged=_privileged(info), mounts=mounts,
        start_ts_ns=max(pw.integer(status, _C_STARTED_AT), 0),
    )
