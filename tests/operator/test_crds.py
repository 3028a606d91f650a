"""The CRDs: valid CustomResourceDefinitions, structural, with the promised names and
columns; their schemas accept Falco's items and refuse wrong shapes (offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crd_schema
import kubernetes_validate
import pytest
import yaml

from falconer.paths import CRDS_DIR

CRD_FILES = sorted(Path(CRDS_DIR).glob("*.yaml"))
KINDS = {"FalcoRule": "fr", "ClusterFalcoRule": "cfr", "FalcoInstance": "fi", "FalcoAlert": "fa"}
CLUSTER_SCOPED = {"ClusterFalcoRule"}
COLUMNS = {
    "FalcoRule": ["VALID", "RULES", "INSTANCES", "AGE"],
    "ClusterFalcoRule": ["VALID", "RULES", "INSTANCES", "AGE"],
    "FalcoInstance": ["READY", "DESIRED", "RULES-HASH"],
    "FalcoAlert": ["RULE", "PRIORITY", "COUNT", "LAST SEEN"],
}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_every_kind_has_a_crd() -> None:
    assert sorted(load(p)["spec"]["names"]["kind"] for p in CRD_FILES) == sorted(KINDS)


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("version", ["1.29", "1.32", kubernetes_validate.latest_version()])
def test_crd_is_a_valid_kubernetes_object(path: Path, version: str) -> None:
    kubernetes_validate.validate(load(path), version, strict=True)


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_crd_names_columns_status(path: Path) -> None:
    doc = load(path)
    names = doc["spec"]["names"]
    assert doc["metadata"]["name"] == f"{names['plural']}.falconer.io"
    scope = "Cluster" if names["kind"] in CLUSTER_SCOPED else "Namespaced"
    assert doc["spec"]["group"] == "falconer.io" and doc["spec"]["scope"] == scope
    assert names["shortNames"] == [KINDS[names["kind"]]]
    assert names["categories"] == ["falconer"]
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    shown = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown[: len(COLUMNS[names["kind"]])] == COLUMNS[names["kind"]]


def test_cluster_falco_rule_has_the_falco_rule_schema() -> None:
    """One item schema for both kinds: only the descriptions of the whole object differ."""
    def schema(kind: str) -> dict[str, Any]:
        (doc,) = [load(p) for p in CRD_FILES if load(p)["spec"]["names"]["kind"] == kind]
        (version,) = doc["spec"]["versions"]
        return {k: v for k, v in version["schema"]["openAPIV3Schema"].items() if k != "description"}
    assert schema("ClusterFalcoRule") == schema("FalcoRule")


def structural_problems(node: Any, path: str = "") -> list[str]:
    """Kubernetes' structural-schema rules that matter here: every node typed (or
    int-or-string / preserve-unknown), no type inside anyOf/oneOf/allOf/not."""
    problems = []
    typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if not typed:
        problems.append(f"{path or '<root>'}: no type")
    for junctor in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(junctor, []):
            if "type" in sub:
                problems.append(f"{path}: type inside {junctor}")
    for key, sub in (node.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_schema_is_structural(path: Path) -> None:
    schema = load(path)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []


def falcorule(items: list[Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoRule", "metadata": {"name": "x"},
            "spec": {"items": items, **spec}}


GOOD_ITEMS = [
    {"required_engine_version": "0.57.0"},
    {"required_engine_version": 13},
    {"required_plugin_versions": [{"name": "container", "version": "0.4.0",
                                   "alternatives": [{"name": "k8smeta", "version": "0.1.0"}]}]},
    {"list": "ports", "items": [80, "443", "ssh"]},
    {"list": "ports", "items": [8080], "override": {"items": "append"}},
    {"macro": "m", "condition": "proc.name = x"},
    {"rule": "R", "desc": "d", "condition": "m", "output": "o %proc.name", "priority": "warning",
     "tags": ["a"], "enabled": False, "source": "syscall", "skip-if-unknown-filter": True,
     "warn_evttypes": False, "capture": True, "capture_duration": 100,
     "exceptions": [{"name": "e1", "fields": ["proc.name", "fd.name"], "comps": ["=", "startswith"],
                     "values": [["a", "/b"]]},
                    {"name": "e2", "fields": "proc.name", "values": ["a", "b"]},
                    {"name": "e3", "fields": ["proc.name"], "comps": ["in"], "values": [[["a", "b"]]]}]},
    {"rule": "R", "condition": "and x", "override": {"condition": "append", "priority": "replace"},
     "priority": "INFO"},
    {"rule": "R", "enabled": True},
    {"rule": "R", "append": True, "condition": "and y"},
]


def test_schema_accepts_falco_items() -> None:
    assert crd_schema.errors(falcorule(GOOD_ITEMS, order=-5)) == []


@pytest.mark.parametrize(
    ("item", "where"),
    [
        ({"rule": "R", "priority": "LOUD"}, "priority"),
        ({"rule": "R", "condtion": "x"}, "condtion"),
        ({"rule": "R", "tags": "a,b"}, "tags"),
        ({"rule": "R", "enabled": "yes"}, "enabled"),
        ({"list": "l", "items": [{"a": 1}]}, "items"),
        ({"list": "l", "items": "a"}, "items"),
        ({"rule": "R", "override": {"priority": "append"}}, "override"),
        ({"rule": "R", "override": {"nonsense": "append"}}, "override"),
        ({"rule": "R", "exceptions": [{"fields": ["a"]}]}, "name"),
        ({"rule": "", "condition": "x"}, "rule"),
        ({"required_plugin_versions": [{"name": "x"}]}, "version"),
    ],
)
def test_schema_refuses_wrong_shapes(item: dict[str, Any], where: str) -> None:
    found = crd_schema.errors(falcorule([item]))
    assert found and any(where in e for e in found), found


def test_schema_refuses_missing_spec_and_items() -> None:
    assert crd_schema.errors({"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoRule", "metadata": {}})
    assert crd_schema.errors({"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoRule", "metadata": {},
                              "spec": {}})


def test_instance_schema() -> None:
    good = {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance", "metadata": {"name": "i"},
            "spec": {"ruleSelector": {"matchLabels": {"a": "b"},
                                      "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]},
                     "nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"operator": "Exists"}],
                     "resources": {"limits": {"cpu": "500m", "memory": 512}},
                     "minPriority": "Notice", "ruleMatching": "all",
                     "selection": [{"action": "disable", "tag": "network"}, {"action": "enable", "rule": "Read*"}],
                     "outputs": {"stdout": {"format": "text"}, "kubernetesEvents": True,
                                 "http": {"url": "http://sidekick:2801/"}, "grpc": {"port": 5060, "tlsSecret": "grpc-tls"},
                                 "rateLimit": {"perSecond": 2.5, "burst": 10}},
                     "bufferSizeBytes": 1 << 20}}
    assert crd_schema.errors(good) == []
    for key, value in [("ruleMatching", "some"), ("minPriority", "loud"), ("bufferSizeBytes", 10),
                       ("outputs", {"http": {"url": "ftp://x"}}), ("outputs", {"grpc": {"port": 5060}}),
                       ("outputs", {"file": {"path": "/etc/cron.d/x"}}), ("outputs", {"file": {"path": "/var/log/../x"}}),
                       ("selection", [{"action": "drop", "tag": "x"}]),
                       ("resources", {"limits": {"memory": "lots"}})]:
        bad = {**good, "spec": {**good["spec"], key: value}}
        assert any(key in e for e in crd_schema.errors(bad)), key


def test_alert_schema() -> None:
    alert = {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoAlert", "metadata": {"name": "a"},
             "spec": {"rule": "Terminal shell in container", "priority": "Notice", "source": "syscall",
                      "tags": ["T1059"], "node": "n1", "pod": {"name": "p", "namespace": "ns", "uid": "u"},
                      "workload": {"kind": "Deployment", "name": "web"}},
             "status": {"count": 3, "firstSeen": "2026-11-25T08:00:00Z", "lastSeen": "2026-11-25T08:01:00Z",
                        "lastOutput": "x", "lastOutputFields": {"proc.name": "bash", "proc.pid": 4},
                        "pod": {"name": "p", "namespace": "ns", "uid": "u"}}}
    assert crd_schema.errors(alert) == []
    alert["spec"]["priority"] = "warning"
    assert crd_schema.errors(alert)
