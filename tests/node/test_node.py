"""A real node: the kubelet registers, pods from the local busybox image run in real
containers (cgroups, logs, exec through the API server), and pods on the pod network or
the host network reach the API server the in-cluster way (the `kubernetes` Service)."""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kube_fixtures import exec_in_pod, run_busybox_pod, wait_pod_running

from falconer_e2e import binaries, images, pki
from falconer_e2e.controlplane import ControlPlane
from falconer_e2e.node import Node

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

pytestmark = pytest.mark.kube

#: A SelfSubjectReview posted with the pod's ServiceAccount token to the API server at
#: KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, as any in-cluster client finds it.
#: (busybox's wget cannot verify certificates; test_service_ip_serves_the_api_server_
#: certificate verifies the same address from the host network.)
IN_CLUSTER_WHOAMI = (
    'wget -q -O - --no-check-certificate '
    '--header "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)" '
    '--header "Content-Type: application/json" '
    '--post-data \'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}\' '
    'https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT'
    '/apis/authentication.k8s.io/v1/selfsubjectreviews'
)


#: The hostPort the Service test maps on the node IP.
HOST_PORT = 18080


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def _container_id(pod: dict[str, Any]) -> str:
    """The 64-hex container id of the pod's only container (containerd://<id>)."""
    status = pod["status"]["container_statuses"][0]
    runtime, _, container_id = status["container_id"].partition("://")
    assert runtime == "containerd"
    return str(container_id)


def test_node_registers_ready(kube_node: Node, kube_client: ApiClient) -> None:
    from kubernetes import client

    node = client.CoreV1Api(kube_client).read_node(kube_node.name).to_dict()
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert not node["spec"]["taints"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == kube_node.network.node_ip
    info = node["status"]["node_info"]
    assert info["kubelet_version"] == binaries.KUBERNETES_VERSION
    assert info["container_runtime_version"].startswith("containerd://")
    assert int(node["status"]["capacity"]["pods"]) > 0


def test_busybox_pod_runs_and_its_logs_and_exec_work(
        kube_node: Node, kube_client: ApiClient, kube_namespace: str,
        control_plane: ControlPlane) -> None:
    from kubernetes import client

    marker = uuid.uuid4().hex
    pod = run_busybox_pod(kube_client, kube_namespace, "hello",
                          ["sh", "-c", f"echo started-{marker}; exec sleep 3600"]).to_dict()
    assert pod["spec"]["node_name"] == kube_node.name
    assert ipaddress.ip_address(pod["status"]["pod_ip"]) in ipaddress.ip_network(
        kube_node.network.pod_cidr)
    logs = client.CoreV1Api(kube_client).read_namespaced_pod_log("hello", kube_namespace)
    assert f"started-{marker}" in logs
    done = exec_in_pod(control_plane.kubeconfig, kube_namespace, "hello",
                       ["sh", "-c", "echo $((6 * 7)) $(hostname)"])
    assert (done.returncode, done.stdout.split()) == (0, ["42", "hello"]), done.stderr
    failed = exec_in_pod(control_plane.kubeconfig, kube_namespace, "hello", ["false"])
    assert failed.returncode == 1


@pytest.mark.parametrize("qos,resources,segment", [
    ("BestEffort", None, "besteffort/"),
    ("Burstable", {"requests": {"cpu": "10m", "memory": "16Mi"}}, "burstable/"),
    ("Guaranteed", {"requests": {"cpu": "20m", "memory": "32Mi"},
                    "limits": {"cpu": "20m", "memory": "32Mi"}}, ""),
])
def test_container_cgroup_is_kubepods_qos_pod_container(
        kube_node: Node, kube_client: ApiClient, kube_namespace: str, qos: str,
        resources: dict[str, dict[str, str]] | None, segment: str) -> None:
    """/proc/<pid>/cgroup of the container's process names /kubepods/[<qos>/]pod<uid>/<id>
    in every hierarchy (Guaranteed pods sit right under /kubepods)."""
    from kubernetes import client

    requirements = (client.V1ResourceRequirements(requests=resources.get("requests"),
                                                  limits=resources.get("limits"))
                    if resources else None)
    name = _name(qos.lower())
    pod = run_busybox_pod(kube_client, kube_namespace, name, ["sleep", "3600"],
                          resources=requirements).to_dict()
    assert pod["status"]["qos_class"] == qos
    container_id = _container_id(pod)
    assert re.fullmatch(r"[0-9a-f]{64}", container_id)
    pid = json.loads(kube_node.crictl("inspect", container_id))["info"]["pid"]
    expected = f"/kubepods/{segment}pod{pod['metadata']['uid']}/{container_id}"
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert lines
    assert {line.split(":", 2)[2] for line in lines} == {expected}


def _whoami(control_plane: ControlPlane, namespace: str, pod: str) -> str:
    done = exec_in_pod(control_plane.kubeconfig, namespace, pod, ["sh", "-c", IN_CLUSTER_WHOAMI])
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["status"]["userInfo"]["username"])


