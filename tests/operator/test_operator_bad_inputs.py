"""A matrix of bad inputs against the real API server and operator.

Each case ends either in a clear apply-time rejection by the CRD schema (kubectl fails
with a message naming the field) or in a clear condition on the resource. At the end the
operator must still be running, idle (no retry storm, no hot loop) and without crashes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, condition, kubectl, observed, wait_for

from falconer.operator.kube import Kube

pytestmark = pytest.mark.kube


def rule(name: str = "R", condition: str = "evt.type = execve and proc.name = bash", **extra: Any) -> dict[str, Any]:
    return {"rule": name, "desc": "d", "condition": condition, "output": "o %proc.name", "priority": "Notice", **extra}


def falcorule(name: str, items: Any, case: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"case": case or name}}
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": meta, "spec": {"items": items, **spec}}


def instance(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": name},
            "spec": {"ruleSelector": {"matchLabels": {"case": name}}, **spec}}


# ---- rejected by the schema at apply time ---------------------------------------------

REJECTED = {
    "empty-spec": ({"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "empty-spec"}, "spec": {}},
                   "spec.items: Required value"),
    "no-spec": ({"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": "no-spec"}}, "spec: Required value"),
    "invalid-priority": (falcorule("invalid-priority", [rule(priority="LOUD")]), "spec.items[0].priority"),
    "unknown-key": (falcorule("unknown-key", [{"rule": "R", "condtion": "x"}]),
                    'unknown field "spec.items[0].condtion"'),
    "tags-not-a-list": (falcorule("tags-not-a-list", [rule(tags="a,b")]), "spec.items[0].tags"),
    "enabled-not-bool": (falcorule("enabled-not-bool", [rule(enabled="yes")]), "spec.items[0].enabled"),
    "two-kinds": (falcorule("two-kinds", [{"rule": "R", "macro": "M", "condition": "x"}]),
                  "exactly one of rule, macro"),
    "no-kind": (falcorule("no-kind", [{"condition": "x"}]), "exactly one of rule, macro"),
    "bad-override": (falcorule("bad-override", [{"rule": "R", "priority": "Notice",
                                                 "override": {"priority": "append"}}]), "override.priority"),
    "list-item-object": (falcorule("list-item-object", [{"list": "l", "items": [{"a": 1}]}]), "spec.items[0].items[0]"),
    "exception-no-name": (falcorule("exception-no-name", [rule(exceptions=[{"fields": ["proc.name"]}])]),
                          "exceptions[0].name: Required value"),
    "order-not-int": (falcorule("order-not-int", [rule()], order="first"), "spec.order"),
    "instance-bad-quantity": (instance("instance-bad-quantity", resources={"limits": {"memory": "lots"}}),
                              "spec.resources.limits.memory"),
    "instance-bad-matching": (instance("instance-bad-matching", ruleMatching="some"), "spec.ruleMatching"),
    "instance-bad-selector-op": (instance("instance-bad-selector-op",
                                          ruleSelector={"matchExpressions": [{"key": "a", "operator": "Near"}]}),
                                 "operator"),
    "instance-selection-both": (instance("instance-selection-both",
                                         selection=[{"action": "disable", "rule": "x", "tag": "net"}]),
                                "exactly one of rule or tag"),
    "instance-name-too-long": (instance("i" * 64), "a FalcoInstance name is at most 63 characters"),
    "instance-empty-image": (instance("instance-empty-image", image=""), "spec.image"),
    "instance-huge-buffer": (instance("instance-huge-buffer", bufferSizeBytes=1 << 40),
                             "spec.bufferSizeBytes: Invalid value"),
    "instance-in-without-values": (instance("instance-in-without-values",
                                            ruleSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
                                   "values must be non-empty for In and NotIn"),
    "instance-exists-with-values": (instance("instance-exists-with-values", ruleSelector={
        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        "empty for Exists and DoesNotExist"),
}


@pytest.mark.parametrize("case", REJECTED, ids=str)
def test_schema_rejects_at_apply_time(case: str, installed: Path, op_namespace: str,
                                      operator: operator_harness.OperatorProcess) -> None:
    obj, expected = REJECTED[case]
    done = kubectl(installed, "apply", "-n", op_namespace, "-f", "-", stdin=yaml.safe_dump(obj), check=False)
    assert done.returncode != 0, done.stdout
    assert expected in done.stderr, done.stderr


# ---- accepted, then reported invalid by the operator ------------------------------------

@dataclass(frozen=True)
class Invalid:
    items: list[Any]
    code: str
    path: str
    message: str = ""  # a fragment of the error message
    line: int | None = None


INVALID = {
    "bad-syntax": Invalid([rule(condition="evt.type = execve and (proc.name = bash")],
                          "LOAD_ERR_COMPILE_CONDITION", "spec.items[0].condition", line=1),
    "bad-yaml-in-condition": Invalid([rule(condition="evt.type = execve and proc.name = 'bash")],
                                     "LOAD_ERR_COMPILE_CONDITION", "spec.items[0].condition", line=1),
    "unknown-field": Invalid([rule(condition="evt.type = execve and proc.nmae = bash")],
                             "LOAD_ERR_COMPILE_CONDITION", "spec.items[0].condition", "proc.nmae", line=1),
    "undefined-macro": Invalid([rule(condition="evt.type = execve and no_such_macro")],
                               "LOAD_ERR_VALIDATE", "spec.items[0].condition", "no_such_macro"),
    "macro-loop": Invalid([{"macro": "a", "condition": "b"}, {"macro": "b", "condition": "a"},
                           rule(condition="evt.type = execve and a")],
                          "LOAD_ERR_VALIDATE", "spec.items["),
    "unknown-output-field": Invalid([rule(output="x %proc.nope")], "LOAD_ERR_COMPILE_OUTPUT",
                                    "spec.items[0].output", "proc.nope", line=1),
    "missing-condition": Invalid([{"rule": "R", "desc": "d", "output": "o", "priority": "Notice"}],
                                 "LOAD_ERR_YAML_VALIDATE", "spec.items[0]"),
    "append-undefined": Invalid([{"rule": "Nope", "condition": "and proc.name = x",
                                  "override": {"condition": "append"}}], "LOAD_ERR_VALIDATE", "spec.items[0]"),
    "exception-mismatch": Invalid([rule(exceptions=[{"name": "e", "fields": ["proc.name", "fd.name"],
                                                     "comps": ["="], "values": [["a", "b"]]}])],
                                  "LOAD_ERR_VALIDATE", "spec.items[0]"),
    "engine-too-new": Invalid([{"required_engine_version": "99.0.0"}, rule()], "LOAD_ERR_VALIDATE", "spec.items[0]"),
    "append-and-override": Invalid([rule(), {"rule": "R", "condition": "and x", "append": True,
                                             "override": {"condition": "append"}}],
                                   "LOAD_ERR_YAML_VALIDATE", "spec.items[1]"),
    "bad-operator-for-type": Invalid([rule(condition="evt.type = execve and proc.pid startswith abc")],
                                     "LOAD_ERR_COMPILE_CONDITION", "spec.items[0].condition", line=1),
}


def get(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    return kube.get(GV, kind, name, namespace)


def apply(admin: Path, namespace: str, *objs: dict[str, Any]) -> None:
    kubectl(admin, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objs))


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_invalid_rules_end_in_a_clear_condition(case: str, installed: Path, op_namespace: str, kube: Kube,
                                                operator: operator_harness.OperatorProcess) -> None:
    bad = INVALID[case]
    apply(installed, op_namespace, falcorule(case, bad.items))
    fr = wait_for(lambda: observed(get(kube, "FalcoRule", case, op_namespace)), what=f"status of {case}")
    valid = condition(fr, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "CompileFailed"), valid
    errors = fr["status"]["errors"]
    assert any(e["code"] == bad.code and e["path"].startswith(bad.path) and bad.message in e["message"]
               + e.get("snippet", "") and (bad.line is None or e.get("line") == bad.line) for e in errors), errors
    assert condition(fr, "Stalled")["status"] == "True"


# ---- instances in trouble ------------------------------------------------------------------

def test_selector_matching_nothing(installed: Path, op_namespace: str, kube: Kube,
                                   operator: operator_harness.OperatorProcess) -> None:
    apply(installed, op_namespace, instance("selects-nothing"))
    inst = wait_for(lambda: observed(get(kube, "FalcoInstance", "selects-nothing", op_namespace)), what="status")
    assert condition(inst, "Degraded")["reason"] == "NoRulesSelected"
    assert condition(inst, "Ready")["status"] == "False" and condition(inst, "Stalled")["status"] == "True"


def test_impossible_node_selector(installed: Path, op_namespace: str, kube: Kube, sensor_node: str,
                                  operator: operator_harness.OperatorProcess) -> None:
    apply(installed, op_namespace, falcorule("no-nodes", [rule()]),
          instance("no-nodes", nodeSelector={"falconer.io/no-such-node": "true"}))
    inst = wait_for(lambda: (i := get(kube, "FalcoInstance", "no-nodes", op_namespace)) and observed(i)
                    and condition(i, "Degraded").get("reason") == "NoMatchingNodes" and i, what="NoMatchingNodes")
    assert inst["status"]["desiredNumberScheduled"] == 0
    assert "nodeSelector" in condition(inst, "Degraded")["message"]


def test_same_rule_in_two_falcorules(installed: Path, op_namespace: str, kube: Kube,
                                     operator: operator_harness.OperatorProcess) -> None:
    apply(installed, op_namespace, falcorule("dup-a", [rule("Shared")], case="dup"),
          falcorule("dup-b", [rule("Shared", condition="evt.type = openat and fd.name = /etc/shadow")], case="dup"),
          instance("dup"))
    inst = wait_for(lambda: (i := get(kube, "FalcoInstance", "dup", op_namespace)) and observed(i)
                    and condition(i, "RulesRedefined").get("status") == "True" and i, what="RulesRedefined")
    message = condition(inst, "RulesRedefined")["message"]
    assert "'Shared'" in message and "dup-a and dup-b" in message
    assert condition(inst, "Degraded")["status"] == "False"
    assert [r["name"] for r in inst["status"]["rules"]] == ["dup-a", "dup-b"]


def test_instance_selecting_only_an_invalid_rule(installed: Path, op_namespace: str, kube: Kube,
                                                 operator: operator_harness.OperatorProcess) -> None:
    apply(installed, op_namespace, falcorule("only-invalid", [rule(condition="evt.type = (")]),
          instance("only-invalid"))
    wait_for(lambda: (i := get(kube, "FalcoInstance", "only-invalid", op_namespace)) and observed(i)
             and condition(i, "Degraded").get("reason") == "FalcoRuleInvalid", what="FalcoRuleInvalid")
    cm = kube.get("v1", "ConfigMap", "only-invalid-rules", op_namespace)
    assert cm is not None and "rules-only-invalid.yaml" not in cm["data"]  # never reached a sensor


def test_rules_that_fail_only_together(installed: Path, op_namespace: str, kube: Kube,
                                      operator: operator_harness.OperatorProcess) -> None:
    """Each FalcoRule compiles alone; loaded after the first, the second breaks its rule.

    A FalcoRule is compiled where it is loaded (after the FalcoRules before it), so the
    error is reported on the one that causes it, and that one never reaches the sensors."""
    first = falcorule("together-a", [{"macro": "m", "condition": "proc.name = x"},
                                     rule(condition="evt.type = execve and m")], case="together", order=1)
    second = falcorule("together-b", [{"macro": "m", "condition": "proc.nme = y"}], case="together", order=2)
    apply(installed, op_namespace, first, instance("together"))
    wait_for(lambda: (i := get(kube, "FalcoInstance", "together", op_namespace)) and observed(i)
             and condition(i, "Degraded").get("status") == "False", what="a healthy instance")
    cm = kube.get("v1", "ConfigMap", "together-rules", op_namespace)
    apply(installed, op_namespace, second)
    fr_a = wait_for(lambda: observed(get(kube, "FalcoRule", "together-a", op_namespace)), what="together-a")
    assert condition(fr_a, "Valid")["status"] == "True"
    fr_b = wait_for(lambda: (o := observed(get(kube, "FalcoRule", "together-b", op_namespace)))
                    and condition(o, "Valid")["status"] == "False" and o, what="together-b invalid in context")
    (error,) = fr_b["status"]["errors"]
    assert error["code"] == "LOAD_ERR_COMPILE_CONDITION" and "proc.nme" in error["message"]
    assert error["path"] == "spec.items[0].condition"
    inst = wait_for(lambda: (i := get(kube, "FalcoInstance", "together", op_namespace))
                    and condition(i, "Degraded").get("reason") == "FalcoRuleInvalid" and i, what="FalcoRuleInvalid")
    assert "together-b" in condition(inst, "Degraded")["message"]
    after = kube.get("v1", "ConfigMap", "together-rules", op_namespace)
    assert after["data"] == cm["data"]  # the last valid rules stay on the sensors


@pytest.mark.parametrize(
    ("case", "spec", "fragment"),
    [
        ("bad-toleration", {"tolerations": [{"operator": "Exists", "value": "x"}]}, "DaemonSet"),
        ("bad-node-selector", {"nodeSelector": {"bad key!": "x"}}, "DaemonSet"),
    ],
)
def test_objects_the_api_server_refuses(case: str, spec: dict[str, Any], fragment: str, installed: Path,
                                        op_namespace: str, kube: Kube,
                                        operator: operator_harness.OperatorProcess) -> None:
    apply(installed, op_namespace, falcorule(case, [rule()]), instance(case, **spec))
    inst = wait_for(lambda: (i := get(kube, "FalcoInstance", case, op_namespace)) and observed(i)
                    and condition(i, "Degraded").get("reason") == "ApplyFailed" and i, what="ApplyFailed")
    assert fragment in condition(inst, "Degraded")["message"]
    assert condition(inst, "Stalled")["status"] == "True"


def test_operator_survives_and_idles(operator: operator_harness.OperatorProcess) -> None:
    """No crash, no retry storm, and no hot loop: an idle operator logs nothing new."""
    assert operator.alive
    log = operator.log()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("will retry") + log.count("TemporaryError") <= 3, log[-4000:]
    # Let in-flight events drain (slow on a busy machine): the log must go quiet...
    quiet_since, size = time.monotonic(), len(operator.log())
    deadline = quiet_since + 60
    while time.monotonic() - quiet_since < 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
        if len(operator.log()) != size:
            quiet_since, size = time.monotonic(), len(operator.log())
    # ...and stay quiet: no hot loop, no periodic noise (the resync period is shorter).
    time.sleep(max(4.0, operator_harness.RESYNC_SECONDS + 1))
    assert len(operator.log()) == size, operator.log()[size:][:4000]
