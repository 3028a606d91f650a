"""Least privilege, checked on the real API server.

Each ServiceAccount's permissions, as the API server's authorizer lists them
(`SelfSubjectRulesReview`, created by the admin impersonating the account), must be
exactly the README's table ("Security: permissions and Pod Security"). The rules every
authenticated user has are measured on an account with no bindings and left out.

Pod Security, with the API server's own PodSecurity admission (server-side dry runs of
Pods built from the shipped templates): the sensor's pod is admitted by a `privileged`
namespace and refused by a `baseline` one for hostPID, host paths and capabilities; the
operator's pod is admitted by a `restricted` one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import install, kubectl
from sensor_identity import sensor_identity

from falconer.operator import render
from falconer.operator.spec import parse_instance
from falconer.paths import ROOT
from falconer_e2e.controlplane import ControlPlane


pytestmark = pytest.mark.kube

README = ROOT / "README.md"
OPERATOR_DEPLOYMENT = ROOT / "operator" / "manifests" / "operator.yaml"
INSTANCE = "lp"
#: One permission: (API group, resource, verb, resource name or "*").
Permission = tuple[str, str, str, str]
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def documented() -> dict[tuple[str, str], set[Permission]]:
    """The README's permission table: (account, "cluster"|"own") -> permissions."""
    text = README.read_text()
    block = re.search(r"## Security: permissions.*?```text\n(.*?)```", text, re.DOTALL)
    assert block, "the README's security section has no permission table"
    table: dict[tuple[str, str], set[Permission]] = {}
    for line in block.group(1).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        account, where, group, resource, verbs, *names = line.split()
        for verb in verbs.split(","):
            for name in names or ["*"]:
                table.setdefault((account, where), set()).add(
                    ("" if group == "core" else group, resource, verb, INSTANCE if name == "<instance>" else name))
    return table


def expand(rules: list[dict[str, Any]]) -> set[Permission]:
    """A rules review's resourceRules as single permissions."""
    return {(group, resource, verb, name)
            for rule in rules for group in rule.get("apiGroups") or [""] for resource in rule["resources"]
            for verb in rule["verbs"] for name in rule.get("resourceNames") or ["*"]}


def rules_of(admin: Path, namespace: str, account_namespace: str, account: str) -> set[Permission]:
    """What `account` may do in `namespace`, asked as that account (impersonated)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}}
    done = kubectl(admin, "create", "--validate=false", "-o", "json", "-f", "-",
                   f"--as=system:serviceaccount:{account_namespace}:{account}", "--as-group=system:serviceaccounts",
                   f"--as-group=system:serviceaccounts:{account_namespace}", "--as-group=system:authenticated",
                   stdin=json.dumps(review))
    status = json.loads(done.stdout)["status"]
    assert not status.get("incomplete"), status
    return expand(status["resourceRules"])


@pytest.fixture
def accounts(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The operator's RBAC installed, a sensor identity for instance `lp` in the test's
    namespace, an account without bindings, and another namespace."""
    admin = Path(control_plane.kubeconfig)
    install(admin)
    sensor_identity(admin, kube_namespace, INSTANCE, tmp_path)
    kubectl(admin, "create", "serviceaccount", "nobody", "-n", kube_namespace)
    other = f"lp-other-{uuid.uuid4().hex[:6]}"
    kubectl(admin, "create", "namespace", other)
    yield {"admin": admin, "namespace": kube_namespace, "other": other,
           "sensor": render.Names.for_instance(kube_namespace, INSTANCE).serviceaccount}
    kubectl(admin, "delete", "namespace", other, "--wait=false", check=False)


