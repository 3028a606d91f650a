"""The install manifests: valid objects, least privilege for the operator and sensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from falconer.operator import render

MANIFESTS = Path(render.__file__).parent / "manifests"
RBAC = MANIFESTS / "rbac.yaml"


def docs(path: Path = RBAC) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def role(name: str) -> list[dict[str, Any]]:
    return next(d for d in docs() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name)["rules"]


@pytest.mark.parametrize("doc", [d for p in sorted(MANIFESTS.glob("*.yaml")) for d in docs(p)],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifests_are_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("name", ["falconer-operator", "falconer-sensor"])
def test_no_wildcards_no_secrets(name: str) -> None:
    for group, resource, verb in grants(role(name)):
        assert "*" not in (group, resource, verb)
        assert resource not in ("secrets", "pods/exec", "nodes/proxy")
        assert verb not in ("escalate", "impersonate")


def test_sensor_reads_pods_services_nodes_and_writes_events_alerts_only() -> None:
    writes = {(g, r) for g, r, v in grants(role("falconer-sensor")) if v not in ("get", "list", "watch")}
    reads = {(g, r) for g, r, v in grants(role("falconer-sensor")) if v in ("list", "watch")}
    assert writes == {("", "events"), ("falconer.io", "falcoalerts"), ("falconer.io", "falcoalerts/status")}
    assert reads == {("", "pods"), ("", "services"), ("falconer.io", "falcoalerts")}
    # Services: listed and watched for fd.*ip.name, never read one by one
    assert {v for g, r, v in grants(role("falconer-sensor")) if r == "services"} == {"list", "watch"}
    assert ("", "nodes", "get") in grants(role("falconer-sensor"))


def test_operator_binds_only_the_sensor_role() -> None:
    (bind,) = [r for r in role("falconer-operator") if "bind" in r["verbs"]]
    assert bind["resourceNames"] == [render.SENSOR_CLUSTER_ROLE] and bind["verbs"] == ["bind"]
    assert not any(g == "rbac.authorization.k8s.io" and r == "clusterroles" and v != "bind"
                   for g, r, v in grants(role("falconer-operator")))
    # the sensors' per-instance status Role: namespaced, never deleted by hand (owned)
    rbac = {(r, v) for g, r, v in grants(role("falconer-operator")) if g == "rbac.authorization.k8s.io"}
    assert {(r, v) for r, v in rbac if r in ("roles", "rolebindings")} == {
        (r, v) for r in ("roles", "rolebindings") for v in ("get", "create", "patch")}


def test_operator_runs_unprivileged_as_its_account() -> None:
    (deploy,) = [d for d in docs(MANIFESTS / "operator.yaml") if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "falconer-operator" and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][0] == "operator"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
