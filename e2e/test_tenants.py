"""Issue 12's end to end: tenant rules on the real control plane and a real node.

The operator (all namespaces, as its least-privilege ServiceAccount) renders a
FalcoInstance with tenants enabled; the kubelet runs the sensor as the DaemonSet's pod.
A ClusterFalcoRule's rule and tenant A's FalcoRule's rule watch reads of two marker
files; busybox pods in namespaces A and B read both. Tenant A's rule fires for A's pod
and not for B's, its alerts land only in A, and the cluster rule fires in both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_fixtures import exec_in_pod, run_busybox_pod
from operator_harness import kubectl, wait_for
from sensor_cluster import pod_logs, start_operator, wait_sensor_attached

from falconer.operator.api import API_VERSION as GV
from falconer_e2e import images
from falconer_e2e.node import Node

pytestmark = [pytest.mark.kube, pytest.mark.ebpf, pytest.mark.timeout(1200)]

SUITE = {"suite": "e2e-tenants"}
CLUSTER_RULE, TENANT_RULE = "Cluster marker read", "Tenant marker read"
CLUSTER_MARKER, TENANT_MARKER = "/tmp/falconer-cluster-marker", "/tmp/falconer-tenant-marker"
ALERT_S = 60.0


def _rule(name: str, marker: str, priority: str) -> dict[str, Any]:
    return {"rule": name, "desc": f"a read of {marker}", "priority": priority,
            "condition": f"evt.type in (open, openat, openat2) and fd.name = {marker}",
            "output": f"{name} (file=%fd.name ns=%k8s.ns.name pod=%k8s.pod.name)"}


@pytest.fixture(scope="module")
def cluster(control_plane: Any, kube_client: Any, sensor_image_node: Node,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Operator, rules, instance, two tenant namespaces with a busybox pod each; the
    sensor pod Running and attached."""
    admin = Path(control_plane.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    ns, team_a, team_b = f"sec-{suffix}", f"team-a-{suffix}", f"team-b-{suffix}"
    for name in (ns, team_a, team_b):
        kubectl(admin, "create", "namespace", name)
    operator = start_operator(admin, tmp_path_factory.mktemp("tenants"), None)
    objs = [
        {"apiVersion": GV, "kind": "ClusterFalcoRule", "metadata": {"name": f"e2e-tenants-{suffix}", "labels": SUITE},
         "spec": {"items": [_rule(CLUSTER_RULE, CLUSTER_MARKER, "Warning")]}},
        {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "mine", "namespace": team_a, "labels": SUITE},
         "spec": {"items": [_rule(TENANT_RULE, TENANT_MARKER, "Notice")]}},
        {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": "fleet", "namespace": ns},
         "spec": {"ruleSelector": {"matchLabels": SUITE}, "tenants": {"enabled": True},
                  "image": images.REFS["sensor"], "imagePullPolicy": "Never",
                  "nodeSelector": {"kubernetes.io/hostname": sensor_image_node.name},
                  "criSocket": str(sensor_image_node.paths.containerd_socket),
                  "outputs": {"stdout": {"format": "json"}, "falcoAlerts": True, "kubernetesEvents": True}}},
    ]
    kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objs))
    try:
        pod = wait_sensor_attached(admin, ns, "fleet")
        pods = {team: _pod_name(run_busybox_pod(kube_client, team, "app",
                                                ["sh", "-c", "while true; do sleep 3600; done"]))
                for team in (team_a, team_b)}
        yield {"admin": admin, "ns": ns, "a": team_a, "b": team_b, "pods": pods, "sensor_pod": pod}
    finally:
        try:
            kubectl(admin, "delete", "falcoinstance", "fleet", "-n", ns, "--wait", "--timeout=90s", check=False)
        finally:
            operator.stop()  # even when the deletion timed out: never leave an operator running
        kubectl(admin, "delete", "clusterfalcorules", "-l", "suite=e2e-tenants", check=False)
        kubectl(admin, "delete", "namespace", ns, team_a, team_b, "--wait=false", check=False)


def _alerts(admin: Path) -> list[tuple[str, str]]:
    """(namespace, rule) of every FalcoAlert of this module's rules."""
    items = json.loads(kubectl(admin, "get", "falcoalerts", "-A", "-o", "json").stdout)["items"]
    return sorted({(i["metadata"]["namespace"], i["spec"]["rule"]) for i in items
                   if i["spec"]["rule"] in (CLUSTER_RULE, TENANT_RULE)})


def test_tenant_rule_fires_only_in_its_namespace_and_cluster_rule_everywhere(cluster: dict[str, Any]) -> None:
    admin, team_a, team_b = cluster["admin"], cluster["a"], cluster["b"]
    # B first, then A; each pod reads the tenant marker before the cluster marker, so once
    # the cluster rule's alert of a pod is in, its tenant marker read has been evaluated
    for team in (team_b, team_a):
        script = (f"echo x > {TENANT_MARKER}; cat {TENANT_MARKER}; echo x > {CLUSTER_MARKER}; "
                  f"cat {CLUSTER_MARKER}; sleep 1")
        done = exec_in_pod(admin, team, cluster["pods"][team], ["sh", "-c", script])
        assert done.returncode == 0, done.stderr
    wait_for(lambda: {(team_a, CLUSTER_RULE), (team_b, CLUSTER_RULE), (team_a, TENANT_RULE)} <= set(_alerts(admin)),
             timeout=ALERT_S, interval=1.0, what="the alerts")
    assert _alerts(admin) == sorted([(team_a, CLUSTER_RULE), (team_a, TENANT_RULE), (team_b, CLUSTER_RULE)])
    config = yaml.safe_load(kubectl(admin, "get", "configmap", "fleet-rules", "-n", cluster["ns"], "-o",
                                    "jsonpath={.data.falconer\\.yaml}").stdout)
    assert [o.get("tenant") for o in config["falcoRules"]] == [None, team_a]
    lines = [json.loads(ln) for ln in pod_logs(admin, cluster["ns"], cluster["sensor_pod"]).splitlines()
             if ln.startswith("{")]
    tenant_lines = [ln["output_fields"].get("k8s.ns.name") for ln in lines if ln.get("rule") == TENANT_RULE]
    assert tenant_lines and set(tenant_lines) == {team_a}


def _pod_name(pod: Any) -> str:
    """A created pod's name (the client's model types its metadata as optional)."""
    return str(pod.metadata.name)