def test_host_network_pod_reaches_the_api_server_in_cluster(
        kube_node: Node, kube_client: ApiClient, kube_namespace: str,
        control_plane: ControlPlane) -> None:
    """As the sensor DaemonSet's pod will: hostNetwork and hostPID."""
    pod = run_busybox_pod(kube_client, kube_namespace, "host", ["sleep", "3600"],
                          host_network=True, host_pid=True).to_dict()
    assert pod["status"]["pod_ip"] == kube_node.network.node_ip
    user = _whoami(control_plane, kube_namespace, "host")
    assert user == f"system:serviceaccount:{kube_namespace}:default"


def test_pod_network_pod_reaches_the_api_server_in_cluster(
        kube_node: Node, kube_client: ApiClient, kube_namespace: str,
        control_plane: ControlPlane) -> None:
    run_busybox_pod(kube_client, kube_namespace, "podnet", ["sleep", "3600"])
    counters = kube_node.relay_counters
    assert counters is not None
    relayed = counters.relayed
    user = _whoami(control_plane, kube_namespace, "podnet")
    assert user == f"system:serviceaccount:{kube_namespace}:default"
    assert counters.relayed > relayed
    assert counters.target_failures == 0


def test_service_ip_serves_the_api_server_certificate(
        kube_node: Node, control_plane: ControlPlane) -> None:
    """From the host network, https://<kubernetes Service IP>:443 verifies against the
    cluster CA for that IP, as in-cluster clients check it."""
    context = ssl.create_default_context(cafile=str(control_plane.pki.ca.cert))
    context.load_cert_chain(str(control_plane.pki.admin.cert), str(control_plane.pki.admin.key))
    url = f"https://{pki.KUBERNETES_SERVICE_IP}:443/version"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        version = json.load(answer)
    assert version["gitVersion"] == binaries.KUBERNETES_VERSION


def test_services_and_host_ports_reach_a_pod(kube_node: Node, kube_client: ApiClient,
                                             kube_namespace: str) -> None:
    """kube-proxy routes a ClusterIP Service to its pod (EndpointSlice from the pod's
    labels), and the portmap plugin a hostPort on the node IP, both from the host."""
    from kubernetes import client

    marker = uuid.uuid4().hex
    web = client.V1Pod(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1PodSpec(termination_grace_period_seconds=0, containers=[
            client.V1Container(
                name="main", image=images.REFS["busybox"], image_pull_policy="Never",
                command=["sh", "-c", f"mkdir /www && echo {marker} > /www/id && "
                         "exec httpd -f -p 8080 -h /www"],
                ports=[client.V1ContainerPort(container_port=8080, host_port=HOST_PORT)],
            )]),
    )
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(kube_namespace, web)
    wait_pod_running(kube_client, kube_namespace, "web")
    service = core.create_namespaced_service(kube_namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[
            client.V1ServicePort(port=80, target_port=8080)]),
    ))
    assert service.spec is not None
    for url in (f"http://{service.spec.cluster_ip}/id",
                f"http://{kube_node.network.node_ip}:{HOST_PORT}/id"):
        assert _get_eventually(url) == marker, url


def _get_eventually(url: str, timeout: float = 30.0) -> str:
    """GET `url` until it answers (kube-proxy syncs a new Service within a second or two)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return str(answer.read().decode().strip())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
