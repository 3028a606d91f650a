"""The operator against a real API server: FalcoRule status, FalcoInstance rendering,
hash-driven updates, last-valid-rules, restart idempotency and garbage collection.

The tests build on each other in file order (one operator, one namespace per module),
like a user's session: apply rules, deploy an instance, change things, restart, delete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import upstream
import yaml
from operator_harness import GV, condition, kubectl, observed, wait_for

from falconer.engine import Engine, EngineOptions
from falconer.operator import convert
from falconer.operator.kube import Kube

pytestmark = pytest.mark.kube

RULES = "falco-rules"
INSTANCE = "main"


def apply(admin: Path, namespace: str, obj: dict[str, Any]) -> None:
    kubectl(admin, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj))


def patch(admin: Path, namespace: str, kind: str, name: str, ops: list[dict[str, Any]]) -> None:
    kubectl(admin, "patch", kind, name, "-n", namespace, "--type", "json", "-p", json.dumps(ops))


def events_for(kube: Kube, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("v1", "Event", namespace)
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name]


def rule_item(name: str, condition_text: str) -> dict[str, Any]:
    return {"rule": name, "desc": "test rule", "condition": condition_text,
            "output": "seen %proc.name", "priority": "Notice", "tags": ["test"]}


def test_upstream_rules_compile_in_cluster(operator: operator_harness.OperatorProcess, installed: Path,
                                           op_namespace: str, kube: Kube) -> None:
    manifest = convert.falcorule_manifest(upstream.STABLE.read_text(), RULES, op_namespace)
    manifest["metadata"]["labels"] = {"set": "base"}
    apply(installed, op_namespace, manifest)
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", RULES, op_namespace)) and observed(o) and o,
                  what="FalcoRule status")
    assert condition(fr, "Valid")["status"] == "True"
    assert condition(fr, "Stalled")["status"] == "False"
    assert fr["status"]["counts"] == Engine(EngineOptions()).load([upstream.STABLE]).counts
    assert fr["status"]["errors"] == []
    wait_for(lambda: any(e["reason"] == "Compiled" for e in events_for(kube, op_namespace, "FalcoRule", RULES)),
             what="a Compiled event")


def test_invalid_falcorule_reports_item_and_position(operator: operator_harness.OperatorProcess, installed: Path,
                                                     op_namespace: str, kube: Kube) -> None:
    items = [
        {"macro": "shells", "condition": "proc.name in (bash, sh)"},
        rule_item("Broken", "evt.type = execve\n  and shells and (proc.pname = sudo"),
    ]
    apply(installed, op_namespace, {"apiVersion": GV, "kind": "FalcoRule",
                                    "metadata": {"name": "broken", "labels": {"set": "other"}},
                                    "spec": {"items": items}})
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", "broken", op_namespace)) and observed(o) and o,
                  what="FalcoRule status")
    valid = condition(fr, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "CompileFailed")
    assert "spec.items[1].condition:2:" in valid["message"]
    assert condition(fr, "Stalled")["status"] == "True"
    (error,) = fr["status"]["errors"]
    assert error["code"] == "LOAD_ERR_COMPILE_CONDITION"
    assert error["path"] == "spec.items[1].condition" and error["line"] == 2
    assert error["column"] == len("  and shells and (proc.pname = sudo") + 1
    assert error["item"] == {"index": 1, "kind": "rule", "name": "Broken"}
    assert error["snippet"].startswith("  and shells and (proc.pname = sudo\n")
    wait_for(lambda: any(e["reason"] == "CompileFailed" and e["type"] == "Warning"
                         for e in events_for(kube, op_namespace, "FalcoRule", "broken")), what="a Warning event")


def test_large_falcorule_fits(operator: operator_harness.OperatorProcess, installed: Path,
                              op_namespace: str, kube: Kube) -> None:
    """A spec larger than all annotations may be (256 KiB): kopf keeps only a digest."""
    values = [f"/opt/vendor/agent-{n:05d}/bin/some-long-binary-name" for n in range(7000)]
    items = [{"list": "vendor_binaries", "items": values},
             {"rule": "Vendor binary", "desc": "d", "condition": "evt.type = execve and proc.exe in (vendor_binaries)",
              "output": "o %proc.exe", "priority": "Informational"}]
    apply(installed, op_namespace, {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "large"},
                                    "spec": {"items": items}})
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", "large", op_namespace)) and observed(o) and o,
                  what="the large FalcoRule's status", timeout=60)
    assert len(json.dumps(fr["spec"])) > 300_000
    assert condition(fr, "Valid")["status"] == "True"
    assert fr["status"]["counts"] == {"rules": 1, "macros": 0, "lists": 1}
    time.sleep(1.0)  # kopf writes its bookkeeping after the handler: give it the chance to fail
    fr = kube.get(GV, "FalcoRule", "large", op_namespace)
    assert sum(len(v) for v in (fr["metadata"].get("annotations") or {}).values()) < 1000
    assert "falconer.io/last-handled-digest" in fr["metadata"]["annotations"]
    unexpected = [line for line in operator.log().splitlines()
                  if "[ERROR" in line and "storage is (re)initializing" not in line]
    assert unexpected == [], unexpected[:3]
    kubectl(installed, "delete", "falcorule", "large", "-n", op_namespace)


def owned_objects(kube: Kube, namespace: str) -> dict[str, dict[str, Any] | None]:
    return {
        "ConfigMap": kube.get("v1", "ConfigMap", f"{INSTANCE}-rules", namespace),
        "DaemonSet": kube.get("apps/v1", "DaemonSet", f"{INSTANCE}-sensor", namespace),
        "ServiceAccount": kube.get("v1", "ServiceAccount", f"{INSTANCE}-sensor", namespace),
    }


def binding(kube: Kube, namespace: str, name: str = INSTANCE) -> dict[str, Any] | None:
    return kube.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", f"falconer-sensor:{namespace}:{name}")


def test_instance_renders_configmap_daemonset_rbac(operator: operator_harness.OperatorProcess, installed: Path,
                                                   op_namespace: str, kube: Kube, sensor_node: str) -> None:
    # Pinned to our Node: other tests of the session may register Nodes of their own.
    apply(installed, op_namespace, {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE},
                                    "spec": {"ruleSelector": {"matchLabels": {"set": "base"}},
                                             "nodeSelector": {"kubernetes.io/hostname": sensor_node}}})
    inst = wait_for(lambda: (o := kube.get(GV, "FalcoInstance", INSTANCE, op_namespace)) and observed(o)
                    and o["status"].get("desiredNumberScheduled") == 1 and o, what="instance status")
    objs = wait_for(lambda: (o := owned_objects(kube, op_namespace)) and all(o.values()) and o, what="owned objects")
    for obj in objs.values():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "FalcoInstance", INSTANCE, inst["metadata"]["uid"], True)
    cm = objs["ConfigMap"]
    assert sorted(cm["data"]) == ["falconer.yaml", "rules-falco-rules.yaml"]
    assert yaml.safe_load(cm["data"]["falconer.yaml"])["rulesFiles"] == ["rules-falco-rules.yaml"]
    assert cm["metadata"]["annotations"]["falconer.io/rules-hash"] == inst["status"]["rulesHash"]
    assert inst["status"]["rules"] == [{"name": RULES, "generation": 1, "valid": True}]
    crb = binding(kube, op_namespace)
    assert crb and crb["roleRef"]["name"] == "falconer-sensor"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": f"{INSTANCE}-sensor", "namespace": op_namespace}]
    selector = f"falconer.io/instance={INSTANCE}"
    pod = wait_for(lambda: [p for p in kube.list("v1", "Pod", op_namespace, label_selector=selector)
                            if p["spec"].get("nodeName") == sensor_node], what="a sensor Pod on the node")[0]
    assert pod["spec"]["hostPID"] is True
    # No kubelet runs the Pod: the rollout is in progress, not failed (kstatus: InProgress).
    assert condition(inst, "Progressing")["status"] == "True" and condition(inst, "Reconciling")["status"] == "True"
    assert condition(inst, "Degraded")["status"] == "False" and condition(inst, "Stalled")["status"] == "False"
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", RULES, op_namespace)) and o["status"].get("instances") == 1
                  and o, what="FalcoRule.status.instances")
    assert fr["status"]["instances"] == 1
    assert condition(fr, "Applied")["reason"] == "Rendered"
    assert condition(kube.get(GV, "FalcoRule", "broken", op_namespace), "Applied")["status"] == "False"


def test_sensor_identity_is_least_privilege(operator: operator_harness.OperatorProcess, installed: Path,
                                            op_namespace: str) -> None:
    who = f"system:serviceaccount:{op_namespace}:{INSTANCE}-sensor"

    def can(*args: str) -> bool:
        return kubectl(installed, "auth", "can-i", *args, "--as", who, check=False).stdout.strip() == "yes"

    assert can("list", "pods", "--all-namespaces") and can("get", "nodes") and can("create", "falcoalerts")
    assert can("create", "events", "-n", "default")
    assert not can("get", "secrets", "-n", op_namespace)
    assert not can("create", "pods", "-n", op_namespace)
    assert can("delete", "falcoalerts", "-n", op_namespace)  # the cap per namespace removes the oldest
    assert not can("patch", "falcorules", "-n", op_namespace)
    assert can("patch", f"falcoinstances/{INSTANCE}", "--subresource=status", "-n", op_namespace)
    assert not can("patch", "falcoinstances/other", "--subresource=status", "-n", op_namespace)
    assert not can("patch", f"falcoinstances/{INSTANCE}", "-n", op_namespace)


def live_state(kube: Kube, namespace: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    objs = owned_objects(kube, namespace)
    inst = kube.get(GV, "FalcoInstance", INSTANCE, namespace)
    return objs["ConfigMap"], objs["DaemonSet"], inst


def test_rule_change_rehashes_configmap_without_rolling(operator: operator_harness.OperatorProcess, installed: Path,
                                                        op_namespace: str, kube: Kube) -> None:
    cm, ds, _ = live_state(kube, op_namespace)
    old_hash = cm["metadata"]["annotations"]["falconer.io/rules-hash"]
    patch(installed, op_namespace, "falcorule", RULES,
          [{"op": "add", "path": "/spec/items/-",
            "value": rule_item("Extra rule", "evt.type = execve and proc.name = x")}])
    cm = wait_for(lambda: (c := live_state(kube, op_namespace)[0])
                  and c["metadata"]["annotations"]["falconer.io/rules-hash"] != old_hash and c, what="a new rules hash")
    assert "Extra rule" in cm["data"]["rules-falco-rules.yaml"]
    _, ds_after, _ = live_state(kube, op_namespace)
    assert ds_after["metadata"]["generation"] == ds["metadata"]["generation"]
    assert ds_after["spec"]["template"] == ds["spec"]["template"]
    wait_for(lambda: live_state(kube, op_namespace)[2]["status"]["rulesHash"]
             == cm["metadata"]["annotations"]["falconer.io/rules-hash"], what="the instance's rulesHash")


def test_invalid_change_keeps_last_valid_rules(operator: operator_harness.OperatorProcess, installed: Path,
                                               op_namespace: str, kube: Kube) -> None:
    cm_before, _, _ = live_state(kube, op_namespace)
    patch(installed, op_namespace, "falcorule", RULES,
          [{"op": "add", "path": "/spec/items/-",
            "value": rule_item("Bad rule", "evt.type = execve and proc.nme = x")}])
    inst = wait_for(lambda: (i := live_state(kube, op_namespace)[2])
                    and condition(i, "Degraded").get("reason") == "FalcoRuleInvalid" and i, what="Degraded")
    assert condition(inst, "Stalled")["status"] == "True"
    assert RULES in condition(inst, "Degraded")["message"]
    fr = kube.get(GV, "FalcoRule", RULES, op_namespace)
    assert condition(fr, "Valid")["status"] == "False"
    assert fr["status"]["errors"][0]["item"]["name"] == "Bad rule"
    cm_after, _, _ = live_state(kube, op_namespace)
    assert cm_after["data"] == cm_before["data"]
    assert cm_after["metadata"]["resourceVersion"] == cm_before["metadata"]["resourceVersion"]
    patch(installed, op_namespace, "falcorule", RULES, [{"op": "remove", "path": "/spec/items/" + str(
        len(fr["spec"]["items"]) - 1)}])
    wait_for(lambda: condition(live_state(kube, op_namespace)[2], "Degraded").get("status") == "False",
             what="Degraded to clear")
    assert condition(kube.get(GV, "FalcoRule", RULES, op_namespace), "Valid")["status"] == "True"


def test_instance_change_rolls_the_daemonset(operator: operator_harness.OperatorProcess, installed: Path,
                                             op_namespace: str, kube: Kube) -> None:
    _, ds, _ = live_state(kube, op_namespace)
    patch(installed, op_namespace, "falcoinstance", INSTANCE,
          [{"op": "add", "path": "/spec/image", "value": "registry.example/falconer:next"}])
    ds_after = wait_for(lambda: (d := live_state(kube, op_namespace)[1])
                        and d["metadata"]["generation"] > ds["metadata"]["generation"] and d, what="DaemonSet update")
    ann = "falconer.io/config-hash"
    assert ds_after["spec"]["template"]["metadata"]["annotations"][ann] != \
        ds["spec"]["template"]["metadata"]["annotations"][ann]
    assert ds_after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/falconer:next"
    wait_for(lambda: [e for e in events_for(kube, op_namespace, "FalcoInstance", INSTANCE)
                      if e["reason"] == "SensorsUpdated"], what="a SensorsUpdated event")
    wait_for(lambda: observed(live_state(kube, op_namespace)[2]), what="observedGeneration")


def test_added_relabelled_and_deleted_falcorules(operator: operator_harness.OperatorProcess, installed: Path,
                                                op_namespace: str, kube: Kube) -> None:
    extra = {"apiVersion": GV, "kind": "FalcoRule",
             "metadata": {"name": "aaa-extra", "labels": {"set": "base"}},
             "spec": {"order": 10, "items": [rule_item("Later rule", "evt.type = openat and fd.name = /etc/shadow")]}}

    def files() -> list[str]:
        return yaml.safe_load(live_state(kube, op_namespace)[0]["data"]["falconer.yaml"])["rulesFiles"]

    apply(installed, op_namespace, extra)
    # order 10 loads after the order-0 upstream rules although its name sorts first
    wait_for(lambda: files() == [f"rules-{RULES}.yaml", "rules-aaa-extra.yaml"], what="the new FalcoRule in load order")
    patch(installed, op_namespace, "falcorule", "aaa-extra", [{"op": "replace", "path": "/metadata/labels/set",
                                                               "value": "elsewhere"}])
    wait_for(lambda: files() == [f"rules-{RULES}.yaml"], what="the relabelled FalcoRule to leave")
    patch(installed, op_namespace, "falcorule", "aaa-extra", [{"op": "replace", "path": "/metadata/labels/set",
                                                               "value": "base"}])
    wait_for(lambda: files() == [f"rules-{RULES}.yaml", "rules-aaa-extra.yaml"], what="the FalcoRule to come back")
    kubectl(installed, "delete", "falcorule", "aaa-extra", "-n", op_namespace)
    wait_for(lambda: files() == [f"rules-{RULES}.yaml"] and "rules-aaa-extra.yaml" not in live_state(kube, op_namespace)[0]["data"],
             what="the deleted FalcoRule to leave the ConfigMap")


def test_deleted_daemonset_comes_back(operator: operator_harness.OperatorProcess, installed: Path,
                                      op_namespace: str, kube: Kube) -> None:
    old_uid = live_state(kube, op_namespace)[1]["metadata"]["uid"]
    kubectl(installed, "delete", "daemonset", f"{INSTANCE}-sensor", "-n", op_namespace, "--wait=false")
    wait_for(lambda: (d := live_state(kube, op_namespace)[1]) and d["metadata"]["uid"] != old_uid,
             what="the operator to recreate the DaemonSet")


def versions(kube: Kube, namespace: str) -> dict[str, str]:
    cm, ds, inst = live_state(kube, namespace)
    objs = {"cm": cm, "ds": ds, "inst": inst, "crb": binding(kube, namespace),
            "sa": owned_objects(kube, namespace)["ServiceAccount"],
            "fr": kube.get(GV, "FalcoRule", RULES, namespace), "broken": kube.get(GV, "FalcoRule", "broken", namespace)}
    return {k: v["metadata"]["resourceVersion"] for k, v in objs.items()}


def test_restart_changes_nothing(operator: operator_harness.OperatorProcess, op_namespace: str, kube: Kube) -> None:
    def settled() -> dict[str, str] | None:
        # The DaemonSet controller may still be rolling (earlier test): wait for quiet.
        first = versions(kube, op_namespace)
        time.sleep(1.5)
        return first if versions(kube, op_namespace) == first else None

    before = wait_for(settled, what="the objects to settle")
    resumed = operator.log().count("Resuming is processed")
    operator.restart()
    wait_for(lambda: operator.log().count("Resuming is processed") >= resumed + 3, what="resume handlers (3 objects)")
    assert versions(kube, op_namespace) == before
    for kind, api in (("ConfigMap", "v1"), ("DaemonSet", "apps/v1"), ("ServiceAccount", "v1")):
        made = kube.list(api, kind, op_namespace, label_selector="app.kubernetes.io/managed-by=falconer-operator")
        assert len(made) == 1, (kind, [m["metadata"]["name"] for m in made])


def test_delete_instance_removes_all_it_made(operator: operator_harness.OperatorProcess, installed: Path,
                                             op_namespace: str, kube: Kube) -> None:
    kubectl(installed, "delete", "falcoinstance", INSTANCE, "-n", op_namespace, "--wait", "--timeout=60s", timeout=90)
    wait_for(lambda: binding(kube, op_namespace) is None, what="the ClusterRoleBinding to go")
    wait_for(lambda: not any(owned_objects(kube, op_namespace).values()), timeout=60,
             what="garbage collection of ConfigMap, DaemonSet, ServiceAccount")
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", RULES, op_namespace))["status"].get("instances") == 0
                  and o, what="FalcoRule.status.instances back to 0")
    assert condition(fr, "Applied")["reason"] == "NotSelected"


def test_operator_stayed_up_and_quiet(operator: operator_harness.OperatorProcess) -> None:
    assert operator.alive
    log = operator.log()
    assert "Traceback" not in log
    assert log.count("will retry") <= 3, log[-3000:]
