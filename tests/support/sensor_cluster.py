"""The set-up shared by the e2e tests that run the sensor as the operator's DaemonSet pod
on the session's node (e2e/test_cluster_sensor.py, e2e/test_tenants.py): the operator
started as its least-privilege ServiceAccount, and the sensor pod waited for until it
runs and has attached its probe. The node with the sensor image is the
`sensor_image_node` fixture (kube_fixtures.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import operator_harness
from operator_harness import kubectl, wait_for

#: Waiting for the sensor pod, in seconds: the sensor image's import (about a minute)
#: and bcc's compile.
SENSOR_START_S = 300.0

#: What the sensor logs once its probe is attached (sensor/runner.py's start-up line).
ATTACHED_LOG = "watching"


def start_operator(admin: Path, work: Path, namespace: str | None) -> operator_harness.OperatorProcess:
    """Install the CRDs and RBAC with the admin kubeconfig `admin`, then start the
    operator as its ServiceAccount (kubeconfig and log under `work`), watching
    `namespace` (None: all namespaces). The caller stops it."""
    operator_harness.install(admin)
    kubeconfig = operator_harness.service_account_kubeconfig(
        admin, work / "operator.kubeconfig", operator_harness.OPERATOR_NAMESPACE,
        operator_harness.OPERATOR_ACCOUNT)
    operator = operator_harness.OperatorProcess(kubeconfig, namespace, work / "operator.log")
    operator.start()
    return operator


def running_sensor_pod(admin: Path, namespace: str, instance: str) -> str | None:
    """The name of a Running sensor pod of FalcoInstance `instance`, or None."""
    pods = json.loads(kubectl(admin, "get", "pods", "-n", namespace, "-l", f"falconer.io/instance={instance}",
                              "-o", "json").stdout)["items"]
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    return running[0] if running else None


def pod_logs(admin: Path, namespace: str, pod: str) -> str:
    """The pod's log so far (kubectl logs: stdout, then stderr); empty when unreadable."""
    done = kubectl(admin, "logs", "-n", namespace, pod, check=False)
    return done.stdout + done.stderr


def wait_sensor_attached(admin: Path, namespace: str, instance: str) -> str:
    """Wait (up to SENSOR_START_S each) for the instance's sensor pod to run and to log
    that its probe is attached; its name. Raises operator_harness.Timeout."""
    pod = wait_for(lambda: running_sensor_pod(admin, namespace, instance), timeout=SENSOR_START_S,
                   what="the sensor pod Running")
    wait_for(lambda: ATTACHED_LOG in pod_logs(admin, namespace, pod), timeout=SENSOR_START_S, interval=1.0,
             what="the sensor to attach its probe")
    return pod
