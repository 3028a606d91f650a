"""The cluster's Service names by ClusterIP, so `fd.sip.name` (and rip/cip/lip) can say
`kubernetes.default.svc.cluster.local` without asking the cluster's DNS (a hostNetwork
sensor usually cannot).

A list/watch of every Service (RBAC: `list` and `watch` on services) keeps
`addresses`: each ClusterIP (`spec.clusterIPs`, both families) ->
`<name>.<namespace>.svc.<cluster domain>`, the record cluster DNS serves for it
(Kubernetes DNS-Based Service Discovery spec, 2.4.1). Headless Services
(`clusterIP: None`) have no address of their own and give nothing. Same loop as the pod
watch (`sensor/podwatch.py`): list, watch from the list's resourceVersion, relist on
410 Gone, on failure (with backoff) and every RESYNC_S.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from falconer.sensor.config import DEFAULT_CLUSTER_DOMAIN
from falconer.sensor.podwatch import BACKOFF_S, MAX_BACKOFF_S, RESYNC_S, WATCH_TIMEOUT_S, Gone


@dataclass
class ServiceStats:
    """What the Service watch did (for the sensor's summary)."""

    lists: int = 0
    gone: int = 0
    failures: int = 0
    events: int = 0


def service_addresses(svc: Any, domain: str) -> dict[str, str]:
    """ClusterIP(s) -> DNS name of one V1Service (empty for a headless one)."""
    spec, meta = svc.spec, svc.metadata
    if spec is None:
        return {}
    ips = spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else [])
    name = f"{meta.name}.{meta.namespace}.svc.{domain}"
    return {ip: name for ip in ips if ip and ip != "None"}


def _uid(svc: Any) -> str:
    return str(svc.metadata.uid)


class ServiceNames:
    """Keeps `addresses` (ClusterIP -> Service DNS name) equal to the API server's
    Services. `start()` runs the loop in a daemon thread, `stop()` ends it. The map is
    replaced whole on every change, so readers take no lock."""

    def __init__(self, api: client.ApiClient, domain: str = DEFAULT_CLUSTER_DOMAIN,
                 resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.domain = domain
        self.resync_s = resync_s
        self.stats = ServiceStats()
        self.addresses: dict[str, str] = {}
        self._by_uid: dict[str, dict[str, str]] = {}
        self._core = client.CoreV1Api(api)
        self._clock = clock
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="falconer-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def wait_synced(self, timeout_s: float) -> bool:
        """Whether a first list completed within the timeout."""
        return self._synced.wait(timeout_s)

    def run(self) -> None:
        """List, then watch, until stopped."""
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
                if self._stop.is_set():
                    return   # stop() cut the watch's connection: no failure
                self.stats.failures += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _relist(self) -> str:
        services = self._core.list_service_for_all_namespaces()
        self._by_uid = {_uid(s): service_addresses(s, self.domain) for s in services.items}
        self._publish()
        self.stats.lists += 1
        self._synced.set()
        return str(services.metadata.resource_version if services.metadata is not None else "")

    def _publish(self) -> None:
        self.addresses = {ip: n for names in self._by_uid.values() for ip, n in names.items()}

    def _watch_once(self, version: str, resync_at: float) -> str:
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        timeout = max(1, min(WATCH_TIMEOUT_S, int(resync_at - self._clock())))
        events = self._watch.stream(  # type: ignore[no-untyped-call]
            self._core.list_service_for_all_namespaces, resource_version=version,
            timeout_seconds=timeout, allow_watch_bookmarks=True)
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
            self._by_uid.pop(_uid(obj), None)
        else:
            self._by_uid[_uid(obj)] = service_addresses(obj, self.domain)
        self._publish()
        self.stats.events += 1
        return str(obj.metadata.resource_version)
