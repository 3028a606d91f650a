"""Issue 8's end to end: the sensor as a cluster citizen, on the real control plane and a
real node (kubelet, containerd, runc).

The operator (as its least-privilege ServiceAccount) renders a FalcoInstance running the
upstream stable rules; the kubelet runs the sensor as the DaemonSet's pod from the local
sensor image. Each container-only stable rule is triggered by a real action in a real pod;
each alert must reach the admin where they look: an Event on the pod, a FalcoAlert in the
pod's namespace naming pod and workload, the rule's count in FalcoRule status, and the
node's loaded rules hash in FalcoInstance status.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import upstream
import yaml
from kube_fixtures import exec_in_pod, wait_pod_running
from operator_harness import kubectl, wait_for
from sensor_cluster import start_operator, wait_sensor_attached

from falconer.operator import convert
from falconer.operator.api import API_VERSION as GV
from falconer_e2e import binaries, images
from falconer_e2e.node import Node

pytestmark = [pytest.mark.kube, pytest.mark.ebpf, pytest.mark.timeout(1200)]

RULES, INSTANCE = "falco-rules", "cluster"
APP_NS = "shop"
ALERT_S = 60.0


@pytest.fixture(scope="module")
def cluster(control_plane: Any, kube_client: Any, sensor_image_node: Node,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Operator, rules, instance and app namespace; the sensor pod Running and attached."""
    admin = Path(control_plane.kubeconfig)
    ns = f"sec-{uuid.uuid4().hex[:6]}"
    kubectl(admin, "create", "namespace", ns)
    kubectl(admin, "create", "namespace", APP_NS, check=False)
    operator = start_operator(admin, tmp_path_factory.mktemp("cluster"), ns)
    manifest = convert.falcorule_manifest(upstream.STABLE.read_text(), RULES, ns)
    kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))
    instance = {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE, "namespace": ns},
                "spec": {"image": images.REFS["sensor"], "imagePullPolicy": "Never",
                         "nodeSelector": {"kubernetes.io/hostname": sensor_image_node.name},
                         "criSocket": str(sensor_image_node.paths.containerd_socket),
                         "outputs": {"stdout": {"format": "json"}, "falcoAlerts": True,
                                     "kubernetesEvents": True}}}
    kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(instance))
    try:
        pod = wait_sensor_attached(admin, ns, INSTANCE)
        yield {"admin": admin, "ns": ns, "sensor_pod": pod, "operator": operator, "node": sensor_image_node}
    finally:
        kubectl(admin, "delete", "falcoinstance", INSTANCE, "-n", ns, "--wait", "--timeout=90s", check=False)
        operator.stop()
        kubectl(admin, "delete", "namespace", ns, APP_NS, "--wait=false", check=False)


