"""A sensor's identity on the local control plane, exactly as the operator renders it.

`sensor_identity(admin, namespace, instance, tmp)` creates a FalcoInstance (no operator
needed), applies the ServiceAccount, ClusterRoleBinding, status Role and RoleBinding
that `render.render_instance` makes for it, and returns a kubeconfig authenticating as
that ServiceAccount, so tests of the sensor's sinks also prove the shipped RBAC suffices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import operator_harness

from falconer.operator import render
from falconer.operator.api import API_VERSION
from falconer.operator.spec import parse_instance


def sensor_identity(admin: Path, namespace: str, instance: str, tmp: Path,
                    outputs: dict[str, Any] | None = None) -> Path:
    """The FalcoInstance `namespace/instance` and a kubeconfig of its sensor's account."""
    operator_harness.install(admin)
    body = {"apiVersion": API_VERSION, "kind": "FalcoInstance",
            "metadata": {"name": instance, "namespace": namespace}, "spec": {"outputs": outputs or {}}}
    operator_harness.kubectl(admin, "apply", "-f", "-", stdin=json.dumps(body))
    live = json.loads(operator_harness.kubectl(admin, "get", "falcoinstance", instance, "-n", namespace,
                                               "-o", "json").stdout)
    rendered = render.render_instance(live, parse_instance(live.get("spec")), [])
    for obj in (rendered.serviceaccount, rendered.clusterrolebinding, rendered.role, rendered.rolebinding):
        operator_harness.kubectl(admin, "apply", "-f", "-", stdin=json.dumps(obj))
    names = render.Names.for_instance(namespace, instance)
    return operator_harness.service_account_kubeconfig(admin, tmp / f"{instance}-sensor.kubeconfig", namespace,
                                                       names.serviceaccount)
