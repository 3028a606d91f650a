"""A watch of the pods on this node (field selector `spec.nodeName=<node>`) that keeps a
PodIndex current: list, then watch from the list's resourceVersion; relist when the
server answers 410 Gone (the version is too old), when the watch fails, and every
RESYNC_S so that a missed event cannot stay wrong. A lookup that misses the index can
ask for an immediate relist (`relist_now`), at most once per MIN_RELIST_S.

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
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from falconer.sensor.podindex import PodIndex
from falconer.sensor.podmeta import ContainerMeta, Mount, PodMeta, Workload, image_parts

RESYNC_S = 300.0
MIN_RELIST_S = 1.0
#: How long one watch request may stay open (server side), seconds.
WATCH_TIMEOUT_S = 60
#: Backoff after a failed list or watch, doubling up to the maximum, seconds.
BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0
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


@dataclass
class WatchStats:
    """What the watch did (for the sensor's summary)."""

    lists: int = 0              # full lists (first, 410, resync, failure, on request)
    gone: int = 0               # 410 Gone answers
    failures: int = 0           # lists or watches that raised
    events: int = 0             # ADDED / MODIFIED / DELETED applied


class Workloads:
    """The workload that owns a pod, as `kubectl` names it.

    A ReplicaSet is followed to its Deployment and a Job to its CronJob by reading the
    owner (apps/v1 replicasets, batch/v1 jobs: `get`). When RBAC forbids the read, a
    ReplicaSet's Deployment is derived from its name: the Deployment controller names
    it `<deployment>-<pod-template-hash>`, and the pod carries that hash as its
    `pod-template-hash` label; a Job is then reported as the Job. `derived` counts the
    pods named that way. Owners read are cached (bounded)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api)
        self._batch = client.BatchV1Api(api)
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
            obj = (self._apps.read_namespaced_replica_set(name, namespace) if kind == "ReplicaSet"
                   else self._batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
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


class PodWatch:
    """Keeps `index` equal to the pods the API server has on `node`.

    `start()` runs the list/watch loop in a daemon thread; `stop()` ends it at its next
    wake-up. `relist_now()` may be called from any thread. Needs RBAC `list` and
    `watch` on pods (cluster-wide, field-selected to the node); `get` on replicasets and
    jobs is optional (see Workloads).
    """

    def __init__(self, api: client.ApiClient, node: str, index: PodIndex | None = None,
                 resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.resync_s = resync_s
        self.index = index if index is not None else PodIndex()
        self.stats = WatchStats()
        self.workloads = Workloads(api)
        self._core = client.CoreV1Api(api)
        self._selector = f"spec.nodeName={node}"
        self._clock = clock
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._list_lock = threading.Lock()
        self._last_list = -MIN_RELIST_S
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="falconer-podwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def wait_synced(self, timeout_s: float) -> bool:
        """Whether a first list completed within the timeout."""
        return self._synced.wait(timeout_s)

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
        """Replace the index with a fresh list; returns its resourceVersion."""
        with self._list_lock:
            self._last_list = self._clock()
            pods = self._core.list_pod_for_all_namespaces(field_selector=self._selector)
            # Built before the index's lock is taken: owners may need API reads.
            fresh = [pod_meta(p, self.workloads.of(p)) for p in pods.items]
            self.index.replace(fresh)
            self.stats.lists += 1
            self._synced.set()
            return str(pods.metadata.resource_version if pods.metadata is not None else "")

    def run(self) -> None:
        """List, then watch, until stopped (see the module docstring)."""
        backoff = BACKOFF_S
        while not self._stop.is_set():
            try:
                version = self._relist()
                resync_at = self._clock() + self.resync_s
                while not self._stop.is_set() and self._clock() < resync_at:
                    version = self._watch_once(version, resync_at)
                backoff = BACKOFF_S
            except Gone:
                self.stats.gone += 1
            except Exception:  # noqa: BLE001 - any failure: back off, then relist
                self.stats.failures += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _watch_once(self, version: str, resync_at: float) -> str:
        """One watch request from `version`; returns the last version seen."""
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        timeout = max(1, min(WATCH_TIMEOUT_S, int(resync_at - self._clock())))
        events = self._watch.stream(  # type: ignore[no-untyped-call]
            self._core.list_pod_for_all_namespaces, field_selector=self._selector,
            resource_version=version, timeout_seconds=timeout, allow_watch_bookmarks=True)
        try:
            for event in events:
                version = self._apply(event, version)
                if self._stop.is_set():
                    break
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        return version

    def _apply(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            raw = event.get("raw_object") or {}
            if raw.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {raw}")
        if kind == "BOOKMARK":
            return str(obj["metadata"]["resourceVersion"] if isinstance(obj, dict)
                       else obj.metadata.resource_version)
        if kind == "DELETED":
            self.index.remove(obj.metadata.uid)
        else:
            self.index.put(pod_meta(obj, self.workloads.of(obj)))
        self.stats.events += 1
        return str(obj.metadata.resource_version)


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): relist."""
