"""The validating admission webhook (operator/webhook.py, webhookserver.py) on the real
kube-apiserver, which calls the operator on loopback (`url:` clientConfig): a broken
FalcoRule and every attempt of the attack matrix are refused at `kubectl apply` with
Falco's code, the item and line:column; the operator keeps its certificate in a Secret
and the CA in the ValidatingWebhookConfiguration (failurePolicy Ignore, 5 s); with the
operator stopped, applies succeed and the status catches up when it is back.

Runs alone (pytest runs modules one after another and every module stops its operator);
its ClusterFalcoRules and the webhook configuration are deleted at its end.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import operator_harness
import pytest
import yaml
from operator_harness import GV, condition, kubectl, wait_for
from tenant_attacks import ATTACKS, CLUSTER, TENANT_OK

from falconer.operator.kube import Kube
from falconer.operator.webhookserver import CONFIG_NAME

pytestmark = pytest.mark.kube

SUITE = {"suite": "tenant-webhook"}
SECRET = ("falconer-system", "falconer-webhook-tls")
BROKEN = TENANT_OK.replace("my_tool_run\n  output", "my_tool_run and\n  output")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _falcorule(name: str, namespace: str, text: str) -> str:
    return yaml.safe_dump({"apiVersion": GV, "kind": "FalcoRule",
                           "metadata": {"name": name, "namespace": namespace, "labels": SUITE},
                           "spec": {"items": yaml.safe_load(text)}})


@pytest.fixture(scope="module")
def setup(installed: Path, operator_kubeconfig: Path, op_namespace: str, kube: Kube,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tenant = f"{op_namespace}-t"
    port = _free_port()
    url = f"https://127.0.0.1:{port}/validate"
    proc = operator_harness.OperatorProcess(
        operator_kubeconfig, None, tmp_path_factory.mktemp("operator-log") / "operator.log",
        ["--webhook-listen", f"127.0.0.1:{port}", "--webhook-url", url])
    objs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tenant}},
        {"apiVersion": GV, "kind": "ClusterFalcoRule", "metadata": {"name": "tenant-webhook-base", "labels": SUITE},
         "spec": {"items": yaml.safe_load(CLUSTER)}},
        {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": "fleet", "namespace": op_namespace},
         "spec": {"ruleSelector": {"matchLabels": SUITE}, "tenants": {"enabled": True}}},
    ]
    kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump_all(objs))
    proc.start()
    try:
        wait_for(lambda: kube.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", CONFIG_NAME),
                 what="the webhook configuration")
        # the API server serves the webhook once its informer has the configuration
        wait_for(lambda: "denied" in kubectl(installed, "apply", "--dry-run=server", "-f", "-",
                                             stdin=_falcorule("probe", tenant, BROKEN), check=False).stderr,
                 timeout=30, what="the API server to call the webhook")
        yield {"ns": op_namespace, "tenant": tenant, "proc": proc, "url": url}
    finally:
        operator_harness.stop_after_deleting_instances(proc, installed, op_namespace)
        kubectl(installed, "delete", "clusterfalcorules", "-l", "suite=tenant-webhook", check=False)
        kubectl(installed, "delete", "validatingwebhookconfiguration", CONFIG_NAME, check=False)
        kubectl(installed, "delete", "namespace", tenant, "--wait=false", check=False)


def test_configuration_and_certificate(setup: dict[str, Any], kube: Kube) -> None:
    config = kube.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", CONFIG_NAME)
    assert config is not None
    (hook,) = config["webhooks"]
    assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["sideEffects"]) == ("Ignore", 5, "None")
    assert hook["clientConfig"]["url"] == setup["url"]
    secret = kube.get("v1", "Secret", SECRET[1], SECRET[0])
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == base64.b64decode(secret["data"]["ca.crt"])


def test_a_broken_falcorule_is_refused_with_its_position(setup: dict[str, Any], installed: Path) -> None:
    done = kubectl(installed, "apply", "-f", "-", stdin=_falcorule("broken", setup["tenant"], BROKEN), check=False)
    assert done.returncode != 0
    assert "LOAD_ERR_COMPILE_CONDITION" in done.stderr
    assert "rule 'Tool run' at spec.items[2].condition:1:16" in done.stderr, done.stderr


def test_a_good_tenant_falcorule_is_admitted(setup: dict[str, Any], installed: Path, kube: Kube) -> None:
    kubectl(installed, "apply", "-f", "-", stdin=_falcorule("good", setup["tenant"], TENANT_OK))
    fr = wait_for(lambda: (f := kube.get(GV, "FalcoRule", "good", setup["tenant"]))
                  and condition(f, "Valid").get("status") == "True" and f, timeout=60, what="Valid")
    assert fr["status"]["instances"] == 1


@pytest.mark.parametrize("index", range(len(ATTACKS)), ids=[a.name for a in ATTACKS])
def test_attack_is_refused_at_admission(setup: dict[str, Any], installed: Path, index: int) -> None:
    attack = ATTACKS[index]
    done = kubectl(installed, "apply", "-f", "-", stdin=_falcorule(f"attack-{index}", setup["tenant"], attack.text),
                   check=False)
    assert done.returncode != 0, done.stdout
    assert f"spec.items[{attack.item}].{attack.field}:" in done.stderr and "LOAD_ERR_VALIDATE" in done.stderr
    assert attack.message in done.stderr


def test_with_the_operator_stopped_applies_succeed_and_status_catches_up(
        setup: dict[str, Any], installed: Path, kube: Kube) -> None:
    proc: operator_harness.OperatorProcess = setup["proc"]
    secret_before = kube.get("v1", "Secret", SECRET[1], SECRET[0])
    proc.stop()
    try:
        kubectl(installed, "apply", "-f", "-", stdin=_falcorule("while-down", setup["tenant"], BROKEN))
    finally:
        proc.start()
    fr = wait_for(lambda: (f := kube.get(GV, "FalcoRule", "while-down", setup["tenant"]))
                  and (f.get("status") or {}).get("errors") and f, timeout=60, what="the status")
    (err,) = fr["status"]["errors"]
    assert (err["code"], err["path"], err["line"]) == ("LOAD_ERR_COMPILE_CONDITION", "spec.items[2].condition", 1)
    secret_after = kube.get("v1", "Secret", SECRET[1], SECRET[0])
    assert secret_after is not None and secret_before is not None
    assert secret_after["data"] == secret_before["data"]  # a restart keeps a valid certificate
