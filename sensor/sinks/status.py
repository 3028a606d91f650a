"""The node's report in its FalcoInstance's status: what it loaded, what it saw, what it lost.

Writes `status.sensors.<node>` (a `report.NodeReport`) with a JSON merge patch on the
instance's status subresource, so each node changes only its own entry. It writes when
something changed, at most every `flush_every_s` seconds, and at once after a reload
(`loaded`, `reload_failed` wake the worker). Alerts are counted in `offer` itself (a
locked counter, no queue), so the report's counts lose nothing.
"""

from __future__ import annotations

import collections
import datetime
import threading
import time
from collections.abc import Callable
from typing import TextIO

from falconer.sensor.kube import Kube, KubeRejected, falcoinstance_status_path
from falconer.sensorconfig import RulesOrigin
from falconer.sensorreport import MAX_RULES_REPORTED, NodeReport, rule_key, status_patch
from falconer.sensor.sinks.base import ApiSink, Delivery

#: Seconds between two reports at most (a changed report waits at most this long).
REPORT_EVERY_S = 5.0
#: An unchanged report is written again after this many seconds, so the operator can
#: tell a quiet sensor from one that is gone (operator/rollup.py STALE_AFTER_S).
HEARTBEAT_S = 60.0


def now() -> str:
    """The current time, RFC 3339 UTC (seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusReporter(ApiSink):
    """Reports this node's loaded rules, alert counts and losses to its FalcoInstance."""

    name = "status"

    def __init__(self, kube: Kube, node: str, instance_namespace: str, instance_name: str,
                 drops: Callable[[], dict[str, int]], flush_every_s: float = REPORT_EVERY_S,
                 err: TextIO | None = None) -> None:
        super().__init__(flush_every_s, err)
        self.kube = kube
        self.node = node
        self.path = falcoinstance_status_path(instance_namespace, instance_name)
        self.drops = drops
        self._lock = threading.Lock()
        self._alerts: collections.Counter[str] = collections.Counter()
        self._rules_hash = ""
        self._origins: tuple[RulesOrigin, ...] = ()
        self._loaded_at = ""
        self._started_at = now()
        self._error = ""
        self._last_sent: dict[str, object] | None = None
        self._last_write = 0.0

    def offer(self, delivery: Delivery) -> None:
        """Count the alert by rule (no queue: counting cannot be lost)."""
        with self._lock:
            self._alerts[rule_key(delivery.alert.namespace, delivery.alert.rule)] += 1
        self.counters.add("offered")
        self.counters.add("delivered")

    def absorb(self, delivery: Delivery) -> None:
        """Never queued (see `offer`)."""

    def loaded(self, rules_hash: str, origins: tuple[RulesOrigin, ...]) -> None:
        """Rules were loaded: report them (and clear the last reload error) now."""
        with self._lock:
            self._rules_hash, self._origins, self._loaded_at, self._error = rules_hash, origins, now(), ""
        self.wake()

    def reload_failed(self, reason: str) -> None:
        """A reload failed (the previous rules keep running): report the reason now."""
        with self._lock:
            self._error = reason[:1024]
        self.wake()

    def report(self) -> NodeReport:
        """The report as it would be written now."""
        with self._lock:
            top = dict(self._alerts.most_common(MAX_RULES_REPORTED))
            return NodeReport(rules_hash=self._rules_hash, falco_rules=self._origins, loaded_at=self._loaded_at,
                              last_reload_error=self._error, reported_at=now(), started_at=self._started_at,
                              alerts_total=sum(self._alerts.values()), alerts_by_rule=top, drops=self.drops())

    def flush(self) -> None:
        """Write the report when it differs from the last one written (time aside)."""
        if not self._loaded_at:
            return
        report = self.report()
        compare = {k: v for k, v in report.to_status().items() if k != "reportedAt"}
        if compare == self._last_sent and time.monotonic() - self._last_write < HEARTBEAT_S:
            return
        try:
            self.kube.merge_patch(self.path, status_patch(self.node, report))
        except KubeRejected as exc:
            self.counters.add("failures")
            self.say(f"status report refused: {exc}")
            self._last_sent = compare  # retried when the report changes, not in a loop
            return
        self.counters.add("writes")
        self._last_sent, self._last_write = compare, time.monotonic()
