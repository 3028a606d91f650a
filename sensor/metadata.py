"""Which pod and container an event came from: the one place that combines the cgroup
identity (always known), the pod watch's index and the CRI socket.

Lookup order for a process in a container: the index by container id (the watch saw
kubelet report it); else the runtime over CRI (knows the container before kubelet
reports it; pod labels and IP from its sandbox), cached per container id, bounded;
else the index by the pod UID from the cgroup path (the pod is known, its status not
yet); else, once per MIN_RELIST_S, an immediate relist of the node's pods. What is
still unknown is a miss, counted in `stats.misses`; a failed container is asked again
after RETRY_S, not on every event. Fields of an index pod win over the runtime's
(labels and workload come only from the API server).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from falconer.sensor.containers import Cgroup
from falconer.sensor.cri import CriClient, CriError
from falconer.sensor.names import AddressNames
from falconer.sensor.podindex import PodIndex
from falconer.sensor.podmeta import ContainerMeta, PodMeta

if TYPE_CHECKING:
    from falconer.sensor.event import SensorEvent
    from falconer.sensor.podwatch import PodWatch

#: Containers whose CRI answer (or miss) is remembered.
MAX_CACHED = 4096
#: Seconds before a container that could not be resolved is asked about again.
RETRY_S = 1.0

#: What a lookup returns: the pod (None outside Kubernetes or unknown) and the container.
Found = tuple["PodMeta | None", "ContainerMeta | None"]
NOT_FOUND: Found = (None, None)


@dataclass
class MetadataStats:
    """Where lookups were answered: one lookup per event in a container that asked for
    a container/pod field beyond container.id."""

    index: int = 0             # the watch's index, by container id
    cri: int = 0               # the runtime (first answer for a container)
    pod_uid: int = 0           # the index by the cgroup's pod UID (container not reported yet)
    relists: int = 0           # immediate relists a miss asked for
    cri_errors: int = 0        # CRI calls that failed (socket, timeout, reply)
    misses: int = 0            # lookups that found no metadata at all


class Metadata:
    """The pod/container resolver the event fields and the sinks use (see module doc).

    All sources are optional: with none, containers are known by their id only.
    `relist` is the pod watch's `relist_now` (returns whether it listed).
    """

    def __init__(self, index: PodIndex | None = None, cri: CriClient | None = None,
                 relist: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self.cri = cri
        self.relist = relist
        self.stats = MetadataStats()
        #: Socket addresses' names (fd.*ip.name): the runner gives it the resolver and
        #: the Service names.
        self.names = AddressNames()
        self._clock = clock
        self._runtime_name: str | None = None
        self._watch: PodWatch | None = None
        #: container id -> (CRI answer or None, when to ask again if None)
        self._cri_cache: OrderedDict[str, tuple[PodMeta | None, float]] = OrderedDict()

    def follow(self, watch: PodWatch) -> None:
        """Take pods from a pod watch (its index, and its relist for misses)."""
        self.index = watch.index
        self.relist = watch.relist_now
        self._watch = watch

    def report(self) -> str:
        """One summary line: where lookups were answered, what was missed or lost."""
        m = self.stats
        line = (f"container metadata lookups: index {m.index}, CRI {m.cri}, pod UID "
                f"{m.pod_uid}, relists {m.relists}, CRI errors {m.cri_errors}, "
                f"misses {m.misses}")
        w = self._watch
        if w is not None:
            line += (f"; pod watch: lists {w.stats.lists}, 410 Gone {w.stats.gone}, failures "
                     f"{w.stats.failures}, events {w.stats.events}, pods not indexed (full) "
                     f"{w.index.overflow}, deployments named from the ReplicaSet "
                     f"{w.workloads.derived}")
        return line

    def lookup(self, cgroup: Cgroup) -> Found:
        """(pod, container) of a process's cgroup identity; (None, None) on the host."""
        if cgroup.is_host:
            return NOT_FOUND
        cid = cgroup.container_id
        found = self._from_index(cid)
        if found is not None:
            self.stats.index += 1
            return found
        runtime = self._from_cri(cid)
        uid = cgroup.pod_uid or (runtime.uid if runtime is not None else "")
        pod = self._by_uid(uid)
        if pod is None and runtime is None and self.relist is not None and self.relist():
            self.stats.relists += 1
            found = self._from_index(cid)
            if found is not None:
                return found
            pod = self._by_uid(uid)
        container = runtime.container(cid) if runtime is not None else None
        if pod is not None:
            self.stats.pod_uid += 1
            return pod, container
        if runtime is not None:
            return (runtime if runtime.uid else None), container
        self.stats.misses += 1
        return NOT_FOUND

    def _by_uid(self, uid: str) -> PodMeta | None:
        return self.index.by_uid(uid) if self.index is not None and uid else None

    def _from_index(self, cid: str) -> Found | None:
        pod = self.index.by_container(cid) if self.index is not None else None
        return (pod, pod.container(cid)) if pod is not None else None

    def _from_cri(self, cid: str) -> PodMeta | None:
        """The runtime's view of a container, cached; None when unknown or failing."""
        if self.cri is None:
            return None
        cached = self._cri_cache.get(cid)
        now = self._clock()
        if cached is not None and (cached[0] is not None or now < cached[1]):
            self._cri_cache.move_to_end(cid)
            return cached[0]
        try:
            answer = self.cri.container(cid)
        except CriError:
            self.stats.cri_errors += 1
            answer = None
        if answer is not None:
            self.stats.cri += 1
        self._cri_cache[cid] = (answer, now + RETRY_S)
        self._cri_cache.move_to_end(cid)
        if len(self._cri_cache) > MAX_CACHED:
            self._cri_cache.popitem(last=False)
        return answer

    def runtime_name(self, cgroup: Cgroup) -> str:
        """Falco's container.type: the cgroup's runtime, or the CRI runtime's name for
        a kubepods path that does not name its runtime."""
        if cgroup.runtime != "cri" or self.cri is None:
            return cgroup.runtime
        name = self.cri_runtime_name()
        return name if name in ("containerd", "cri-o") else "cri"

    def cri_runtime_name(self) -> str:
        """The CRI runtime's own name ("" when it cannot be asked), asked once."""
        if self._runtime_name is None:
            try:
                self._runtime_name = self.cri.version().runtime_name if self.cri else ""
            except CriError:
                self.stats.cri_errors += 1
                self._runtime_name = ""
        return self._runtime_name


def pod_of(ev: SensorEvent) -> PodMeta | None:
    """The pod an event came from (None on the host or when unknown)."""
    return ev.meta()[0]


def container_of(ev: SensorEvent) -> ContainerMeta | None:
    """The container an event came from (None on the host or when unknown)."""
    return ev.meta()[1]
