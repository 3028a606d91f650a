"""The pods this node runs, indexed by pod UID and by container id.

Filled by the pod watch (a background thread) and read by the event loop, so every
access holds one lock; reads are dict lookups. Bounded: a node runs at most kubelet's
`maxPods` (110 by default); pods beyond MAX_PODS are not indexed and are counted in
`overflow`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from falconer.sensor.podmeta import PodMeta

MAX_PODS = 1024


class PodIndex:
    """pod UID -> PodMeta and container id (64 hex) -> PodMeta, thread-safe."""

    def __init__(self, limit: int = MAX_PODS) -> None:
        self.limit = limit
        self.overflow = 0             # pods not indexed because the index was full
        self._lock = threading.Lock()
        self._by_uid: dict[str, PodMeta] = {}
        self._by_container: dict[str, PodMeta] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)

    def put(self, pod: PodMeta) -> None:
        """Add or replace one pod (by UID)."""
        with self._lock:
            self._put(pod)

    def remove(self, uid: str) -> None:
        """Forget a deleted pod."""
        with self._lock:
            self._remove(uid)

    def replace(self, pods: Iterable[PodMeta]) -> None:
        """Make the index exactly these pods (a relist)."""
        with self._lock:
            self._by_uid.clear()
            self._by_container.clear()
            for pod in pods:
                self._put(pod)

    def by_uid(self, uid: str) -> PodMeta | None:
        """The pod with this UID."""
        with self._lock:
            return self._by_uid.get(uid)

    def by_container(self, container_id: str) -> PodMeta | None:
        """The pod running the container with this full (64-hex) id."""
        with self._lock:
            return self._by_container.get(container_id)

    def _put(self, pod: PodMeta) -> None:
        if pod.uid not in self._by_uid and len(self._by_uid) >= self.limit:
            self.overflow += 1
            return
        self._remove(pod.uid)
        self._by_uid[pod.uid] = pod
        for c in pod.containers:
            self._by_container[c.id] = pod

    def _remove(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is not None:
            for c in old.containers:
                if self._by_container.get(c.id) is old:
                    del self._by_container[c.id]