def app_pod(kube_client: Any, name: str, *, privileged: bool = False) -> str:
    """A busybox Deployment `name` in the app namespace; the name of its Running pod."""
    from kubernetes import client

    labels = {"app": name}
    container: dict[str, Any] = {"name": "main", "image": images.REFS["busybox"], "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "while true; do sleep 3600; done"]}
    if privileged:
        container["securityContext"] = {"privileged": True}
    # The client takes a manifest dict as the body (its stubs name only V1Deployment).
    deploy: Any = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
              "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels},
                                    "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]}}}}
    client.AppsV1Api(kube_client).create_namespaced_deployment(APP_NS, deploy)
    core = client.CoreV1Api(kube_client)
    pod = wait_for(lambda: next((p.metadata.name for p in core.list_namespaced_pod(
        APP_NS, label_selector=f"app={name}").items
        if p.metadata is not None and p.status is not None and p.status.phase == "Running"), None),
        timeout=120, what=f"the {name} pod")
    wait_pod_running(kube_client, APP_NS, pod)
    return str(pod)


@pytest.fixture(scope="module")
def pods(cluster: dict[str, Any], kube_client: Any) -> dict[str, str]:
    return {"plain": app_pod(kube_client, "web"), "privileged": app_pod(kube_client, "ops", privileged=True)}


#: Container-only stable rules and the action (sh -c text) that triggers each in a pod.
#: Tools are named by path: busybox's shell runs a bare applet name as /proc/self/exe
#: (proc.name "exe", for Falco too). Each command keeps its shell alive a moment, as a
#: real intruder's session would be.
ACTIONS: dict[str, tuple[str, str]] = {
    "Netcat Remote Code Execution in Container": ("plain", "/usr/bin/nc -e /bin/true 127.0.0.1 9; sleep 1"),
    "Redirect STDOUT/STDIN to Network Connection in Container": (
        "plain", "(/usr/bin/nc -l -p 9123 </dev/null >/dev/null 2>&1 &); sleep 0.5;"
        " /usr/bin/nc 127.0.0.1 9123 -e /bin/true; sleep 1"),
    "Packet socket created in container": ("plain", "/usr/sbin/arping -c 1 -w 1 -I eth0 127.0.0.1; sleep 1"),
    "Drop and execute new binary in container": (
        "plain", "/bin/cp /bin/busybox /tmp/dropped && /tmp/dropped true; sleep 1"),
    "Debugfs Launched in Privileged Container": (
        "privileged", "/bin/cp /bin/busybox /tmp/debugfs; /tmp/debugfs; sleep 1"),
    "Detect release_agent File Container Escapes": (
        "privileged", "/bin/mkdir -p /tmp/cg && /bin/mount -t cgroup -o none,name=falconertest cgroup /tmp/cg"
        " && echo /bin/true > /tmp/cg/release_agent; /bin/umount /tmp/cg; sleep 1"),
    "Linux Kernel Module Injection Detected": (
        "privileged", "echo junk > /tmp/m.ko; /sbin/insmod /tmp/m.ko; sleep 1"),
    "Contact K8S API Server From Container": (
        "plain", "/usr/bin/nc -w 1 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null; sleep 1"),
    "Terminal shell in container": ("plain", "TTY"),
    # Host actions of the stable rules, done in a pod: the alert carries the pod's fields.
    "Read sensitive file untrusted": ("plain", "/bin/cat /etc/shadow > /dev/null; sleep 1"),
    "Search Private Keys or Passwords": ("plain", "/usr/bin/find /etc -name id_rsa; sleep 1"),
    "Clear Log Activities": ("plain", "/bin/mkdir -p /var/log && echo x > /var/log/app.log"
                                      " && : > /var/log/app.log; sleep 1"),
}


def falcoalerts(admin: Path, rule: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl(admin, "get", "falcoalerts", "-n", APP_NS, "-o", "json").stdout)["items"]
    return [a for a in items if a["spec"]["rule"] == rule]


def pod_events(admin: Path, pod: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl(admin, "get", "events", "-n", APP_NS, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == pod
            and e.get("source", {}).get("component") == "falconer-sensor"]


def run_action(cluster: dict[str, Any], pod: str, command: str) -> None:
    if command == "TTY":
        # A shell with a terminal, as `kubectl exec -it` gives (script(1) supplies the pty).
        kubectl_path = binaries.locate("kubectl").path
        line = f"{kubectl_path} --kubeconfig {cluster['admin']} exec -it -n {APP_NS} {pod} -- sh -c 'sleep 1'"
        subprocess.run(["script", "-qec", line, "/dev/null"], capture_output=True, timeout=60, check=False)
        return
    exec_in_pod(cluster["admin"], APP_NS, pod, ["sh", "-c", command])


@pytest.mark.parametrize("rule", ACTIONS, ids=lambda r: r.split()[0] + "-" + r.split()[-1])
def test_container_rule_reaches_event_falcoalert_and_status(rule: str, cluster: dict[str, Any],
                                                             pods: dict[str, str]) -> None:
    which, command = ACTIONS[rule]
    pod, admin = pods[which], cluster["admin"]
    run_action(cluster, pod, command)
    alert = wait_for(lambda: next(iter(falcoalerts(admin, rule)), None), timeout=ALERT_S,
                     what=f"a FalcoAlert for {rule!r}")
    assert alert["spec"]["pod"]["name"] == pod and alert["spec"]["pod"]["namespace"] == APP_NS
    assert alert["spec"]["workload"]["kind"] == "Deployment"
    assert alert["spec"]["node"] == cluster["node"].name
    assert alert["status"]["count"] >= 1
    fields = alert["status"].get("lastOutputFields") or {}
    assert fields.get("k8s.ns.name") == APP_NS and fields.get("k8s.pod.name") == pod, fields
    assert fields.get("container.image.repository") == images.REFS["busybox"].rsplit(":", 1)[0], fields
    wait_for(lambda: any(rule in (e.get("message") or "") or e.get("reason") for e in pod_events(admin, pod)),
             timeout=ALERT_S, what=f"an Event on pod {pod}")


def test_status_counts_alerts_and_loaded_rules(cluster: dict[str, Any], pods: dict[str, str]) -> None:
    admin, ns = cluster["admin"], cluster["ns"]

    def loaded() -> dict[str, Any] | None:
        inst = json.loads(kubectl(admin, "get", "falcoinstance", INSTANCE, "-n", ns, "-o", "json").stdout)
        status = inst.get("status") or {}
        cm_hash = status.get("rulesHash")
        node = (status.get("sensors") or {}).get(cluster["node"].name) or {}
        return status if cm_hash and node.get("rulesHash") == cm_hash else None

    status = wait_for(loaded, timeout=60, interval=1.0, what="the node's loaded hash in FalcoInstance status")
    assert status["sensors"][cluster["node"].name]["rulesHash"] == status["rulesHash"]
    fr = wait_for(lambda: (o := json.loads(kubectl(admin, "get", "falcorule", RULES, "-n", ns, "-o", "json").stdout))
                  and (o.get("status") or {}).get("alerts") and o, timeout=60, interval=1.0,
                  what="alert counts in FalcoRule status")
    counted = fr["status"]["alerts"]
    assert any(r in json.dumps(counted) for r in ACTIONS), counted


def test_sensor_pod_goes_with_the_instance(cluster: dict[str, Any]) -> None:
    admin, ns = cluster["admin"], cluster["ns"]
    kubectl(admin, "delete", "falcoinstance", INSTANCE, "-n", ns, "--wait", "--timeout=90s")
    wait_for(lambda: not json.loads(kubectl(admin, "get", "pods", "-n", ns, "-l",
                                            f"falconer.io/instance={INSTANCE}", "-o", "json").stdout)["items"],
             timeout=120, what="the sensor pod to go")

