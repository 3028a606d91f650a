"""The operator rolls sensors' own reports up into FalcoInstance and FalcoRule status.

Real operator, real API server; each "sensor" is the sensor's status reporter
(`sinks.status.StatusReporter`) with the sensor's own ServiceAccount, reporting the
rules hash and FalcoRule generations it read from the ConfigMap the operator rendered
(parsed by the sensor's own config reader), as a real sensor does after a load.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, condition, kubectl, wait_for

from falconer.engine import Alert
from falconer.operator import render
from falconer.operator.kube import Kube
from falconer.sensor import config as sensor_config
from falconer.sensor import kube as sensor_kube
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.status import StatusReporter

pytestmark = pytest.mark.kube

RULES = "rollup-rules"
INSTANCE = "rollup"
RULE = "Rollup rule"


def apply(admin: Path, namespace: str, obj: dict[str, Any]) -> None:
    kubectl(admin, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj))


def falcorule(condition_text: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": RULES},
            "spec": {"items": [{"rule": RULE, "desc": "d", "condition": condition_text, "output": "seen %proc.name",
                                "priority": "Warning"}]}}


def loaded_config(kube: Kube, namespace: str, rules_hash: str) -> sensor_config.SensorConfig:
    """The falconer.yaml of the instance's ConfigMap once it carries `rules_hash`."""
    def current() -> sensor_config.SensorConfig | None:
        cm = kube.get("v1", "ConfigMap", render.Names.for_instance(namespace, INSTANCE).configmap, namespace)
        if not cm:
            return None
        parsed = sensor_config.parse(cm["data"][render.CONFIG_FILE], Path("/etc/falconer/falconer.yaml"))
        return parsed if parsed.rules_hash == rules_hash else None
    return wait_for(current, what=f"the ConfigMap with rules hash {rules_hash}")


@pytest.fixture(scope="module")
def sensor_api(operator: operator_harness.OperatorProcess, installed: Path, op_namespace: str, kube: Kube,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[sensor_kube.Kube]:
    """The FalcoRule and FalcoInstance applied; the sensor's own API identity."""
    apply(installed, op_namespace, falcorule("evt.type = openat"))
    apply(installed, op_namespace, {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE},
                                    "spec": {"nodeSelector": {"kubernetes.io/hostname": "no-such-node"},
                                             "outputs": {"falcoAlerts": True, "http": {"url": "http://x"}}}})
    account = render.Names.for_instance(op_namespace, INSTANCE).serviceaccount
    wait_for(lambda: kube.get("rbac.authorization.k8s.io/v1", "RoleBinding",
                              render.Names.for_instance(op_namespace, INSTANCE).role, op_namespace),
             what="the sensor's status RoleBinding")
    config = operator_harness.service_account_kubeconfig(
        installed, tmp_path_factory.mktemp("sensor") / "sensor.kubeconfig", op_namespace, account)
    yield sensor_kube.Kube(sensor_kube.api_client(config))


def reporter(api: sensor_kube.Kube, namespace: str, node: str) -> StatusReporter:
    r = StatusReporter(api, node, namespace, INSTANCE, lambda: {"kernel": 0}, flush_every_s=0.2, err=io.StringIO())
    r.start()
    return r


def instance(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(GV, "FalcoInstance", INSTANCE, namespace) or {}


def test_sensor_reports_roll_up_into_instance_and_rule_status(sensor_api, installed: Path, kube: Kube,
                                                              op_namespace: str) -> None:
    inst = wait_for(lambda: (i := instance(kube, op_namespace)).get("status", {}).get("rulesHash") and i,
                    what="the instance's rules hash")
    current = inst["status"]["rulesHash"]
    assert condition(inst, "RulesLoaded")["reason"] == "NoReports"
    config = loaded_config(kube, op_namespace, current)
    fr = kube.get(GV, "FalcoRule", RULES, op_namespace)
    assert [(o.name, o.generation) for o in config.falco_rules] == [(RULES, fr["metadata"]["generation"])]

    a, b = reporter(sensor_api, op_namespace, "node-a"), reporter(sensor_api, op_namespace, "node-b")
    try:
        a.loaded(config.rules_hash, config.falco_rules)
        for n in range(3):
            a.offer(Delivery(Alert(RULE, "Warning", "syscall", time.time_ns(), f"seen {n}", {}), None))
        b.loaded("an-older-hash", config.falco_rules)
        inst = wait_for(lambda: (i := instance(kube, op_namespace))["status"].get("sensorsReporting") == 2 and i,
                        timeout=30, what="two sensors reporting")
        assert inst["status"]["sensorsCurrent"] == 1
        loaded = condition(inst, "RulesLoaded")
        assert (loaded["status"], loaded["reason"]) == ("False", "StaleRules") and "node-b" in loaded["message"]

        b.loaded(config.rules_hash, config.falco_rules)
        inst = wait_for(lambda: (i := instance(kube, op_namespace))["status"].get("sensorsCurrent") == 2 and i,
                        timeout=30, what="both sensors current")
        assert condition(inst, "RulesLoaded")["status"] == "True"
        fr = wait_for(lambda: (f := kube.get(GV, "FalcoRule", RULES, op_namespace))["status"].get("sensors") == 2
                      and f["status"]["alerts"]["total"] == 3 and f, timeout=30, what="the FalcoRule's roll-up")
        assert fr["status"]["alerts"]["byRule"] == {RULE: 3}

        # A rules change: nobody runs the new generation until it is loaded; a broken
        # load shows as ReloadFailed, and status never names rules that were not loaded.
        apply(installed, op_namespace, falcorule("evt.type = openat and proc.name = x"))
        inst = wait_for(lambda: (i := instance(kube, op_namespace))["status"]["rulesHash"] != current and i,
                        timeout=30, what="the new rules hash")
        new = loaded_config(kube, op_namespace, inst["status"]["rulesHash"])
        b.reload_failed("rollup-rules.yaml:1:1: LOAD_ERR_YAML_PARSE: broken")
        a.loaded(new.rules_hash, new.falco_rules)
        inst = wait_for(lambda: condition(i := instance(kube, op_namespace), "RulesLoaded").get("reason")
                        == "ReloadFailed" and i["status"]["sensorsCurrent"] == 1 and i, timeout=30,
                        what="ReloadFailed, with node-a current")
        assert "node-b" in condition(inst, "RulesLoaded")["message"]
        fr = wait_for(lambda: (f := kube.get(GV, "FalcoRule", RULES, op_namespace))["status"].get("sensors") == 1
                      and f, timeout=30, what="one sensor on the new generation")
        assert fr["metadata"]["generation"] == 2
    finally:
        a.close()
        b.close()
