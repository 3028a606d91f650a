"""The operator's API load stays flat as tenants add rules (kopf indexes, operator/
catalog.py; each rule's status computed once per change): the requests the operator's
ServiceAccount makes in a steady period (resyncs every 10 s here) with 100 FalcoRules in
20 tenant namespaces, against 5 FalcoRules in one. Counted by the API server itself
(API Priority and Fairness: requests dispatched for the `service-accounts` flow schema;
the operator is the only ServiceAccount client of this control plane). Prints the
numbers (`pytest -s`)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, kubectl, wait_for
from tenant_attacks import CLUSTER, TENANT_OK

from falconer.operator.kube import Kube

pytestmark = [pytest.mark.kube, pytest.mark.timeout(1500)]

SUITE = {"suite": "tenant-load"}
WINDOW_S = 30.0
SERVICE_ACCOUNTS = re.compile(
    r'^apiserver_flowcontrol_dispatched_requests_total\{[^}]*flow_schema="service-accounts"[^}]*\} (\S+)$', re.M)


def dispatched(admin: Path) -> float:
    """Requests the API server dispatched for ServiceAccounts so far (read as admin)."""
    text = kubectl(admin, "get", "--raw", "/metrics").stdout
    return sum(float(v) for v in SERVICE_ACCOUNTS.findall(text))


BY_RESOURCE = re.compile(r'^apiserver_request_total\{([^}]*)\} (\S+)$', re.M)


def by_resource(admin: Path) -> dict[str, float]:
    """All clients' requests so far by `verb resource[/subresource]` (for the printout)."""
    text = kubectl(admin, "get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for labels, value in BY_RESOURCE.findall(text):
        kv = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{kv.get('verb')} {kv.get('resource')}{'/' + kv['subresource'] if kv.get('subresource') else ''}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def per_minute(admin: Path) -> float:
    start, start_by = dispatched(admin), by_resource(admin)
    time.sleep(WINDOW_S)
    end_by = by_resource(admin)
    busiest = sorted(((v - start_by.get(k, 0.0), k) for k, v in end_by.items()), reverse=True)[:6]
    print("\n  busiest (all clients):", ", ".join(f"{k} {d * 60.0 / WINDOW_S:.0f}/min" for d, k in busiest if d))
    return (dispatched(admin) - start) * 60.0 / WINDOW_S


def tenant_rules(namespaces: list[str], per_namespace: int) -> list[dict[str, Any]]:
    return [{"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": f"r{i}", "namespace": ns, "labels": SUITE},
             "spec": {"items": yaml.safe_load(TENANT_OK.replace("Tool run", f"Tool run {i}")
                                              .replace("my_tools", f"my_tools_{i}")
                                              .replace("my_tool_run", f"my_tool_run_{i}"))}}
            for ns in namespaces for i in range(per_namespace)]


@pytest.fixture(scope="module")
def fleet(installed: Path, operator_kubeconfig: Path, op_namespace: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    namespaces = [f"{op_namespace}-{n}" for n in range(20)]
    kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
        + [{"apiVersion": GV, "kind": "ClusterFalcoRule", "metadata": {"name": "tenant-load-base", "labels": SUITE},
            "spec": {"items": yaml.safe_load(CLUSTER)}},
           {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": "fleet", "namespace": op_namespace},
            "spec": {"ruleSelector": {"matchLabels": SUITE}, "tenants": {"enabled": True}}}]))
    proc = operator_harness.OperatorProcess(
        operator_kubeconfig, None, tmp_path_factory.mktemp("operator-log") / "operator.log")
    proc.start()
    try:
        yield op_namespace, namespaces
    finally:
        operator_harness.stop_after_deleting_instances(proc, installed, op_namespace)  # refreshes 101 statuses
        kubectl(installed, "delete", "clusterfalcorules", "-l", "suite=tenant-load", check=False)
        kubectl(installed, "delete", "namespace", *namespaces, "--wait=false", check=False)


def settled(installed: Path, kube: Kube, namespace: str, rules: int) -> bool:
    """Every rule loaded and its status written (Applied), so what follows is steady."""
    inst = kube.get(GV, "FalcoInstance", "fleet", namespace) or {}
    if len((inst.get("status") or {}).get("rules") or ()) != rules:
        return False
    listed = yaml.safe_load(kubectl(installed, "get", "falcorules,clusterfalcorules", "-A", "-l",
                                    "suite=tenant-load", "-o", "yaml").stdout)["items"]
    applied = [c for o in listed for c in (o.get("status") or {}).get("conditions") or ()
               if c["type"] == "Applied" and c["status"] == "True"]
    return len(listed) == rules == len(applied)


def test_requests_per_minute_stay_flat(fleet: tuple[str, list[str]], installed: Path, kube: Kube) -> None:
    namespace, tenants = fleet
    kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump_all(tenant_rules(tenants[:1], 5)))
    wait_for(lambda: settled(installed, kube, namespace, 1 + 5), timeout=300, interval=2.0, what="5 rules loaded")
    time.sleep(15)
    small = per_minute(installed)
    start = dispatched(installed)
    kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump_all(tenant_rules(tenants, 5)))
    wait_for(lambda: settled(installed, kube, namespace, 1 + 100), timeout=900, interval=5.0,
             what="100 rules loaded")
    added = dispatched(installed) - start
    time.sleep(15)
    large = per_minute(installed)
    print(f"\noperator API requests/min, steady: {small:.0f} with 5 FalcoRules in 1 namespace, "
          f"{large:.0f} with 100 in 20; {added:.0f} requests to take in 95 new FalcoRules")
    assert large <= small * 1.5 + 30
