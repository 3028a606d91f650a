"""An injected apply failure, live: a ValidatingAdmissionPolicy makes the API server
refuse the operator's ConfigMap writes in the test's namespace. Every affected object
must say so (the FalcoInstance: Ready False with the reason; each FalcoRule whose
generation no live ConfigMap holds: Applied not True), and once the policy is gone all
must converge within the resync period (nothing else wakes the operator: a refused apply
is permanent, not retried).

Also a sibling of issue 10's "the sensor rejects its config while the instance says
Ready": a spec the CRD schema cannot reject (appendOutput's free-form extra_fields) but
the sensor would, which must end in a condition, with nothing rendered from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import condition, kubectl, observed, wait_for

from falconer.operator import render
from falconer.operator.api import API_VERSION as GV
from falconer.operator.kube import Kube
from falconer.sensorconfig import CONFIG_FILE

pytestmark = pytest.mark.kube

INSTANCE = "faulty"
LABELS = {"set": "fault"}
RESYNC_BOUND_S = operator_harness.RESYNC_SECONDS + 10
POLICY_MESSAGE = "injected fault: ConfigMaps carrying falconer.yaml are refused"


def apply(admin: Path, namespace: str, obj: dict[str, Any]) -> None:
    kubectl(admin, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj))


def falcorule(name: str, output: str = "seen %proc.name") -> dict[str, Any]:
    item = {"rule": f"Rule {name}", "desc": "d", "condition": "evt.type = execve", "output": output,
            "priority": "Notice"}
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": name, "labels": LABELS},
            "spec": {"items": [item]}}


def instance(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": name},
            "spec": {"ruleSelector": {"matchLabels": LABELS}, "nodeSelector": {"kubernetes.io/hostname": node},
                     **spec}}


class Fault:
    """A ValidatingAdmissionPolicy (and its binding) refusing every create or update of a
    ConfigMap with a falconer.yaml key in one namespace."""

    def __init__(self, admin: Path, namespace: str) -> None:
        self.admin, self.namespace, self.name = admin, namespace, f"falconer-fault-{namespace}"

    def _probe_refused(self) -> bool:
        """Whether the API server refuses such a ConfigMap now (a server-side dry run goes
        through admission, so this tells when the policy is in force, or gone)."""
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fault-probe"},
                 "data": {CONFIG_FILE: "probe"}}
        done = kubectl(self.admin, "create", "--dry-run=server", "-n", self.namespace, "-f", "-",
                       stdin=yaml.safe_dump(probe), check=False)
        return done.returncode != 0 and "injected fault" in done.stderr

    def inject(self) -> None:
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": self.name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                    "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                       "resources": ["configmaps"]}],
                },
                "validations": [{"expression": f"!has(object.data) || !('{CONFIG_FILE}' in object.data)",
                                 "message": POLICY_MESSAGE}],
            },
        }
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": self.name},
            "spec": {"policyName": self.name, "validationActions": ["Deny"]},
        }
        kubectl(self.admin, "apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))
        wait_for(self._probe_refused, what="the admission policy to be in force")

    def remove(self) -> None:
        kubectl(self.admin, "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", self.name,
                "--ignore-not-found")
        wait_for(lambda: not self._probe_refused(), what="the admission policy to be gone")


@pytest.fixture(scope="module")
def fault(installed: Path, op_namespace: str) -> Iterator[Fault]:
    made = Fault(installed, op_namespace)
    try:
        yield made
    finally:
        made.remove()


def get(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    return kube.get(GV, kind, name, namespace)


def configmap(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return kube.get("v1", "ConfigMap", render.Names.for_instance(namespace, INSTANCE).configmap, namespace)


def applied(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The FalcoRule once its status is of its current generation."""
    fr = get(kube, "FalcoRule", name, namespace)
    return fr if observed(fr) else None


def converged(kube: Kube, namespace: str, rules: list[str]) -> bool:
    """The instance applied (no ApplyFailed) and every FalcoRule's generation applied."""
    inst = get(kube, "FalcoInstance", INSTANCE, namespace)
    if not observed(inst) or condition(inst, "Degraded").get("status") != "False":
        return False
    return all(condition(applied(kube, namespace, r), "Applied").get("status") == "True" for r in rules)


def with_reason(obj: dict[str, Any] | None, type_: str, reason: str) -> dict[str, Any] | None:
    """`obj` once its status is of its generation and condition `type_` has `reason`."""
    return obj if observed(obj) and condition(obj, type_).get("reason") == reason else None


def assert_fault_reported(kube: Kube, namespace: str) -> dict[str, Any]:
    inst = wait_for(lambda: with_reason(get(kube, "FalcoInstance", INSTANCE, namespace), "Degraded", "ApplyFailed"),
                    what="the instance to report the refused apply")
    assert inst is not None
    for type_, status in (("Ready", "False"), ("Degraded", "True"), ("Stalled", "True")):
        assert (condition(inst, type_)["status"], condition(inst, type_)["reason"]) == (status, "ApplyFailed"), type_
    assert "ConfigMap" in condition(inst, "Ready")["message"] and "injected fault" in condition(inst, "Ready")["message"]
    return inst


