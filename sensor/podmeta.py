"""What the sensor knows about the pod and container an event came from.

One typed definition shared by the parts that fill it (cgroup -> container id, the
CRI socket, the watch of this node's pods) and the parts that read it (the `container.*`
and `k8s.*` fields, and the sinks that route an alert to the pod's namespace as a
FalcoAlert and an Event on the Pod).

Sources of the facts: a Pod's `metadata`/`spec`/`status.containerStatuses`
(Kubernetes API reference, "Pod v1 core"); Falco's container fields
(falcosecurity/plugins `plugins/container`, field names `container.*`, `k8s.*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mount:
    """One mount of a container: `container.mounts` renders `source:dest:mode:rdwr:propagation`."""

    source: str
    dest: str
    mode: str = ""
    read_write: bool = True
    propagation: str = ""


@dataclass(frozen=True)
class ContainerMeta:
    """One container, by its full 64-hex runtime id (`container.id` is its first 12)."""

    id: str                              # 64 hex characters
    name: str = ""
    image: str = ""                      # as the runtime reports it (kubelet's containerStatuses
                                         # image, CRI's ImageSpec), e.g.
                                         # "docker.io/library/busybox:1.36"
    image_repository: str = ""           # "docker.io/library/busybox" (registry host kept)
    image_tag: str = ""                  # "1.36" ("latest" when the reference has none)
    image_digest: str = ""               # "sha256:…" when known
    privileged: bool = False
    mounts: tuple[Mount, ...] = ()
    start_ts_ns: int = 0                 # container start, ns since the epoch (0 unknown)


@dataclass(frozen=True)
class Workload:
    """The controller that owns a pod, followed through a ReplicaSet to its Deployment
    (and a Job to its CronJob) as `kubectl` shows it; a bare pod is its own workload."""

    kind: str                            # "Deployment", "DaemonSet", "Pod", ...
    name: str


@dataclass(frozen=True)
class PodMeta:
    """One pod on this node, as the API server (or the CRI) describes it."""

    namespace: str
    name: str
    uid: str
    node: str = ""
    ip: str = ""
    labels: tuple[tuple[str, str], ...] = ()        # sorted (key, value) pairs
    workload: Workload | None = None
    containers: tuple[ContainerMeta, ...] = field(default=())

    def label(self, key: str) -> str | None:
        """The value of one label, or None."""
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def container(self, container_id: str) -> ContainerMeta | None:
        """The container with this id (full, or a prefix of at least 12 characters)."""
        for c in self.containers:
            if c.id.startswith(container_id) or container_id.startswith(c.id):
                return c
        return None


def image_parts(ref: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of an image reference, as Falco splits it.

    "docker.io/library/busybox:1.36" -> ("docker.io/library/busybox", "1.36", "");
    "registry:5000/app@sha256:ab.." -> ("registry:5000/app", "", "sha256:ab..");
    "busybox" -> ("busybox", "latest", ""). The registry host (and port) stays in the
    repository; a tag is only a `:` after the last `/`.
    """
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:], digest
    return name, "" if digest else "latest", digest
