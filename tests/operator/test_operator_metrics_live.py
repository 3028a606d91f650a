"""FalcoInstance spec.metrics on the real control plane, the operator running as its
least-privilege ServiceAccount: the sensors' metrics Service comes with the setting and
goes without it; no ServiceMonitor is attempted where its CRD is not installed; the
API server refuses metrics without a TLS Secret (the CRD's CEL rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, kubectl, wait_for

from falconer.operator.kube import Kube

pytestmark = pytest.mark.kube

INSTANCE = "metered"


def apply_instance(admin: Path, namespace: str, node: str, metrics: dict[str, Any]) -> None:
    obj = {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE, "namespace": namespace},
           "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "metrics": metrics}}
    kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))


def test_metrics_service_follows_the_instance(operator: operator_harness.OperatorProcess, installed: Path,
                                              op_namespace: str, kube: Kube, sensor_node: str) -> None:
    apply_instance(installed, op_namespace, sensor_node,
                   {"enabled": True, "port": 9300, "tlsSecret": "metrics-tls", "serviceMonitor": True})
    service = wait_for(lambda: kube.get("v1", "Service", f"{INSTANCE}-sensor-metrics", op_namespace),
                       timeout=60, what="the metrics Service")
    assert service["spec"]["ports"][0]["port"] == 9300
    ds = wait_for(lambda: kube.get("apps/v1", "DaemonSet", f"{INSTANCE}-sensor", op_namespace), what="DaemonSet")
    assert ds["spec"]["template"]["spec"]["volumes"][-1]["secret"]["secretName"] == "metrics-tls"
    assert not kube.serves("monitoring.coreos.com/v1", "ServiceMonitor")   # no Prometheus Operator here

    apply_instance(installed, op_namespace, sensor_node, {"enabled": False})
    wait_for(lambda: kube.get("v1", "Service", f"{INSTANCE}-sensor-metrics", op_namespace) is None,
             timeout=60, what="the metrics Service to go")
    assert "Traceback" not in operator.log()


def test_metrics_without_tls_are_refused_by_the_api_server(installed: Path, op_namespace: str,
                                                           sensor_node: str) -> None:
    with pytest.raises(AssertionError, match="metrics.enabled needs metrics.tlsSecret"):
        apply_instance(installed, op_namespace, sensor_node, {"enabled": True})