def test_a_first_apply_that_fails_is_on_every_object(operator: operator_harness.OperatorProcess, installed: Path,
                                                     op_namespace: str, kube: Kube, sensor_node: str,
                                                     fault: Fault) -> None:
    """The instance's ConfigMap can never be written: no FalcoRule may say Applied."""
    for name in ("one", "two"):
        apply(installed, op_namespace, falcorule(name))
    fault.inject()
    apply(installed, op_namespace, instance(INSTANCE, sensor_node))
    assert_fault_reported(kube, op_namespace)
    apply(installed, op_namespace, falcorule("three"))  # selected while the fault lasts
    for name in ("one", "two", "three"):
        fr = wait_for(lambda n=name: with_reason(get(kube, "FalcoRule", n, op_namespace), "Applied", "NotApplied"),  # type: ignore[misc]
                      what=f"{name} to say it is not applied")
        assert fr is not None
        assert condition(fr, "Applied")["status"] == "False" and condition(fr, "Valid")["status"] == "True"
        assert fr["status"]["instances"] == 1
    assert configmap(kube, op_namespace) is None
    # Nothing the operator could not write is claimed by the sensors' side either.
    assert (get(kube, "FalcoInstance", INSTANCE, op_namespace) or {})["status"]["sensorsCurrent"] == 0

    fault.remove()
    t0 = time.monotonic()
    wait_for(lambda: converged(kube, op_namespace, ["one", "two", "three"]), timeout=RESYNC_BOUND_S,
             what="every object to converge once the fault is gone")
    print(f"converged {time.monotonic() - t0:.2f}s after the fault was removed "
          f"(resync period {operator_harness.RESYNC_SECONDS:.0f}s)")
    data = (configmap(kube, op_namespace) or {})["data"]
    for name in ("one", "two", "three"):
        generation = (get(kube, "FalcoRule", name, op_namespace) or {})["metadata"]["generation"]
        assert render.ships(data[CONFIG_FILE], op_namespace, name, generation)


def test_a_refused_edit_keeps_the_last_rules_and_says_which(operator: operator_harness.OperatorProcess,
                                                            installed: Path, op_namespace: str, kube: Kube,
                                                            fault: Fault) -> None:
    """While the fault lasts, an edited FalcoRule says NotApplied (the sensors keep its
    previous generation); an unchanged one is truthfully still applied."""
    before = (configmap(kube, op_namespace) or {})["data"]
    fault.inject()
    apply(installed, op_namespace, falcorule("one", output="edited %proc.name"))
    assert_fault_reported(kube, op_namespace)
    edited = wait_for(lambda: with_reason(get(kube, "FalcoRule", "one", op_namespace), "Applied", "NotApplied"),
                      what="the edited FalcoRule to say it is not applied")
    assert condition(edited, "Applied")["status"] == "False"
    assert condition(applied(kube, op_namespace, "two"), "Applied")["status"] == "True"
    assert (configmap(kube, op_namespace) or {})["data"] == before

    fault.remove()
    t0 = time.monotonic()
    wait_for(lambda: converged(kube, op_namespace, ["one", "two", "three"]), timeout=RESYNC_BOUND_S,
             what="the edit to be applied once the fault is gone")
    print(f"edit applied {time.monotonic() - t0:.2f}s after the fault was removed")
    assert "edited" in (configmap(kube, op_namespace) or {})["data"][render.rule_file_key("one")]


def test_a_spec_only_the_sensor_would_refuse_is_a_condition(operator: operator_harness.OperatorProcess,
                                                            installed: Path, op_namespace: str, kube: Kube,
                                                            sensor_node: str) -> None:
    """appendOutput's extra_fields are free-form in the CRD (a name or a one-key map);
    a list there passes the schema, and the sensor's decoder would refuse the rendered
    falconer.yaml (exit 2). The operator's model refuses it first: InvalidSpec naming the
    field, and no ConfigMap is rendered from it."""
    name = "odd-append"
    apply(installed, op_namespace, instance(name, sensor_node, appendOutput=[{"extra_fields": [["x"]]}]))
    inst = wait_for(lambda: with_reason(get(kube, "FalcoInstance", name, op_namespace), "Degraded", "InvalidSpec"),
                    what="InvalidSpec")
    assert condition(inst, "Ready")["status"] == "False"
    assert condition(inst, "Ready")["message"].startswith("spec.appendOutput: append_output[0].extra_fields[0]")
    assert kube.get("v1", "ConfigMap", render.Names.for_instance(op_namespace, name).configmap, op_namespace) is None
    # Fixed, it renders.
    apply(installed, op_namespace, instance(name, sensor_node, appendOutput=[{"extra_fields": ["proc.name"]}]))
    wait_for(lambda: kube.get("v1", "ConfigMap", render.Names.for_instance(op_namespace, name).configmap,
                              op_namespace), what="the fixed instance's ConfigMap")
