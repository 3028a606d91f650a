"""Issue 10's reproductions, live: what an admin can put in a FalcoRule must reach the
sensor, or say on every affected object that it did not.

One operator and one namespace for the module; the tests build on each other in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, condition, kubectl, observed, wait_for

from falconer.operator import render
from falconer.operator.kube import Kube

pytestmark = pytest.mark.kube

INSTANCE = "truth"


def apply(admin: Path, namespace: str, obj: dict[str, Any]) -> None:
    kubectl(admin, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj))


def falcorule(name: str, output: str = "seen %proc.name", condition_text: str = "evt.type = execve") -> dict[str, Any]:
    item = {"rule": f"Rule of {name[:40]}", "desc": "d", "condition": condition_text,
            "output": output, "priority": "Notice"}
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": name}, "spec": {"items": [item]}}


def configmap_data(kube: Kube, namespace: str) -> dict[str, str]:
    cm = kube.get("v1", "ConfigMap", render.Names.for_instance(namespace, INSTANCE).configmap, namespace)
    return dict((cm or {}).get("data") or {})


def test_instance_runs(operator: operator_harness.OperatorProcess, installed: Path, op_namespace: str,
                       kube: Kube, sensor_node: str) -> None:
    apply(installed, op_namespace, falcorule("base"))
    apply(installed, op_namespace, {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE},
                                    "spec": {"nodeSelector": {"kubernetes.io/hostname": sensor_node}}})
    wait_for(lambda: render.rule_file_key("base") in configmap_data(kube, op_namespace), what="the ConfigMap")


def test_non_ascii_output_reaches_the_configmap(operator: operator_harness.OperatorProcess, installed: Path,
                                                op_namespace: str, kube: Kube) -> None:
    """An emoji (outside the BMP) used to break the instance's server-side apply."""
    apply(installed, op_namespace, falcorule("emoji", output="🚨 %fd.name ünï 中文"))
    key = render.rule_file_key("emoji")
    data = wait_for(lambda: (d := configmap_data(kube, op_namespace)) and key in d and d, what="the emoji rules")
    assert "🚨 %fd.name ünï 中文" in data[key]
    # ...and later edits of other FalcoRules still arrive.
    apply(installed, op_namespace, falcorule("base", output="edited %proc.name"))
    wait_for(lambda: "edited" in configmap_data(kube, op_namespace).get(render.rule_file_key("base"), ""),
             what="the edit of another FalcoRule")
    inst = kube.get(GV, "FalcoInstance", INSTANCE, op_namespace)
    assert condition(inst, "Degraded")["status"] == "False", inst["status"]


def test_falcorule_named_like_the_config_key(operator: operator_harness.OperatorProcess, installed: Path,
                                             op_namespace: str, kube: Kube) -> None:
    apply(installed, op_namespace, falcorule("falconer"))
    data = wait_for(lambda: (d := configmap_data(kube, op_namespace)) and render.rule_file_key("falconer") in d
                    and d, what="the FalcoRule named falconer")
    config = yaml.safe_load(data[render.CONFIG_FILE])
    assert render.rule_file_key("falconer") in config["rulesFiles"]


def test_falcorule_with_a_253_character_name(operator: operator_harness.OperatorProcess, installed: Path,
                                             op_namespace: str, kube: Kube) -> None:
    name = ("long-" * 51)[:251]
    apply(installed, op_namespace, falcorule(name))
    key = render.rule_file_key(name)
    assert len(key) <= 253
    wait_for(lambda: key in configmap_data(kube, op_namespace), what="the long-named FalcoRule")
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", name, op_namespace)) and observed(o) and o,
                  what="its status")
    assert condition(fr, "Valid")["status"] == "True"
