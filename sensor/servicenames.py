"""The cluster's Service names by ClusterIP, so `fd.sip.name` (and rip/cip/lip) can say
`kubernetes.default.svc.cluster.local` without asking the cluster's DNS (a hostNetwork
sensor usually cannot).

A list/watch of every Service (RBAC: `list` and `watch` on services) keeps
`addresses`: each ClusterIP (`spec.clusterIPs`, both families) ->
`<name>.<namespace>.svc.<cluster domain>`, the record cluster DNS serves for it
(Kubernetes DNS-Based Service Discovery spec, 2.4.1). Headless Services
(`clusterIP: None`) have no address of their own and give nothing. The loop is the pod
watch's (`sensor/listwatch.py`): list, watch from the list's resourceVersion, relist on
410 Gone, on failure (with backoff) and every RESYNC_S.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from falconer.sensor import kube
from falconer.sensor.config import DEFAULT_CLUSTER_DOMAIN
from falconer.sensor.listwatch import RESYNC_S, ListWatch


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


class ServiceNames(ListWatch):
    """Keeps `addresses` (ClusterIP -> Service DNS name) equal to the API server's
    Services with the list/watch loop of sensor/listwatch.py. `start()` runs it in a
    daemon thread, `stop()` ends it. The map is replaced whole on every change, so
    readers take no lock."""

    thread_name = "falconer-services"

    def __init__(self, api: Any, domain: str = DEFAULT_CLUSTER_DOMAIN,
                 resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(resync_s, clock)
        self.domain = domain
        self.addresses: dict[str, str] = {}
        self._by_uid: dict[str, dict[str, str]] = {}
        self._core = kube.typed_api(api, "v1")

    def _list_call(self) -> tuple[Callable[..., Any], dict[str, Any]]:
        return self._core.list_service_for_all_namespaces, {}

    def _load(self, items: list[Any]) -> None:
        self._by_uid = {_uid(s): service_addresses(s, self.domain) for s in items}
        self._publish()

    def _change(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            self._by_uid.pop(_uid(obj), None)
        else:
            self._by_uid[_uid(obj)] = service_addresses(obj, self.domain)
        self._publish()

    def _publish(self) -> None:
        self.addresses = {ip: n for names in self._by_uid.values() for ip, n in names.items()}
