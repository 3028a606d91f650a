"""Each API sink against the real API server, as the sensor's own least-privilege account.

Pods are created as API objects (no kubelet runs them; the sinks only need their
identity); the pod metadata the enrichment would give is built from them. Host events
go to the Node (Events) and to the instance's namespace (FalcoAlerts); a tenant rule's alerts
only to its namespace (sinks/base.py destination).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import wait_for
from sensor_identity import sensor_identity

from falconer.engine import Alert
from falconer.sensor import kube as sensor_kube
from falconer.sensor.podmeta import PodMeta, Workload
from falconer.sensor.sinks.base import Delivery, destination
from falconer.sensorreport import RulesOrigin, rule_key
from falconer.sensor.sinks.events import NODE_EVENT_NAMESPACE, EventsSink
from falconer.sensor.sinks.falcoalerts import FalcoAlertsSink, alert_name
from falconer.sensor.sinks.status import StatusReporter

INSTANCE = "fi"
NODE = "sinks-test-node"
SHELL = "Terminal shell in container"


@pytest.fixture
def sensor_api(control_plane: Any, kube_namespace: str, tmp_path: Path) -> sensor_kube.Kube:
    """The sinks' API access with the sensor's own identity (as rendered by the operator)."""
    config = sensor_identity(Path(control_plane.kubeconfig), kube_namespace, INSTANCE, tmp_path)
    return sensor_kube.Kube(sensor_kube.api_client(config))


@pytest.fixture
def admin(kube_client: Any) -> sensor_kube.Kube:
    """The same calls with the admin identity, for reading back."""
    return sensor_kube.Kube(kube_client)


def make_pod(admin: sensor_kube.Kube, namespace: str, name: str, workload: Workload | None) -> PodMeta:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    made = admin.create(f"/api/v1/namespaces/{namespace}/pods", body)
    return PodMeta(namespace, name, made["metadata"]["uid"], node=NODE, workload=workload)


def alert(rule: str = SHELL, priority: str = "Notice", n: int = 0) -> Alert:
    return Alert(rule=rule, priority=priority, source="syscall", time_ns=time.time_ns(),
                 output=f"{rule} (proc.name=bash n={n})", output_fields={"proc.name": "bash", "n": n,
                                                                          "container.id": None},
                 tags=["container", "T1059"])


def offer_all(sink: Any, deliveries: list[Delivery]) -> None:
    sink.start()
    for d in deliveries:
        sink.offer(d)
    sink.close(timeout_s=30)


def events_of(admin: sensor_kube.Kube, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in admin.list(sensor_kube.events_path(namespace))
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
            and e["source"].get("component") == "falconer-sensor"]


def test_events_on_the_pod_and_the_node_aggregated_by_count(sensor_api, admin, kube_namespace) -> None:
    pod = make_pod(admin, kube_namespace, "shell-pod", None)
    sink = EventsSink(sensor_api, NODE, rate_per_second=10, burst=10, flush_every_s=0.2, err=io.StringIO())
    deliveries = [Delivery(alert(SHELL, "Warning", i), pod) for i in range(25)]
    deliveries += [Delivery(alert("ShadowRead", "Notice", i), None) for i in range(7)]
    offer_all(sink, deliveries)
    assert sink.stats().delivered == 32 and sink.stats().dropped == 0

    (on_pod,) = events_of(admin, kube_namespace, "Pod", "shell-pod")
    assert on_pod["count"] == 25 and on_pod["type"] == "Warning"
    assert on_pod["reason"] == "TerminalShellInContainer"  # the rule name is not a valid reason word
    assert on_pod["metadata"]["annotations"]["falconer.io/rule"] == SHELL
    assert on_pod["message"] == f"{SHELL} (proc.name=bash n=24)"  # names its rule already: no prefix
    assert on_pod["involvedObject"]["uid"] == pod.uid
    assert on_pod["source"] == {"component": "falconer-sensor", "host": NODE}
    assert on_pod["firstTimestamp"] <= on_pod["lastTimestamp"]
    (on_node,) = events_of(admin, NODE_EVENT_NAMESPACE, "Node", NODE)
    assert on_node["count"] >= 7 and on_node["type"] == "Normal" and on_node["reason"] == "ShadowRead"
    assert on_node["message"] == "ShadowRead (proc.name=bash n=6)"  # a valid reason needs no prefix


def test_event_message_is_cut_to_the_api_limit(sensor_api, admin, kube_namespace) -> None:
    pod = make_pod(admin, kube_namespace, "long-pod", None)
    long = Alert(rule="Long rule", priority="Error", source="syscall", time_ns=time.time_ns(), output="x" * 5000,
                 output_fields={})
    sink = EventsSink(sensor_api, NODE, 10, 10, flush_every_s=0.2, err=io.StringIO())
    offer_all(sink, [Delivery(long, pod)])
    (ev,) = events_of(admin, kube_namespace, "Pod", "long-pod")
    assert len(ev["message"]) == 1024 and ev["message"].startswith("Long rule: xxx") and ev["message"].endswith("...")
    assert ev["reason"] == "LongRule"


def test_falcoalerts_one_per_rule_workload_node(sensor_api, admin, kube_namespace) -> None:
    web = Workload("Deployment", "web")
    a, b = make_pod(admin, kube_namespace, "web-1", web), make_pod(admin, kube_namespace, "web-2", web)
    bare = make_pod(admin, kube_namespace, "bare", None)
    sink = FalcoAlertsSink(sensor_api, NODE, kube_namespace, INSTANCE, 10, 10, flush_every_s=0.2,
                           err=io.StringIO())
    deliveries = [Delivery(alert(n=i), a) for i in range(30)] + [Delivery(alert(n=i), b) for i in range(12)]
    deliveries += [Delivery(alert(n=i), bare) for i in range(3)] + [Delivery(alert("Host thing"), None)]
    offer_all(sink, deliveries)
    assert (sink.stats().delivered, sink.stats().dropped) == (46, 0)

    items = {o["metadata"]["name"]: o for o in admin.list(sensor_kube.falcoalerts_path(kube_namespace))}
    fa = items[alert_name(SHELL, "Deployment", "web", NODE)]
    assert fa["spec"] == {"rule": SHELL, "priority": "Notice", "source": "syscall", "tags": ["container", "T1059"],
                          "node": NODE, "instance": f"{kube_namespace}/{INSTANCE}",
                          "pod": {"namespace": kube_namespace, "name": "web-1", "uid": a.uid},
                          "workload": {"kind": "Deployment", "name": "web"}}
    st = fa["status"]
    assert st["count"] == 42 and st["firstSeen"] <= st["lastSeen"]
    assert st["lastOutput"] == f"{SHELL} (proc.name=bash n=11)"
    assert st["lastOutputFields"] == {"proc.name": "bash", "n": 11, "container.id": "<NA>"}
    assert st["pod"] == {"namespace": kube_namespace, "name": "web-2", "uid": b.uid}
    assert items[alert_name(SHELL, "Pod", "bare", NODE)]["status"]["count"] == 3
    host = items[alert_name("Host thing", "", "", NODE)]
    assert host["status"]["count"] == 1 and "workload" not in host["spec"] and "pod" not in host["status"]
    assert len(items) == 3


def test_a_restarted_sensor_continues_the_counts(sensor_api, admin, kube_namespace) -> None:
    pod = make_pod(admin, kube_namespace, "again", None)
    for _ in range(2):  # two sensor lifetimes
        events = EventsSink(sensor_api, NODE, 10, 10, flush_every_s=0.2, err=io.StringIO())
        alerts = FalcoAlertsSink(sensor_api, NODE, kube_namespace, INSTANCE, 10, 10, flush_every_s=0.2,
                                 err=io.StringIO())
        for sink in (events, alerts):
            offer_all(sink, [Delivery(alert(n=i), pod) for i in range(5)])
    (ev,) = events_of(admin, kube_namespace, "Pod", "again")
    assert ev["count"] == 10
    fa = admin.get(sensor_kube.falcoalerts_path(kube_namespace, alert_name(SHELL, "Pod", "again", NODE)))
    assert fa["status"]["count"] == 10


def test_falcoalerts_capped_per_namespace_oldest_first(sensor_api, admin, kube_namespace) -> None:
    pod = make_pod(admin, kube_namespace, "many", None)
    sink = FalcoAlertsSink(sensor_api, NODE, kube_namespace, INSTANCE, 100, 100, flush_every_s=0.1,
                           err=io.StringIO(), max_per_namespace=2)
    sink.start()
    for i in range(4):
        sink.offer(Delivery(alert(f"Rule {i}"), pod))
        time.sleep(1.2)  # lastSeen has a resolution of one second
    sink.close(timeout_s=30)
    left = sorted(o["spec"]["rule"] for o in admin.list(sensor_kube.falcoalerts_path(kube_namespace)))
    assert left == ["Rule 2", "Rule 3"]


def test_a_rate_limit_delays_writes_but_loses_no_count(sensor_api, admin, kube_namespace) -> None:
    pods = [make_pod(admin, kube_namespace, f"p{i}", None) for i in range(5)]
    sink = FalcoAlertsSink(sensor_api, NODE, kube_namespace, INSTANCE, rate_per_second=2, burst=1,
                           flush_every_s=0.1, err=io.StringIO())
    sink.start()
    started = time.monotonic()
    for p in pods:
        for i in range(4):
            sink.offer(Delivery(alert(n=i), p))
    wait_for(lambda: sink.stats().delivered == 20, timeout=30, what="all counts written")
    assert time.monotonic() - started >= 1.5  # 5 FalcoAlerts at 2 per second, one at a time
    sink.close()
    counts = [o["status"]["count"] for o in admin.list(sensor_kube.falcoalerts_path(kube_namespace))]
    assert sorted(counts) == [4] * 5


def test_status_report_names_what_was_loaded(sensor_api, admin, kube_namespace) -> None:
    drops = {"kernel": 3, "falcoAlerts": 0}
    reporter = StatusReporter(sensor_api, NODE, kube_namespace, INSTANCE, lambda: dict(drops), flush_every_s=0.2,
                              err=io.StringIO())
    reporter.start()
    reporter.loaded("abc123", (RulesOrigin("r.yaml", kube_namespace, "r", 4),))
    for i in range(3):
        reporter.offer(Delivery(alert(n=i), None))
    path = f"/apis/falconer.io/v1alpha1/namespaces/{kube_namespace}/falcoinstances/{INSTANCE}"

    def entry() -> dict[str, Any]:
        return ((admin.get(path).get("status") or {}).get("sensors") or {}).get(NODE) or {}

    got = wait_for(lambda: (e := entry()).get("alerts", {}).get("total") == 3 and e, what="the report")
    assert got["rulesHash"] == "abc123" and got["lastReloadError"] == ""
    assert got["falcoRules"] == [{"namespace": kube_namespace, "name": "r", "generation": 4}]
    assert got["alerts"]["byRule"] == {SHELL: 3} and got["drops"] == drops
    reporter.reload_failed("r.yaml:1:1: LOAD_ERR_YAML_PARSE: broken")
    wait_for(lambda: "LOAD_ERR_YAML_PARSE" in entry().get("lastReloadError", ""), what="the reload error")
    assert entry()["rulesHash"] == "abc123"  # still the rules it runs
    reporter.close()


# -- tenant alerts (falconer.engine.scope) go to their namespace only ---------------------
TENANT_RULE = "Tool run"


@pytest.fixture
def other_namespace(admin: sensor_kube.Kube, kube_namespace: str) -> Iterator[str]:
    name = f"{kube_namespace}-b"
    admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")


def _tenant_alert(namespace: str, n: int = 0) -> Any:
    return dataclasses.replace(alert(TENANT_RULE, "Warning", n), namespace=namespace)


def test_destination_rules() -> None:
    pod_a, pod_b = PodMeta("a", "p", "u1", node=NODE), PodMeta("b", "q", "u2", node=NODE)
    assert destination(Delivery(_tenant_alert("a"), pod_a), "ops") == "a"
    assert destination(Delivery(_tenant_alert("a"), pod_b), "ops") is None
    assert destination(Delivery(_tenant_alert("a"), None), "ops") is None
    assert destination(Delivery(alert(), pod_b), "ops") == "b"
    assert destination(Delivery(alert(), None), "ops") == "ops"
    assert rule_key("a", TENANT_RULE) == "a/Tool run" and rule_key("", TENANT_RULE) == TENANT_RULE


def test_tenant_alerts_land_only_in_their_namespace(sensor_api, admin, kube_namespace, other_namespace) -> None:
    tenant = other_namespace
    own = make_pod(admin, tenant, "own", None)
    foreign = make_pod(admin, kube_namespace, "foreign", None)
    deliveries = [Delivery(_tenant_alert(tenant, i), own) for i in range(4)]
    deliveries += [Delivery(_tenant_alert(tenant, 9), foreign), Delivery(_tenant_alert(tenant, 10), None)]

    alerts = FalcoAlertsSink(sensor_api, NODE, kube_namespace, INSTANCE, 10, 10, flush_every_s=0.2,
                             err=io.StringIO())
    offer_all(alerts, deliveries)
    assert (alerts.stats().delivered, alerts.stats().dropped) == (4, 2)
    in_tenant = admin.list(sensor_kube.falcoalerts_path(tenant))
    assert [(o["spec"]["rule"], o["status"]["count"]) for o in in_tenant] == [(TENANT_RULE, 4)]
    assert admin.list(sensor_kube.falcoalerts_path(kube_namespace)) == []

    events = EventsSink(sensor_api, NODE, rate_per_second=10, burst=10, flush_every_s=0.2, err=io.StringIO())
    offer_all(events, deliveries)
    assert (events.stats().delivered, events.stats().dropped) == (4, 2)
    (on_pod,) = events_of(admin, tenant, "Pod", "own")
    assert on_pod["count"] == 4
    assert events_of(admin, kube_namespace, "Pod", "foreign") == []
    assert events_of(admin, NODE_EVENT_NAMESPACE, "Node", NODE) == [] or all(
        e["metadata"]["annotations"]["falconer.io/rule"] != TENANT_RULE
        for e in events_of(admin, NODE_EVENT_NAMESPACE, "Node", NODE))


def test_status_counts_tenant_rules_apart(sensor_api, kube_namespace) -> None:
    reporter = StatusReporter(sensor_api, NODE, kube_namespace, INSTANCE, dict, err=io.StringIO())
    reporter.offer(Delivery(_tenant_alert("team-a"), None))
    reporter.offer(Delivery(_tenant_alert("team-b"), None))
    reporter.offer(Delivery(alert(TENANT_RULE), None))
    assert reporter.report().alerts_by_rule == {"team-a/Tool run": 1, "team-b/Tool run": 1, TENANT_RULE: 1}
