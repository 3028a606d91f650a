"""Pure logic of tenant rules in the operator: labels and ConfigMap keys
(operator/tenancy.py, render.py), load order and scopes, the webhook's decision on an
in-memory catalog (operator/webhook.py), and its certificate's renewal rule."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from tenant_attacks import ATTACKS, CLUSTER, TENANT_OK

from falconer.operator import render, webhook
from falconer.operator.spec import parse_instance
from falconer.operator.tenancy import CLUSTER_FALCO_RULE, FALCO_RULE, RuleRef, Tenancy, load_order
from falconer.operator.webhookserver import ROTATE_BEFORE, VALIDITY, Endpoint, issue

GV = "falconer.io/v1alpha1"


def obj(kind: str, name: str, namespace: str | None = None, text: str = TENANT_OK, order: int = 0,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": GV, "kind": kind, "metadata": meta, "spec": {"order": order, "items": yaml.safe_load(text)}}


class Catalog:
    """The objects as a kopf index would hold them."""

    def __init__(self, instances: list[dict[str, Any]], objects: list[dict[str, Any]]) -> None:
        self._instances, self._objects = instances, objects

    def instances(self) -> list[dict[str, Any]]:
        return self._instances

    def rules(self, namespaces: frozenset[str] | None) -> list[dict[str, Any]]:
        return [o for o in self._objects if namespaces is None or o["kind"] == CLUSTER_FALCO_RULE
                or o["metadata"].get("namespace") in namespaces]


def test_labels_round_trip_and_keys_never_collide() -> None:
    refs = [RuleRef(FALCO_RULE, "ops", "a.b"), RuleRef(FALCO_RULE, "a", "b"), RuleRef(CLUSTER_FALCO_RULE, "", "a.b"),
            RuleRef(FALCO_RULE, "ops", "falconer"), RuleRef(FALCO_RULE, "x", "y" * 253)]
    labels = [r.label("ops") for r in refs]
    assert labels[:4] == ["a.b", "a/b", "ClusterFalcoRule/a.b", "falconer"]
    assert [RuleRef.from_label(lb, "ops") for lb in labels] == refs
    keys = [render.rule_file_key(lb) for lb in labels]
    assert keys[:4] == ["rules-a.b.yaml", "ns-a.b.yaml", "cluster-a.b.yaml", "rules-falconer.yaml"]
    assert len(set(keys)) == len(keys) and all(len(k) <= render.MAX_KEY for k in keys)


def test_scopes_and_load_order() -> None:
    objects = [obj(FALCO_RULE, "t2", "team-b"), obj(FALCO_RULE, "t1", "team-a", order=5),
               obj(FALCO_RULE, "own", "ops", order=1), obj(CLUSTER_FALCO_RULE, "base", order=1),
               obj(FALCO_RULE, "sec", "security")]
    closed = Tenancy("ops", cluster_wide=frozenset({"security"}))
    assert [(c.ref.name, c.scope) for c in load_order(closed, None, objects)] == [
        ("sec", ""), ("base", ""), ("own", "")]
    opened = Tenancy("ops", enabled=True, cluster_wide=frozenset({"security"}))
    assert [(c.ref.name, c.scope) for c in load_order(opened, None, objects)] == [
        ("sec", ""), ("base", ""), ("own", ""), ("t1", "team-a"), ("t2", "team-b")]
    assert Tenancy.of("ops", parse_instance({})).namespaces() == frozenset({"ops"}) and opened.namespaces() is None


def _catalog(*extra: dict[str, Any]) -> Catalog:
    instance = {"metadata": {"namespace": "ops", "name": "fleet"}, "spec": {"tenants": {"enabled": True}}}
    return Catalog([instance], [obj(CLUSTER_FALCO_RULE, "base", text=CLUSTER), *extra])


def test_webhook_refuses_an_attack_with_code_item_and_position() -> None:
    attack = ATTACKS[4]  # disable a cluster rule
    answer = webhook.review({"request": {"uid": "u1", "object": obj(FALCO_RULE, "x", "team-a", attack.text)}},
                            _catalog())
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview" and response["uid"] == "u1" and not response["allowed"]
    message = response["status"]["message"]
    assert message.startswith("FalcoRule team-a/x does not load: rule 'Shell in container' at spec.items[0].rule:1:1: "
                              "LOAD_ERR_VALIDATE: ")


def test_webhook_compiles_with_the_cluster_rules_and_replaces_the_stored_version() -> None:
    stored = obj(FALCO_RULE, "x", "team-a", ATTACKS[0].text)  # a bad stored version does not matter
    answer = webhook.review({"request": {"uid": "u2", "object": obj(FALCO_RULE, "x", "team-a")}}, _catalog(stored))
    assert answer["response"]["allowed"], answer
    alone = webhook.review({"request": {"uid": "u3", "object": obj(FALCO_RULE, "x", "team-a")}}, Catalog([], []))
    assert not alone["response"]["allowed"]  # alone, the cluster's macros are unknown
    other = webhook.review({"request": {"uid": "u4", "object": {"kind": "ConfigMap"}}}, _catalog())
    assert other["response"] == {"uid": "u4", "allowed": True}


def test_certificate_renewal_rule() -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = issue(["127.0.0.1"], now)
    assert cert.valid_for(["127.0.0.1"], now)
    assert not cert.valid_for(["127.0.0.1", "falconer.ops.svc"], now)
    assert not cert.valid_for(["127.0.0.1"], now + VALIDITY - ROTATE_BEFORE + datetime.timedelta(days=1))
    assert Endpoint.parse(None, "ops/falconer").names == ["falconer.ops.svc", "falconer.ops.svc.cluster.local"]
    with pytest.raises(ValueError, match="https"):
        Endpoint.parse("http://127.0.0.1/validate", None)
