"""Issue 10's reproductions, live: what an admin can put in a FalcoRule must reach the
sensor, or say on every affected object that it did not.

One operator and one namespace for the module; the tests build on each other in order.
"""

from __future__ import annotations

import time
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
#: The operator under test resyncs every RESYNC_S seconds (operator_harness); drift must
#: be repaired within one period plus a margin.
RESYNC_S = operator_harness.RESYNC_SECONDS
RESYNC_BOUND_S = RESYNC_S + 10


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
    assert condition(inst, "Degraded")["reason"] != "ApplyFailed", inst["status"]


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


def test_configmap_drift_is_put_back(operator: operator_harness.OperatorProcess, installed: Path,
                                     op_namespace: str, kube: Kube) -> None:
    """`kubectl patch` of the rendered ConfigMap (silencing detection) is reverted."""
    name = render.Names.for_instance(op_namespace, INSTANCE).configmap
    before = configmap_data(kube, op_namespace)
    config = yaml.safe_load(before[render.CONFIG_FILE])
    config["engine"]["minPriority"] = "emergency"
    silenced = yaml.safe_dump(config, sort_keys=False)
    kubectl(installed, "patch", "configmap", name, "-n", op_namespace, "--type", "merge",
            "-p", yaml.safe_dump({"data": {render.CONFIG_FILE: silenced}}))
    t0 = time.monotonic()
    wait_for(lambda: configmap_data(kube, op_namespace)[render.CONFIG_FILE] == before[render.CONFIG_FILE],
             what="the operator to restore the ConfigMap", timeout=RESYNC_BOUND_S)
    print(f"ConfigMap drift repaired in {time.monotonic() - t0:.2f}s")


@pytest.mark.parametrize(("kind", "api_version", "name_of"), [
    ("DaemonSet", "apps/v1", lambda n: n.daemonset),
    ("ServiceAccount", "v1", lambda n: n.serviceaccount),
    ("ConfigMap", "v1", lambda n: n.configmap),
    # Not watched: the resync puts them back.
    ("Role", "rbac.authorization.k8s.io/v1", lambda n: n.role),
    ("RoleBinding", "rbac.authorization.k8s.io/v1", lambda n: n.role),
])
def test_deleted_owned_object_comes_back(operator: operator_harness.OperatorProcess, installed: Path,
                                         op_namespace: str, kube: Kube, kind: str, api_version: str,
                                         name_of: Any) -> None:
    name = name_of(render.Names.for_instance(op_namespace, INSTANCE))
    uid = kube.get(api_version, kind, name, op_namespace)["metadata"]["uid"]
    kubectl(installed, "delete", kind.lower(), name, "-n", op_namespace)
    t0 = time.monotonic()
    wait_for(lambda: (o := kube.get(api_version, kind, name, op_namespace)) and o["metadata"]["uid"] != uid,
             what=f"the {kind} to be re-created", timeout=RESYNC_BOUND_S)
    print(f"{kind} re-created in {time.monotonic() - t0:.2f}s")


def test_binding_drift_is_put_back_by_the_resync(operator: operator_harness.OperatorProcess, installed: Path,
                                                 op_namespace: str, kube: Kube) -> None:
    """The sensor's ClusterRoleBinding is cluster-scoped (not watched): the resync repairs it."""
    name = render.Names.for_instance(op_namespace, INSTANCE).clusterrolebinding
    kubectl(installed, "delete", "clusterrolebinding", name)
    t0 = time.monotonic()
    wait_for(lambda: kube.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name) is not None,
             what="the binding to come back", timeout=RESYNC_BOUND_S)
    print(f"ClusterRoleBinding re-created by the resync in {time.monotonic() - t0:.2f}s")


def test_deleting_every_falcorule_renders_no_rules_the_sensor_accepts(
        operator: operator_harness.OperatorProcess, installed: Path, op_namespace: str, kube: Kube,
        tmp_path: Path) -> None:
    """No FalcoRule left: the ConfigMap says `rulesFiles: []` (not the deleted rules), the
    sensor's own parser accepts it (it runs with none), and the instance says why."""
    from falconer.sensor import config as sensor_config

    kubectl(installed, "delete", "falcorules", "--all", "-n", op_namespace)
    data = wait_for(lambda: (d := configmap_data(kube, op_namespace))
                    and yaml.safe_load(d[render.CONFIG_FILE])["rulesFiles"] == [] and d,
                    what="a ConfigMap with no rules")
    (tmp_path / render.CONFIG_FILE).write_text(data[render.CONFIG_FILE])
    assert sensor_config.parse(data[render.CONFIG_FILE], tmp_path / render.CONFIG_FILE).rules_files == ()
    assert not any(key.startswith(render.RULES_KEY_PREFIX) for key in data)
    inst = wait_for(lambda: (i := kube.get(GV, "FalcoInstance", INSTANCE, op_namespace))
                    and condition(i, "Degraded").get("reason") == "NoRulesSelected" and i,
                    what="the instance to say it selects no FalcoRule")
    assert condition(inst, "Degraded")["status"] == "True"


def big_falcorule(name: str, kilobytes: int) -> dict[str, Any]:
    values = [f"/opt/{name}/vendor/agent-{n:06d}/bin/a-rather-long-binary-name" for n in range(kilobytes * 1024 // 60)]
    items = [{"list": f"{name.replace('-', '_')}_binaries", "items": values},
             {"rule": f"Binary of {name}", "desc": "d", "output": "o %proc.exe", "priority": "Notice",
              "condition": f"evt.type = execve and proc.exe in ({name.replace('-', '_')}_binaries)"}]
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": name}, "spec": {"items": items}}


def test_rules_over_the_configmap_limit_are_named_and_never_claimed(
        operator: operator_harness.OperatorProcess, installed: Path, op_namespace: str, kube: Kube) -> None:
    """Two FalcoRules that each fit, but not together in one ConfigMap (1 MiB): the
    instance says why before the API server would refuse it, the FalcoRules say they are
    not applied, the sensors keep what they had; removing one heals it."""
    before = configmap_data(kube, op_namespace)
    for name in ("big-a", "big-b"):
        apply(installed, op_namespace, big_falcorule(name, 560))
    inst = wait_for(lambda: (i := kube.get(GV, "FalcoInstance", INSTANCE, op_namespace))
                    and "over Kubernetes' limit" in condition(i, "Degraded").get("message", "") and i,
                    what="the size problem on the instance", timeout=180)
    assert condition(inst, "Degraded")["status"] == "True"
    for name in ("big-a", "big-b"):
        fr = wait_for(lambda n=name: (o := kube.get(GV, "FalcoRule", n, op_namespace))
                      and condition(o, "Applied").get("reason") == "NotApplied" and o,
                      what=f"{name} not claimed as applied", timeout=180)
        assert condition(fr, "Valid")["status"] == "True" and condition(fr, "Applied")["status"] == "False"
    assert configmap_data(kube, op_namespace) == before
    kubectl(installed, "delete", "falcorule", "big-b", "-n", op_namespace)
    wait_for(lambda: render.rule_file_key("big-a") in configmap_data(kube, op_namespace),
             what="big-a to reach the ConfigMap", timeout=180)
    fr = wait_for(lambda: (o := kube.get(GV, "FalcoRule", "big-a", op_namespace))
                  and condition(o, "Applied").get("status") == "True" and o, what="big-a applied", timeout=180)
    assert condition(fr, "Applied")["reason"] == "Rendered"
