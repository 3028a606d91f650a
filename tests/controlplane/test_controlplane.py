"""The local control plane is a real cluster: the pinned release answers, the controller
manager's controllers (Deployment, DaemonSet, garbage collector, ServiceAccount tokens)
act, and RBAC is enforced."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pytest
from kube_fixtures import token_client
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from falconer_e2e import binaries
from falconer_e2e.controlplane import ControlPlane

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

pytestmark = pytest.mark.kube

T = TypeVar("T")

#: Upper bound for a controller to act; they normally take well under a second.
SETTLE_SECONDS = 30.0

LABELS = {"app": "probe"}


def eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {SETTLE_SECONDS:.0f}s waiting for {what}")


def pod_template() -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=LABELS),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )


def test_version_is_the_pinned_release(kube_client: ApiClient) -> None:
    info = client.VersionApi(kube_client).get_code()
    assert info.git_version == binaries.KUBERNETES_VERSION
    major, minor = binaries.KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    assert (info.major, info.minor) == (major, minor)


def test_deployment_gets_a_replicaset_and_pods(kube_client: ApiClient, kube_namespace: str
                                               ) -> None:
    apps = client.AppsV1Api(kube_client)
    deployment = apps.create_namespaced_deployment(kube_namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=LABELS),
            template=pod_template(),
        ),
    ))

    def owned_replicaset() -> client.V1ReplicaSet | None:
        for rs in apps.list_namespaced_replica_set(kube_namespace).items:
            if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or ()):
                return rs
        return None

    rs = eventually(owned_replicaset, "the Deployment's ReplicaSet")
    core = client.CoreV1Api(kube_client)

    def replicaset_pods() -> list[client.V1Pod] | None:
        pods = [p for p in core.list_namespaced_pod(kube_namespace).items
                if any(o.uid == rs.metadata.uid for o in p.metadata.owner_references or ())]
        return pods if len(pods) == 2 else None

    pods = eventually(replicaset_pods, "the ReplicaSet's two Pods")
    # No kubelet runs: the Pods exist but never start.
    assert all(p.status.phase == "Pending" for p in pods)


def test_daemonset_gets_a_pod_for_a_registered_node(kube_client: ApiClient,
                                                     kube_namespace: str) -> None:
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    node = f"node-{uuid.uuid4().hex[:8]}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
        name=node, labels={"kubernetes.io/hostname": node})))
    try:
        apps.create_namespaced_daemon_set(kube_namespace, client.V1DaemonSet(
            metadata=client.V1ObjectMeta(name="sensor"),
            spec=client.V1DaemonSetSpec(
                selector=client.V1LabelSelector(match_labels=LABELS),
                template=pod_template(),
            ),
        ))

        def pod_for_node() -> client.V1Pod | None:
            for pod in core.list_namespaced_pod(kube_namespace).items:
                # The DaemonSet controller pins each Pod to its node by node affinity.
                terms = pod.spec.affinity.node_affinity \
                    .required_during_scheduling_ignored_during_execution.node_selector_terms
                fields = [f for t in terms for f in t.match_fields or ()]
                if any(node in (f.values or ()) for f in fields):
                    return pod
            return None

        pod = eventually(pod_for_node, f"the DaemonSet's Pod for node {node}")
        assert pod.metadata.owner_references[0].kind == "DaemonSet"
    finally:
        core.delete_node(node)


def test_garbage_collector_deletes_an_owned_configmap(kube_client: ApiClient,
                                                      kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    owner = core.create_namespaced_config_map(
        kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(kube_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owned", owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)]),
    ))
    core.delete_namespaced_config_map("owner", kube_namespace,
                                      propagation_policy="Background")

    def owned_is_gone() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(kube_namespace).items}
        return "owned" not in names

    eventually(owned_is_gone, "the garbage collector to delete the owned ConfigMap")


def test_rbac_denies_an_unprivileged_service_account(kube_client: ApiClient,
                                                     kube_namespace: str) -> None:
    with token_client(kube_client, kube_namespace, "nobody") as as_nobody:
        review = client.AuthenticationV1Api(as_nobody).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == \
            f"system:serviceaccount:{kube_namespace}:nobody"
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_nobody).list_namespaced_secret(kube_namespace)
        assert denied.value.status == 403

        # The same identity is allowed once a Role grants it: the 403 was RBAC's answer.
        rbac = client.RbacAuthorizationV1Api(kube_client)
        rbac.create_namespaced_role(kube_namespace, client.V1Role(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                       verbs=["list"])],
        ))
        rbac.create_namespaced_role_binding(kube_namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                      name="read-configmaps"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody",
                                           namespace=kube_namespace)],
        ))

        def can_list_configmaps() -> bool:
            try:
                client.CoreV1Api(as_nobody).list_namespaced_config_map(kube_namespace)
            except ApiException as error:
                if error.status != 403:
                    raise
                return False
            return True

        eventually(can_list_configmaps, "the RoleBinding to take effect")
        with pytest.raises(ApiException) as still_denied:
            client.CoreV1Api(as_nobody).list_namespaced_secret(kube_namespace)
        assert still_denied.value.status == 403


def test_controllers_run_as_their_own_service_accounts(kube_client: ApiClient) -> None:
    """--use-service-account-credentials: each controller got a ServiceAccount."""
    accounts = {sa.metadata.name for sa in
                client.CoreV1Api(kube_client).list_namespaced_service_account(
                    "kube-system").items}
    assert {"deployment-controller", "daemon-set-controller",
            "generic-garbage-collector"} <= accounts


def test_admin_kubeconfig_is_self_contained(control_plane: ControlPlane) -> None:
    text = control_plane.kubeconfig.read_text()
    assert control_plane.server in text
    assert str(control_plane.work_dir) not in text  # embedded data, no paths
    assert control_plane.kubeconfig.stat().st_mode & 0o077 == 0
