"""Alerts as FalcoAlert resources: one per (rule, workload, node), counts exact.

`kubectl get falcoalerts -A` is the admin's view. A FalcoAlert lives in the pod's
namespace (the FalcoInstance's for host events) under a name derived from its identity,
so a restarted sensor continues the same object and adds to its count. Its `spec` is
the identity (rule, priority, source, tags, node, instance, workload) and the pod of the
first alert; its `status` holds the count, first and last seen, the last output, its
output fields and the last alert's pod.

Writes are bounded per node: each FalcoAlert with new alerts is written at most once per
flush (`flush_every_s`), and only while a token bucket (`outputs.rateLimit`: perSecond,
burst) has a token; alerts in between only raise the in-memory count, so nothing is lost
to the rate limit. A new FalcoAlert costs two requests (create, then its status); a
known one costs one status patch.

Each namespace holds at most `max_per_namespace` FalcoAlerts and none whose `lastSeen`
is older than `max_age_s`: after creating one, and at most every `GC_EVERY_S` seconds
per namespace, the sensor lists the namespace's FalcoAlerts and deletes the expired
ones and then the oldest beyond the cap (whichever node wrote them).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from falconer.sensor.alerts import TokenBucket
from falconer.sensor.kube import GROUP_VERSION, Kube, KubeRejected, falcoalerts_path
from falconer.sensor.podmeta import PodMeta
from falconer.sensor.sinks.base import Aggregate, ApiSink, Delivery, destination
from falconer.sensor.sinks.events import rfc3339

#: Label naming the node whose sensor writes the FalcoAlert.
NODE_LABEL = "falconer.io/node"
MAX_AGGREGATES = 4096
MAX_PER_NAMESPACE = 500
MAX_AGE_S = 7 * 24 * 3600
GC_EVERY_S = 60.0
#: Output field values that are unknown are written as Falco prints them.
UNKNOWN = "<NA>"


def alert_name(rule: str, workload_kind: str, workload_name: str, node: str) -> str:
    """A deterministic DNS-1123 name for the (rule, workload, node) aggregate:
    `<rule words>-<workload name>-<hash>` cut to fit 253 characters."""
    digest = hashlib.sha256("\0".join((rule, workload_kind, workload_name, node)).encode()).hexdigest()[:10]
    parts = [_slug(rule)[:80], _slug(workload_name)[:80], digest]
    return "-".join(p for p in parts if p)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class _Aggregate(Aggregate):
    """One FalcoAlert as this sensor knows it."""

    namespace: str = ""
    name: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    first: str = ""
    last: str = ""
    output: str = ""
    fields: dict[str, Any] | None = None
    pod: dict[str, str] | None = None


class FalcoAlertsSink(ApiSink):
    """FalcoAlert resources for alerts, aggregated per (rule, workload, node)."""

    name = "falcoAlerts"

    def __init__(self, kube: Kube, node: str, instance_namespace: str, instance_name: str,
                 rate_per_second: float, burst: int, flush_every_s: float = 1.0, err: TextIO | None = None,
                 max_per_namespace: int = MAX_PER_NAMESPACE, max_age_s: float = MAX_AGE_S,
                 max_aggregates: int = MAX_AGGREGATES) -> None:
        super().__init__(flush_every_s, err)
        self.kube = kube
        self.node = node
        self.instance_namespace = instance_namespace
        self.instance = f"{instance_namespace}/{instance_name}"
        self.bucket = TokenBucket(rate_per_second, burst)
        self.max_per_namespace = max_per_namespace
        self.max_age_s = max_age_s
        self.max_aggregates = max_aggregates
        self._alerts: dict[tuple[str, str], _Aggregate] = {}
        self._gc_due: dict[str, float] = {}

    def pending(self) -> int:
        return sum(a.total - a.written for a in self._alerts.values())

    # -- absorbing -----------------------------------------------------------------------

    def absorb(self, delivery: Delivery) -> None:
        """Count the alert into its FalcoAlert (made when new; dropped when no room)."""
        alert, pod = delivery.alert, delivery.pod
        kind, wl_name = _workload(pod)
        namespace = destination(delivery, self.instance_namespace)
        if namespace is None:
            self.counters.add("dropped")
            return
        key = (namespace, alert_name(alert.rule, kind, wl_name, self.node))
        agg = self._alerts.get(key)
        if agg is None:
            if not self._make_room():
                self.counters.add("dropped")
                return
            spec: dict[str, Any] = {"rule": alert.rule, "priority": alert.priority, "source": alert.source,
                                    "tags": list(alert.tags), "node": self.node, "instance": self.instance}
            if pod is not None:
                spec["pod"] = _pod_ref(pod)
                spec["workload"] = {"kind": kind, "name": wl_name}
            agg = _Aggregate(namespace=namespace, name=key[1], spec=spec, first=rfc3339(alert.time_ns))
            self._alerts[key] = agg
        agg.total += 1
        agg.last = rfc3339(alert.time_ns)
        agg.output = alert.output
        agg.fields = {k: UNKNOWN if v is None else v for k, v in alert.output_fields.items()}
        agg.pod = _pod_ref(pod) if pod is not None else None

    def _make_room(self) -> bool:
        if len(self._alerts) < self.max_aggregates:
            return True
        for key, agg in self._alerts.items():
            if not agg.dirty:
                del self._alerts[key]
                return True
        return False

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write each FalcoAlert with new alerts while tokens last; then collect garbage."""
        for agg in [a for a in self._alerts.values() if a.dirty]:
            if not self.bucket.take():
                break
            self._write(agg)
        now = time.monotonic()
        for namespace, due in list(self._gc_due.items()):
            if now >= due:
                self._gc_due[namespace] = now + GC_EVERY_S
                try:
                    self._gc(namespace)
                except KubeRejected as exc:
                    self.say(f"the cap of FalcoAlerts in {namespace} could not be enforced: {exc}")

    def _write(self, agg: _Aggregate) -> None:
        total = agg.total
        try:
            if not agg.created:
                self._create(agg)
            status: dict[str, Any] = {"count": agg.base + total, "firstSeen": agg.first, "lastSeen": agg.last,
                                      "lastOutput": agg.output, "lastOutputFields": agg.fields or {},
                                      "pod": agg.pod}
            self.kube.merge_patch(falcoalerts_path(agg.namespace, agg.name, "status"), {"status": status})
            self.counters.add("writes")
        except KubeRejected as exc:
            if exc.status == 404 and agg.created:  # removed by the cap or by hand: make it again
                agg.created, agg.base = False, -agg.written
                return
            self.refused(agg, f"FalcoAlert {agg.namespace}/{agg.name}", exc)
            return
        self.written(agg, total)

    def _create(self, agg: _Aggregate) -> None:
        """Create the FalcoAlert; an existing one (a restarted sensor) keeps its count."""
        body = {"apiVersion": GROUP_VERSION, "kind": "FalcoAlert",
                "metadata": {"name": agg.name, "namespace": agg.namespace, "labels": {NODE_LABEL: _label(self.node)}},
                "spec": agg.spec}
        try:
            self.kube.create(falcoalerts_path(agg.namespace), body)
            self.counters.add("writes")
            self._gc_due.setdefault(agg.namespace, 0.0)
            self._gc_due[agg.namespace] = min(self._gc_due[agg.namespace], time.monotonic())
        except KubeRejected as exc:
            if exc.status != 409:
                raise
            live = (self.kube.get(falcoalerts_path(agg.namespace, agg.name)) or {}).get("status") or {}
            self.counters.add("writes")
            agg.base = int(live.get("count") or 0)
            agg.first = str(live.get("firstSeen") or agg.first)
        agg.created = True

    def _gc(self, namespace: str) -> None:
        """Delete expired FalcoAlerts of the namespace, then the oldest beyond the cap."""
        items = self.kube.list(falcoalerts_path(namespace))
        self.counters.add("writes")
        cutoff = rfc3339(time.time_ns() - int(self.max_age_s * 1e9))

        def seen(obj: dict[str, Any]) -> str:
            return str((obj.get("status") or {}).get("lastSeen") or obj["metadata"].get("creationTimestamp") or "")

        items.sort(key=seen)
        expired = [o for o in items if seen(o) < cutoff]
        keep = [o for o in items if seen(o) >= cutoff]
        doomed = expired + keep[:max(0, len(keep) - self.max_per_namespace)]
        for obj in doomed:
            name = obj["metadata"]["name"]
            self.kube.delete(falcoalerts_path(namespace, name))
            self.counters.add("writes")
            agg = self._alerts.get((namespace, name))
            if agg is not None and not agg.dirty:
                del self._alerts[(namespace, name)]
            elif agg is not None:
                agg.created, agg.base = False, -agg.written


def _workload(pod: PodMeta | None) -> tuple[str, str]:
    """(kind, name) of the pod's workload; the pod itself when it has no controller;
    ("", "") for host events."""
    if pod is None:
        return "", ""
    if pod.workload is not None:
        return pod.workload.kind, pod.workload.name
    return "Pod", pod.name


def _pod_ref(pod: PodMeta) -> dict[str, str]:
    """A FalcoAlert's reference to a pod."""
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}


def _label(value: str) -> str:
    """A label value (at most 63 characters): the value, or a hash of a longer one."""
    return value if len(value) <= 63 else hashlib.sha256(value.encode()).hexdigest()[:63]