def test_each_account_has_exactly_the_documented_permissions(accounts: dict[str, Any]) -> None:
    admin, ns, other = accounts["admin"], accounts["namespace"], accounts["other"]
    table = documented()
    everyone = rules_of(admin, ns, ns, "nobody")
    operator = rules_of(admin, other, "falconer-system", "falconer-operator") - everyone
    sensor_own = rules_of(admin, ns, ns, accounts["sensor"]) - everyone
    sensor_elsewhere = rules_of(admin, other, ns, accounts["sensor"]) - everyone
    assert operator == table[("operator", "cluster")], _diff(operator, table[("operator", "cluster")])
    assert sensor_elsewhere == table[("sensor", "cluster")], _diff(sensor_elsewhere, table[("sensor", "cluster")])
    own = table[("sensor", "cluster")] | table[("sensor", "own")]
    assert sensor_own == own, _diff(sensor_own, own)
    # The promises behind the table, spelled out.
    for group, resource, verb, _ in sensor_own:
        assert resource not in ("secrets", "configmaps"), f"the sensor may {verb} {resource}"
        if verb in WRITE_VERBS:
            assert (group, resource) in {("", "events"), ("falconer.io", "falcoalerts"),
                                         ("falconer.io", "falcoalerts/status"),
                                         ("falconer.io", "falcoinstances/status")}, (group, resource, verb)
    assert ("falconer.io", "falcoinstances/status", "patch", INSTANCE) in sensor_own
    assert not any(r == "falcoinstances/status" for _, r, _, _ in sensor_elsewhere)
    print(f"permissions: operator {len(operator)}, sensor {len(sensor_own)} in its namespace, "
          f"{len(sensor_elsewhere)} elsewhere; every authenticated account: {len(everyone)}")


def _diff(got: set[Permission], want: set[Permission]) -> str:
    return f"granted but not documented: {sorted(got - want)}; documented but not granted: {sorted(want - got)}"


def pod_security_namespace(admin: Path, level: str) -> str:
    """A namespace whose PodSecurity admission enforces `level`."""
    name = f"pss-{level}-{uuid.uuid4().hex[:6]}"
    kubectl(admin, "create", "namespace", name)
    kubectl(admin, "label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}",
            "pod-security.kubernetes.io/enforce-version=latest")
    return name


def dry_run_pod(admin: Path, namespace: str, spec: dict[str, Any]) -> tuple[bool, str]:
    """A server-side dry run of a Pod with `spec`: (admitted, what the server said)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pss-check", "namespace": namespace},
           "spec": spec}
    # ServiceAccount admission wants the pod's account to exist.
    kubectl(admin, "create", "serviceaccount", spec.get("serviceAccountName", "default"), "-n", namespace,
            check=False)
    done = kubectl(admin, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


@pytest.fixture
def pss_namespaces(control_plane: ControlPlane) -> Iterator[dict[str, str]]:
    admin = Path(control_plane.kubeconfig)
    names = {level: pod_security_namespace(admin, level) for level in ("privileged", "baseline", "restricted")}
    yield names
    for name in names.values():
        kubectl(admin, "delete", "namespace", name, "--wait=false", check=False)


def test_pod_security_the_sensor_needs_privileged_the_operator_passes_restricted(
        control_plane: ControlPlane, pss_namespaces: dict[str, str]) -> None:
    admin = Path(control_plane.kubeconfig)
    instance = {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance",
                "metadata": {"name": INSTANCE, "namespace": "any", "uid": str(uuid.uuid4())},
                "spec": {"criSocket": "/run/containerd/containerd.sock"}}
    spec = parse_instance(instance["spec"])
    sensor_spec = render.render_instance(instance, spec, []).daemonset["spec"]["template"]["spec"]
    admitted, said = dry_run_pod(admin, pss_namespaces["privileged"], sensor_spec)
    assert admitted, said
    refused, baseline = dry_run_pod(admin, pss_namespaces["baseline"], sensor_spec)
    assert not refused and "violates PodSecurity \"baseline:latest\"" in baseline, baseline
    for reason in ("host namespaces", "hostPath volumes", "non-default capabilities"):
        assert reason in baseline, f"baseline refuses the sensor for {reason}: {baseline}"
    assert "securityContext.privileged" not in baseline, "the sensor is not privileged: true"
    (deployment,) = [d for d in yaml.safe_load_all(OPERATOR_DEPLOYMENT.read_text()) if d["kind"] == "Deployment"]
    operator_spec = deployment["spec"]["template"]["spec"]
    admitted, said = dry_run_pod(admin, pss_namespaces["restricted"], operator_spec)
    assert admitted and "Warning" not in said, said
    print(f"sensor in baseline: {baseline}")
