"""The default mode: one operator for all namespaces, with only its shipped RBAC.

Runs alone (pytest runs modules one after another and every module stops its operator),
so no other operator handles these objects meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import operator_harness
import pytest
import yaml
from operator_harness import GV, kubectl, wait_for

from falconer.operator.kube import Kube

#: How a permission denial reads in the operator's log.
DENIED = re.compile(r"Forbidden|\(403\)|\b403 ")

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def clusterwide(installed: Path, operator_kubeconfig: Path, op_namespace: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[operator_harness.OperatorProcess]:
    proc = operator_harness.OperatorProcess(
        operator_kubeconfig, None, tmp_path_factory.mktemp("operator-log") / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        operator_harness.stop_after_deleting_instances(proc, installed, op_namespace)


def test_all_namespaces_with_least_privilege(clusterwide: operator_harness.OperatorProcess, installed: Path,
                                             op_namespace: str, kube: Kube) -> None:
    objs = [
        {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "cw"},
         "spec": {"items": [{"rule": "R", "desc": "d", "condition": "evt.type = execve and proc.name = bash",
                             "output": "o", "priority": "Notice"}]}},
        {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": "cw"}, "spec": {}},
    ]
    kubectl(installed, "apply", "-n", op_namespace, "-f", "-", stdin=yaml.safe_dump_all(objs))
    cm = wait_for(lambda: kube.get("v1", "ConfigMap", "cw-rules", op_namespace), what="the ConfigMap")
    assert "rules-cw.yaml" in cm["data"]
    inst = wait_for(lambda: (i := kube.get(GV, "FalcoInstance", "cw", op_namespace))
                    and (i.get("status") or {}).get("observedGeneration") == 1 and i, what="instance status")
    assert inst["status"]["rules"] == [{"name": "cw", "generation": 1, "valid": True}]
    assert clusterwide.alive
    log = clusterwide.log()
    # A denied call shows as "Forbidden" or an HTTP "(403)"; a bare "403" would also match
    # a log line's milliseconds (",403]").
    assert not DENIED.search(log) and "Traceback" not in log, log[-3000:]
