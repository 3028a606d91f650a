"""Alerts as Kubernetes Events on the Pod they came from (on the Node for host events).

Like kubelet's EventCorrelator, repeated alerts become one Event whose `count` and
`lastTimestamp` grow (and whose message is the latest output), not one Event each: an
Event is identified by (involved object, reason, type), and written at most once per
flush (`flush_every_s`) and only while the write budget (a token bucket from
`outputs.rateLimit`) allows; counts pile up in memory meanwhile, so they stay exact.
Its name is derived from that identity and the node, so a restarted sensor continues
the same Event (adding to the count the API server holds) instead of starting a new one.

What the API server accepts (checked on kube-apiserver v1.34): a core/v1 Event is
created whatever its `reason` (spaces, 200 characters), `message` (5000 characters) or
even `type`, but the same Event read or written through events.k8s.io/v1 must keep
`reason` within 128 characters and the message (its `note`) within 1024 (the
events.k8s.io/v1 API reference), and the convention is a short UpperCamelCase reason.
So a rule name that is not such a word is mapped (`reason_for`), the rule name is kept
in the message and the `falconer.io/rule` annotation, messages are cut to 1024
characters, and `type` is Normal or Warning. Events of a Node live in namespace
`default`, like kubelet's.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, TextIO

from falconer.sensor.alerts import TokenBucket
from falconer.sensor.kube import Kube, KubeRejected, events_path
from falconer.sensor.sinks.base import Aggregate, ApiSink, Delivery, destination

#: The Event's source component and reportingComponent.
COMPONENT = "falconer-sensor"
#: Annotation holding the rule's name (the reason may be a mapping of it).
RULE_ANNOTATION = "falconer.io/rule"
#: events.k8s.io's note limit; core/v1 messages are cut to it too.
MAX_MESSAGE = 1024
MAX_REASON = 128
#: Distinct Events kept in memory; a new one beyond it replaces the oldest fully written
#: one, or is dropped (counted) when all are still waiting to be written.
MAX_AGGREGATES = 4096
#: Node Events live here (as kubelet's do).
NODE_EVENT_NAMESPACE = "default"
#: Falco's priorities from Warning up (Falco's `priority` names, lower-cased).
WARNING_OR_WORSE = frozenset({"emergency", "alert", "critical", "error", "warning"})
_UPPER_CAMEL = re.compile(r"[A-Z][A-Za-z0-9]*")


def reason_for(rule: str) -> str:
    """The Event reason for a rule: the rule name when it is already an UpperCamelCase
    word of at most 128 characters, else its words joined in UpperCamelCase
    ("Terminal shell in container" -> "TerminalShellInContainer"); "FalcoAlert" when no
    word is left."""
    if len(rule) <= MAX_REASON and _UPPER_CAMEL.fullmatch(rule):
        return rule
    words = re.findall(r"[A-Za-z0-9]+", rule)
    mapped = "".join(w[:1].upper() + w[1:] for w in words)
    if not mapped or not mapped[0].isalpha():
        mapped = "Falco" + mapped
    return mapped[:MAX_REASON]


def event_type(priority: str) -> str:
    """Warning for Warning and more severe priorities, Normal below (Falco's names)."""
    return "Warning" if priority.lower() in WARNING_OR_WORSE else "Normal"


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as Kubernetes' Time (seconds, UTC)."""
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Aggregate(Aggregate):
    """One Event as this sensor knows it."""

    namespace: str = ""
    name: str = ""
    body: dict[str, Any] = field(default_factory=dict)  # without count, message, timestamps
    first_ns: int = 0
    last_ns: int = 0
    message: str = ""


class EventsSink(ApiSink):
    """Kubernetes Events for alerts, aggregated per (involved object, reason, type)."""

    name = "kubernetesEvents"

    def __init__(self, kube: Kube, node: str, rate_per_second: float, burst: int,
                 flush_every_s: float = 1.0, err: TextIO | None = None,
                 max_aggregates: int = MAX_AGGREGATES) -> None:
        super().__init__(flush_every_s, err)
        self.kube = kube
        self.node = node
        self.bucket = TokenBucket(rate_per_second, burst)
        self.max_aggregates = max_aggregates
        self._events: dict[tuple[str, str], _Aggregate] = {}

    def pending(self) -> int:
        return sum(a.total - a.written for a in self._events.values())

    # -- absorbing -----------------------------------------------------------------------

    def absorb(self, delivery: Delivery) -> None:
        """Count the alert into its Event (made when new; dropped when there is no room)."""
        alert = delivery.alert
        namespace = destination(delivery, NODE_EVENT_NAMESPACE)
        if namespace is None:
            self.counters.add("dropped")
            return
        involved = self._involved(delivery)
        reason, type_ = reason_for(alert.rule), event_type(alert.priority)
        digest = hashlib.sha256("\0".join((involved["kind"], namespace, involved["name"],
                                           involved.get("uid", ""), alert.rule, type_, self.node))
                                .encode()).hexdigest()[:16]
        key = (namespace, f"{involved['name']}.{digest}")
        agg = self._events.get(key)
        if agg is None:
            if not self._make_room():
                self.counters.add("dropped")
                return
            agg = _Aggregate(namespace=namespace, name=key[1], first_ns=alert.time_ns,
                             body=self._body(involved, namespace, key[1], alert.rule, reason, type_))
            self._events[key] = agg
        agg.total += 1
        agg.last_ns = max(agg.last_ns, alert.time_ns)
        agg.message = _message(alert.rule, reason, alert.output)

    def _involved(self, delivery: Delivery) -> dict[str, str]:
        pod = delivery.pod
        if pod is None:
            return {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node}
        return {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid}

    def _body(self, involved: dict[str, str], namespace: str, name: str, rule: str, reason: str,
              type_: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace, "annotations": {RULE_ANNOTATION: rule}},
            "involvedObject": involved,
            "reason": reason,
            "type": type_,
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
        }

    def _make_room(self) -> bool:
        """Room for one more Event: forget the oldest fully written one if full."""
        if len(self._events) < self.max_aggregates:
            return True
        for key, agg in self._events.items():  # insertion order: oldest first
            if not agg.dirty:
                del self._events[key]
                return True
        return False

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every Event with new alerts, as the write budget allows (the rest wait)."""
        for agg in [a for a in self._events.values() if a.dirty]:
            if not self.bucket.take():
                return
            self._write(agg)

    def _write(self, agg: _Aggregate) -> None:
        total = agg.total
        changes = {"count": agg.base + total, "message": agg.message,
                   "lastTimestamp": rfc3339(agg.last_ns)}
        try:
            if not agg.created:
                self._create(agg, changes)
            else:
                self.kube.merge_patch(events_path(agg.namespace, agg.name), changes)
                self.counters.add("writes")
        except KubeRejected as exc:
            if exc.status == 404 and agg.created:  # expired (the Event TTL): start it again
                agg.created, agg.base = False, -agg.written
                return
            self.refused(agg, f"Event {agg.namespace}/{agg.name}", exc)
            return
        self.written(agg, total)

    def _create(self, agg: _Aggregate, changes: dict[str, Any]) -> None:
        """POST the Event; if it exists (a restarted sensor), continue its count."""
        body = {**agg.body, **changes, "firstTimestamp": rfc3339(agg.first_ns)}
        try:
            self.kube.create(events_path(agg.namespace), body)
            self.counters.add("writes")
        except KubeRejected as exc:
            if exc.status != 409:
                raise
            live = self.kube.get(events_path(agg.namespace, agg.name)) or {}
            agg.base = int(live.get("count") or 0)
            self.kube.merge_patch(events_path(agg.namespace, agg.name), {**changes, "count": agg.base + agg.total})
            self.counters.add("writes", 2)
        agg.created = True


def _message(rule: str, reason: str, output: str) -> str:
    """The output line, prefixed with the rule's name when the reason had to be mapped
    (unless the output already starts with it)."""
    text = output if reason == rule or output.startswith(rule) else f"{rule}: {output}"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."
