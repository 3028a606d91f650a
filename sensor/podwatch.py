"""A watch of the pods on this node (field selector `spec.nodeName=<node>`) that keeps a
PodIndex current with the list/watch loop of sensor/listwatch.py (relist on 410 Gone,
on failure and every RESYNC_S). A lookup that misses the index can ask for an immediate
relist (`relist_now`), at most once per MIN_RELIST_S.

Each Pod becomes a PodMeta: containers from `status.containerStatuses` (and init and
ephemeral ones) by their runtime id (`containerd://<id>`), image as kubelet reports it
from the runtime, privileged from the container's `securityContext`, mounts from its
`volumeMounts` and the pod's `volumes`, start time from `state.running.startedAt`, and
the workload (see `Workloads`). Sources: Kubernetes API reference, Pod v1 core;
kubelet's volume directory layout (`<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from falconer.sensor import kube
from falconer.sensor.listwatch import RESYNC_S, ListWatch

from falconer.sensor.podindex import PodIndex
from falconer.sensor.podmeta import ContainerMeta, Mount, PodMeta, Workload, image_parts

MIN_RELIST_S = 1.0
#: kubelet's default --root-dir: where a pod's volumes live on the node.
KUBELET_ROOT = "/var/lib/kubelet"
#: Owners (kind, namespace, name) remembered by Workloads.
MAX_OWNERS = 1024

#: mountPropagation -> the Linux name Falco prints (as for CRI mounts).
_PROPAGATION = {"HostToContainer": "rslave", "Bidirectional": "rshared"}
#: volume source attribute -> kubelet's volume plugin directory name.
_VOLUME_PLUGINS = {
    "empty_dir": "empty-dir", "config_map": "configmap", "secret": "secret",
    "projected": "projected", "downward_api": "downward-api", "csi": "csi",
    "persistent_volume_claim": "pvc",
}


class Workloads:
    """The workload that owns a pod, as `kubectl` names it.

    A ReplicaSet is followed to its Deployment and a Job to its CronJob by reading the
    owner (apps/v1 replicasets, batch/v1 jobs: `get`). When RBAC forbids the read, a
    ReplicaSet's Deployment is derived from its name: the Deployment controller names
    it `<deployment>-<pod-template-hash>`, and the pod carries that hash as its
    `pod-template-hash` label; a Job is then reported as the Job. `derived` counts the
    pods named that way. Owners read are cached (bounded)."""

    def __init__(self, api: Any) -> None:
        self._apps = kube.typed_api(api, "apps/v1")
        self._batch = kube.typed_api(api, "batch/v1")
        self._owners: OrderedDict[tuple[str, str, str], Workload | None] = OrderedDict()
        self.forbidden: set[str] = set()      # owner kinds RBAC does not let us read
        self.derived = 0

    def of(self, pod: Any) -> Workload:
        """The workload of a V1Pod (the pod itself when no controller owns it)."""
        meta = pod.metadata
        ref = next((r for r in meta.owner_references or [] if r.controller), None)
        if ref is None:
            return Workload("Pod", meta.name)
        if ref.kind == "ReplicaSet":
            up = self._owner("ReplicaSet", meta.namespace, ref.name)
            if up is not None:
                return up
            if "ReplicaSet" in self.forbidden:
                return self._derived(ref.name, (meta.labels or {}).get("pod-template-hash"))
        elif ref.kind == "Job":
            up = self._owner("Job", meta.namespace, ref.name)
            if up is not None:
                return up
        return Workload(ref.kind, ref.name)

    def _derived(self, rs_name: str, template_hash: str | None) -> Workload:
        if template_hash and rs_name.endswith("-" + template_hash):
            self.derived += 1
            return Workload("Deployment", rs_name[:-len(template_hash) - 1])
        return Workload("ReplicaSet", rs_name)

    def _owner(self, kind: str, namespace: str, name: str) -> Workload | None:
        """The controller of a ReplicaSet or Job (None: none, forbidden or gone)."""
        key = (kind, namespace, name)
        if key in self._owners:
            self._owners.move_to_end(key)
            return self._owners[key]
        if kind in self.forbidden:
            return None
        try:
            obj = kube.call(self._apps.read_namespaced_replica_set if kind == "ReplicaSet"
                            else self._batch.read_namespaced_job, name, namespace)
        except kube.KubeRejected as exc:
            if exc.status == 403:
                self.forbidden.add(kind)
            return None
        refs = obj.metadata.owner_references if obj.metadata is not None else None
        ref = next((r for r in refs or [] if r.controller), None)
        found = Workload(ref.kind, ref.name) if ref is not None else None
        self._owners[key] = found
        if len(self._owners) > MAX_OWNERS:
            self._owners.popitem(last=False)
        return found


def _ns(stamp: Any) -> int:
    """A datetime from the API as ns since the epoch (0 when absent)."""
    return int(stamp.timestamp()) * 1_000_000_000 if stamp is not None else 0


def _volume_source(pod_uid: str, volume: Any) -> str:
    """Where a volume is on the node: a hostPath's path, else kubelet's directory."""
    if volume is None:
        return ""
    if volume.host_path is not None:
        return str(volume.host_path.path)
    plugin = next((p for attr, p in _VOLUME_PLUGINS.items()
                   if getattr(volume, attr, None) is not None), "unknown")
    return f"{KUBELET_ROOT}/pods/{pod_uid}/volumes/kubernetes.io~{plugin}/{volume.name}"


def _mounts(pod: Any, spec_container: Any) -> tuple[Mount, ...]:
    volumes = {v.name: v for v in pod.spec.volumes or []}
    out = []
    for vm in spec_container.volume_mounts or []:
        source = _volume_source(pod.metadata.uid, volumes.get(vm.name))
        if vm.sub_path:
            source = f"{source}/{vm.sub_path}"
        out.append(Mount(source=source, dest=vm.mount_path, read_write=not vm.read_only,
                         propagation=_PROPAGATION.get(vm.mount_propagation or "", "private")))
    return tuple(out)


def _container(pod: Any, status: Any, spec_container: Any) -> ContainerMeta | None:
    """One container with a runtime id (None before the runtime created it)."""
    _, sep, cid = (status.container_id or "").partition("://")
    if not sep or not cid:
        return None
    image = status.image or (spec_container.image if spec_container is not None else "")
    repository, tag, digest = image_parts(image)
    if not digest and "@" in (status.image_id or ""):
        digest = status.image_id.split("@", 1)[1]
    security = spec_container.security_context if spec_container is not None else None
    running = status.state.running if status.state is not None else None
    return ContainerMeta(
        id=cid, name=status.name, image=image, image_repository=repository,
        image_tag=tag, image_digest=digest,
        privileged=bool(security is not None and security.privileged),
        mounts=_mounts(pod, spec_container) if spec_container is not None else (),
        start_ts_ns=_ns(running.started_at) if running is not None else 0,
    )


def pod_meta(pod: Any, workload: Workload | None) -> PodMeta:
    """A V1Pod as the sensor keeps it."""
    spec, status = pod.spec, pod.status
    specs = {c.name: c for c in [*(spec.containers or []), *(spec.init_containers or []),
                                 *(spec.ephemeral_containers or [])]}
    statuses = [*(status.container_statuses or []), *(status.init_container_statuses or []),
                *(status.ephemeral_container_statuses or [])] if status is not None else []
    containers = (_container(pod, s, specs.get(s.name)) for s in statuses)
    return PodMeta(
        namespace=pod.metadata.namespace, name=pod.metadata.name, uid=pod.metadata.uid,
        node=spec.node_name or "", ip=(status.pod_ip or "") if status is not None else "",
        labels=tuple(sorted((pod.metadata.labels or {}).items())),
        workload=workload,
        containers=tuple(c for c in containers if c is not None),
    )


class PodWatch(ListWatch):
    """Keeps `index` equal to the pods the API server has on `node`.

    `start()` runs the list/watch loop (sensor/listwatch.py) in a daemon thread; `stop()`
    ends it. `relist_now()` may be called from any thread. Needs RBAC `list` and `watch`
    on pods (cluster-wide, field-selected to the node); `get` on replicasets and jobs is
    optional (see Workloads).
    """

    thread_name = "falconer-podwatch"

    def __init__(self, api: Any, node: str, index: PodIndex | None = None,
                 resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(resync_s, clock)
        self.node = node
        self.index = index if index is not None else PodIndex()
        self.workloads = Workloads(api)
        self._core = kube.typed_api(api, "v1")
        self._selector = f"spec.nodeName={node}"
        self._list_lock = threading.Lock()
        self._last_list = -MIN_RELIST_S

    def relist_now(self) -> bool:
        """List the node's pods now, unless a list ran less than MIN_RELIST_S ago;
        returns whether it listed (and succeeded)."""
        if self._clock() - self._last_list < MIN_RELIST_S:
            return False
        try:
            self._relist()
        except Exception:  # noqa: BLE001 - counted; the loop retries with backoff
            self.stats.failures += 1
            return False
        return True

    def _relist(self) -> str:
        with self._list_lock:
            self._last_list = self._clock()
            return super()._relist()

    def _list_call(self) -> tuple[Callable[..., Any], dict[str, Any]]:
        return self._core.list_pod_for_all_namespaces, {"field_selector": self._selector}

    def _load(self, items: list[Any]) -> None:
        # Built before the index's lock is taken: owners may need API reads.
        self.index.replace([pod_meta(p, self.workloads.of(p)) for p in items])

    def _change(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            self.index.remove(obj.metadata.uid)
        else:
            self.index.put(pod_meta(obj, self.workloads.of(obj)))


