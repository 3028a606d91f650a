"""Tenant rules in the operator (operator/tenancy.py), on the real API server with the
operator running for all namespaces as its least-privilege ServiceAccount: a
ClusterFalcoRule and a tenant's FalcoRule reach the instance's ConfigMap in their scopes;
every attempt of the attack matrix (tests/support/tenant_attacks.py) is refused and
reported in the FalcoRule's status at the offending item; a ClusterFalcoRule has status.

Runs alone (pytest runs modules one after another and every module stops its operator);
the ClusterFalcoRules it makes are deleted at its end, so other modules never see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, Timeout, condition, kubectl, wait_for
from tenant_attacks import ATTACKS, CLUSTER, TENANT_OK

from falconer.operator.kube import Kube

pytestmark = pytest.mark.kube

SUITE = {"suite": "tenant-operator"}
BASE = "tenant-operator-base"


@pytest.fixture(scope="module")
def setup(installed: Path, operator_kubeconfig: Path, op_namespace: str, kube: Kube,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    team_a, team_b = f"{op_namespace}-a", f"{op_namespace}-b"
    proc = operator_harness.OperatorProcess(
        operator_kubeconfig, None, tmp_path_factory.mktemp("operator-log") / "operator.log")
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team_a}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team_b}},
        {"apiVersion": GV, "kind": "ClusterFalcoRule", "metadata": {"name": BASE, "labels": SUITE},
         "spec": {"items": yaml.safe_load(CLUSTER)}},
        {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "good", "namespace": team_a, "labels": SUITE},
         "spec": {"items": yaml.safe_load(TENANT_OK)}},
    ]
    objs += [{"apiVersion": GV, "kind": "FalcoRule",
              "metadata": {"name": f"attack-{i}", "namespace": team_b, "labels": SUITE},
              "spec": {"items": attack.items}} for i, attack in enumerate(ATTACKS)]
    objs.append({"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": "fleet", "namespace": op_namespace},
                 "spec": {"ruleSelector": {"matchLabels": SUITE}, "tenants": {"enabled": True}}})
    proc.start()
    try:
        kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump_all(objs))
        yield {"ns": op_namespace, "a": team_a, "b": team_b, "proc": proc}
    finally:
        try:
            operator_harness.stop_after_deleting_instances(proc, installed, op_namespace)
        finally:
            kubectl(installed, "delete", "clusterfalcorules", "-l", "suite=tenant-operator", check=False)
            kubectl(installed, "delete", "namespace", team_a, team_b, "--wait=false", check=False)


def _config(kube: Kube, ns: str) -> dict[str, Any]:
    cm = wait_for(lambda: kube.get("v1", "ConfigMap", "fleet-rules", ns), what="the ConfigMap")
    config: dict[str, Any] = yaml.safe_load(cm["data"]["falconer.yaml"])
    return config


def test_cluster_and_tenant_rules_reach_the_configmap_in_their_scopes(setup: dict[str, Any], kube: Kube) -> None:
    ns, team_a = setup["ns"], setup["a"]
    inst = wait_for(lambda: (i := kube.get(GV, "FalcoInstance", "fleet", ns))
                    and len((i.get("status") or {}).get("rules") or ()) == 2 + len(ATTACKS) and i,
                    timeout=60, what="the instance's rules")
    rules = {r["name"]: r["valid"] for r in inst["status"]["rules"]}
    assert rules[f"ClusterFalcoRule/{BASE}"] and rules[f"{team_a}/good"]
    assert not any(v for k, v in rules.items() if "/attack-" in k)
    config = _config(kube, ns)
    assert config["rulesFiles"] == [f"cluster-{BASE}.yaml", f"ns-{team_a}.good.yaml"]
    assert [(o["namespace"], o["name"], o.get("tenant")) for o in config["falcoRules"]] == [
        ("", BASE, None), (team_a, "good", team_a)]
    assert config["tenantMaxPriority"] == "Warning"
    assert inst["status"]["counts"] == {"rules": 2, "macros": 4, "lists": 2}


def _refused(kube: Kube, namespace: str, index: int) -> dict[str, Any]:
    """The attack's FalcoRule once its status holds the one refusal expected, LOAD_ERR_VALIDATE
    at the offending item. The objects are applied together while the operator runs, so a
    FalcoRule may first be compiled before the ClusterFalcoRule is known and honestly show
    another error (e.g. "no rule by that name already exists"); the instance's re-render
    replaces it. Times out with the errors last seen."""
    attack = ATTACKS[index]
    want = [("LOAD_ERR_VALIDATE", f"spec.items[{attack.item}].{attack.field}")]
    seen: list[Any] = []

    def settled() -> dict[str, Any] | None:
        fr = kube.get(GV, "FalcoRule", f"attack-{index}", namespace) or {}
        seen[:] = errors = (fr.get("status") or {}).get("errors") or []
        return fr if [(e.get("code"), e.get("path")) for e in errors] == want else None

    try:
        return wait_for(settled, timeout=90, what=f"the refusal of {attack.name!r} at {want[0][1]}")
    except Timeout as exc:
        raise AssertionError(f"{exc}; errors last seen: {seen}") from exc


@pytest.mark.parametrize("index", range(len(ATTACKS)), ids=[a.name for a in ATTACKS])
def test_attack_is_refused_in_the_falcorule_status(setup: dict[str, Any], kube: Kube, index: int) -> None:
    attack = ATTACKS[index]
    fr = _refused(kube, setup["b"], index)
    (err,) = fr["status"]["errors"]
    assert attack.message in err["message"]
    assert condition(fr, "Valid")["status"] == "False"


def test_cluster_falco_rule_has_status(setup: dict[str, Any], kube: Kube) -> None:
    cfr = wait_for(lambda: (c := kube.get(GV, "ClusterFalcoRule", BASE))
                   and (c.get("status") or {}).get("instances") == 1 and c, timeout=60, what="its status")
    assert condition(cfr, "Valid")["status"] == "True"
    assert cfr["status"]["counts"]["rules"] == 1
    assert "Traceback" not in setup["proc"].log()


def test_validate_gives_the_operators_positions(setup: dict[str, Any], installed: Path, kube: Kube,
                                                tmp_path: Path) -> None:
    """`kubectl get -o yaml` (a List) through `falconer validate --json`: every finding the
    operator wrote in a FalcoRule's status, at the same path, line and column."""
    for i in range(len(ATTACKS)):
        _refused(kube, setup["b"], i)
    listing = kubectl(installed, "get", "clusterfalcorules,falcorules", "-A", "-l", "suite=tenant-operator",
                      "-o", "yaml").stdout
    manifest = tmp_path / "listing.yaml"
    manifest.write_text(listing)
    proc = subprocess.run([sys.executable, "-m", "falconer", "validate", "--json", str(manifest)], text=True,
                          capture_output=True, timeout=120, cwd="/", env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert proc.returncode == 1, proc.stderr
    keys = ("code", "path", "line", "column", "message")
    from_cli = sorted((e["falcoRule"], *(e.get(k) for k in keys)) for e in json.loads(proc.stdout)["errors"])
    from_status = sorted((f"{setup['b']}/attack-{i}", *(e.get(k) for k in keys))
                         for i in range(len(ATTACKS))
                         for e in kube.get(GV, "FalcoRule", f"attack-{i}", setup["b"])["status"]["errors"])
    assert from_cli == from_status
