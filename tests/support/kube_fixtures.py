"""Pytest fixtures for tests that need the local Kubernetes control plane or a node.

Registered for the whole repository (tests/ and e2e/) by the root `conftest.py`, so one
control plane (and, when asked for, one node running real pods) serves the whole session
wherever the tests live. Without the binaries a test skips on a developer machine and
fails in CI (see `prereq.require`).

Pods on the node: `run_busybox_pod` starts one from the local busybox image and waits
for it to run; `exec_in_pod` runs a command in it through the API server (kubectl exec,
so the API server -> kubelet path with its authentication is exercised).
`sensor_image_node` is the node with the sensor image imported too, for the e2e tests
that run the sensor as the operator's DaemonSet pod.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import prereq
import pytest

from falconer_e2e import binaries
from falconer_e2e.controlplane import ControlPlane
from falconer_e2e.node import Node, missing_prerequisites

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Pod, V1ResourceRequirements

#: The binaries the control plane itself runs (kubectl is only a convenience).
SERVER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

#: How long a new namespace may take to get its `default` ServiceAccount.
NAMESPACE_READY_SECONDS = 30.0

#: The images the session's node imports (falconer_e2e.images names).
NODE_IMAGES = ("pause", "busybox")

#: How long a pod on the node may take to run (scheduling, sandbox, container start).
POD_RUNNING_SECONDS = 120.0


def missing_server_binaries() -> list[str]:
    """Messages for every control-plane binary that cannot be located."""
    problems: list[str] = []
    for name in SERVER_BINARIES:
        try:
            binaries.locate(name)
        except binaries.BinaryNotFound as error:
            problems.append(str(error))
    return problems


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane for the session; its work dir (logs) stays in pytest's
    temporary folder for inspection after a failure."""
    problems = missing_server_binaries()
    prereq.require(not problems, "; ".join(problems))
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_client(control_plane: ControlPlane) -> Iterator[ApiClient]:
    """A kubernetes.client.ApiClient with the admin identity (system:masters)."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


@contextmanager
def fresh_namespace(kube_client: ApiClient, label: str, width: int) -> Iterator[str]:
    """A new namespace named after `label` (lower-cased, runs of other characters than
    [a-z0-9] as one "-", at most `width` characters) and a random 6-hex suffix; deleted on
    leaving without waiting for its finalization."""
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    stem = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:width].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def wait_default_service_account(kube_client: ApiClient, namespace: str) -> None:
    """Wait (up to NAMESPACE_READY_SECONDS) until the namespace's `default` ServiceAccount
    exists, so Pods can be created in it; raises the client's ApiException otherwise."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_client)
    deadline = time.monotonic() + NAMESPACE_READY_SECONDS
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def kube_namespace(request: pytest.FixtureRequest, kube_client: ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, ready for Pods (its `default` ServiceAccount
    exists); deleted afterwards without waiting for its finalization."""
    with fresh_namespace(kube_client, request.node.name, 40) as name:
        wait_default_service_account(kube_client, name)
        yield name


@pytest.fixture(scope="session")
def kube_node(control_plane: ControlPlane,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real node (containerd, kubelet, kube-proxy) of the session's control plane, with
    the pause and busybox images imported; its work dir (logs) stays in pytest's
    temporary folder. Tests may stop() and start() it again, but must leave it running."""
    from falconer_e2e import images

    problems = missing_prerequisites()
    prereq.require(not problems, "; ".join(problems))
    node = Node(control_plane, tmp_path_factory.mktemp("node"),
                sandbox_image=images.REFS["pause"],
                images=[images.build(name) for name in NODE_IMAGES])
    node.start()
    _SESSION_NODES.append(node)
    try:
        yield node
    finally:
        _SESSION_NODES.remove(node)
        node.stop()


@pytest.fixture(scope="module")
def sensor_image_node(kube_node: Node) -> Node:
    """The session's node with the sensor image imported as well (e2e/images.py builds
    it when missing: about a minute)."""
    from falconer_e2e import images

    if images.REFS["sensor"] not in kube_node.image_refs():
        kube_node.import_image(images.build("sensor"))
    return kube_node


#: The session's running nodes (one host holds one node at a time).
_SESSION_NODES: list[Node] = []


@pytest.fixture
def host_free_of_nodes() -> Iterator[None]:
    """For a test that runs a node of its own (the all-in-one): the session's node, if
    one was started, is stopped for the test and started again after it."""
    paused = [n for n in _SESSION_NODES if n.running()]
    for node in paused:
        node.stop()
    try:
        yield
    finally:
        for node in paused:
            node.start()


def run_busybox_pod(api: ApiClient, namespace: str, name: str, command: Sequence[str], *,
                    host_network: bool = False, host_pid: bool = False,
                    resources: V1ResourceRequirements | None = None,
                    timeout: float = POD_RUNNING_SECONDS) -> V1Pod:
    """Create pod `name` running `command` in the local busybox image (container "main")
    and return it once Running. AssertionError (with the pod's status and events) when it
    fails or does not run within `timeout` seconds."""
    from kubernetes import client

    from falconer_e2e import images

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            host_network=host_network, host_pid=host_pid,
            restart_policy="Never", termination_grace_period_seconds=0,
            containers=[client.V1Container(
                name="main", image=images.REFS["busybox"], image_pull_policy="Never",
                command=list(command), resources=resources,
            )],
        ),
    )
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod)
    return wait_pod_running(api, namespace, name, timeout)


def wait_pod_running(api: ApiClient, namespace: str, name: str,
                     timeout: float = POD_RUNNING_SECONDS) -> V1Pod:
    """Poll until pod `name` is Running; AssertionError with its status and events when it
    ends (Succeeded/Failed) or times out."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        phase = pod.status.phase if pod.status else None
        if phase == "Running":
            return pod
        if phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            events = core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}")
            told = "; ".join(f"{e.reason}: {e.message}" for e in events.items)
            raise AssertionError(f"pod {namespace}/{name} is {phase}, not Running: "
                                 f"{pod.status}; events: {told}")
        time.sleep(0.3)


def exec_in_pod(kubeconfig: Path, namespace: str, pod: str, command: Sequence[str], *,
                container: str | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `command` in the pod through the API server (`kubectl exec`, version-matched);
    the completed process (stdout, stderr, returncode; never raises for a non-zero
    exit, only for a timeout)."""
    kubectl = binaries.locate("kubectl").path
    target = ["-c", container] if container else []
    return subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "exec", "-n", namespace, pod,
         *target, "--", *command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def token_client(kube_client: ApiClient, namespace: str, account: str) -> ApiClient:
    """A client authenticated as ServiceAccount `account` (created here) of `namespace`,
    by a token the API server signs; it may do what RBAC grants that account."""
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)))
    status = core.create_namespaced_service_account_token(
        account, namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status
    assert status is not None, "the API server answered a TokenRequest without a status"
    token = status.token
    config = client.Configuration()
    config.host = kube_client.configuration.host
    config.ssl_ca_cert = kube_client.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)
