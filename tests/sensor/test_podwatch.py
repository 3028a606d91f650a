"""The pod watch against a real kube-apiserver (with its controller manager): only this
node's pods are indexed, by UID and by container id, with their workload followed
through the ReplicaSet that a real Deployment controller created; without RBAC for
ReplicaSets the Deployment is derived from the names; a too-old resourceVersion is a
410 that ends in a relist; an event that races ahead of the watch is still enriched.

No kubelet runs here (the lead's e2e brings one): where kubelet would report a
container, the test writes `status.containerStatuses` itself through the status
subresource — a test-only stand-in for exactly the fields kubelet writes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator

import pytest
from kube_fixtures import token_client
from operator_harness import wait_for
from kubernetes import client

from falconer.sensor import listwatch, podwatch
from falconer.sensor.containers import Cgroup
from falconer.sensor.metadata import Metadata
from falconer.sensor.podwatch import PodWatch

CID = "5e" * 32
IMAGE_ID = "docker.io/library/busybox@sha256:" + "f" * 64
STARTED = dt.datetime(2026, 11, 30, 7, 0, 0, tzinfo=dt.timezone.utc)


def eventually(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    return wait_for(check, timeout=timeout_s, interval=0.1, what=what)


@pytest.fixture
def node(kube_client) -> Iterator[str]:
    """A Node object (no kubelet behind it), so the pod GC keeps pods bound to it."""
    core = client.CoreV1Api(kube_client)
    name = "enrich-" + uuid.uuid4().hex[:8]
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_node(name)


def _pod_spec(node: str) -> client.V1PodSpec:
    return client.V1PodSpec(
        node_name=node,
        containers=[client.V1Container(
            name="app", image="busybox:1.36",
            security_context=client.V1SecurityContext(privileged=True),
            volume_mounts=[
                client.V1VolumeMount(name="conf", mount_path="/etc/app", read_only=True),
                client.V1VolumeMount(name="modules", mount_path="/host/lib/modules",
                                     mount_propagation="HostToContainer"),
            ])],
        volumes=[
            client.V1Volume(name="conf", config_map=client.V1ConfigMapVolumeSource(name="c")),
            client.V1Volume(name="modules",
                            host_path=client.V1HostPathVolumeSource(path="/lib/modules")),
        ],
    )


def _deployment(kube_client, namespace: str, node: str, name: str = "web") -> None:
    client.AppsV1Api(kube_client).create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}), spec=_pod_spec(node)))))


def _bare_pod(kube_client, namespace: str, node: str, name: str) -> client.V1Pod:
    return client.CoreV1Api(kube_client).create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"role": "solo"}), spec=_pod_spec(node)))


def _the_pod(kube_client, namespace: str, app: str) -> client.V1Pod:
    core = client.CoreV1Api(kube_client)
    return eventually(lambda: next(iter(core.list_namespaced_pod(
        namespace, label_selector=f"app={app}").items), None), f"the {app} pod")


def _report_container(kube_client, pod: client.V1Pod, container_id: str) -> None:
    """Test-only stand-in for kubelet: the status kubelet writes once the runtime
    created the container."""
    client.CoreV1Api(kube_client).patch_namespaced_pod_status(
        pod.metadata.name, pod.metadata.namespace,
        {"status": {"phase": "Running", "podIP": "10.88.0.9",
                    "podIPs": [{"ip": "10.88.0.9"}],
                    "containerStatuses": [{
                        "name": "app", "containerID": f"containerd://{container_id}",
                        "image": "docker.io/library/busybox:1.36", "imageID": IMAGE_ID,
                        "ready": True, "restartCount": 0, "started": True,
                        "state": {"running": {"startedAt": STARTED.isoformat()}}}]}})


@pytest.fixture
def watches() -> Iterator[list[PodWatch]]:
    started: list[PodWatch] = []
    yield started
    for w in started:
        w.stop()


def _start(api, node: str, watches: list[PodWatch]) -> PodWatch:
    w = PodWatch(api, node)
    w.start()
    watches.append(w)
    assert w.wait_synced(20)
    return w


def test_the_watch_indexes_this_nodes_pods_with_their_workload(kube_client, kube_namespace,
                                                              node, watches):
    _deployment(kube_client, kube_namespace, node)
    solo = _bare_pod(kube_client, kube_namespace, node, "solo")
    elsewhere = _bare_pod(kube_client, kube_namespace, "another-node", "elsewhere")
    w = _start(kube_client, node, watches)
    web = _the_pod(kube_client, kube_namespace, "web")
    indexed = eventually(lambda: w.index.by_uid(web.metadata.uid), "the web pod in the index")
    assert indexed.workload == podwatch.Workload("Deployment", "web")
    assert indexed.containers == ()                          # no container reported yet

    _report_container(kube_client, web, CID)
    pod = eventually(lambda: w.index.by_container(CID), "the container in the index")
    assert (pod.namespace, pod.name, pod.uid, pod.node, pod.ip) == (
        kube_namespace, web.metadata.name, web.metadata.uid, node, "10.88.0.9")
    assert pod.label("app") == "web" and pod.label("pod-template-hash")
    [c] = pod.containers
    assert (c.id, c.name, c.image, c.image_repository, c.image_tag, c.image_digest) == (
        CID, "app", "docker.io/library/busybox:1.36", "docker.io/library/busybox", "1.36",
        "sha256:" + "f" * 64)
    assert c.privileged is True
    assert c.start_ts_ns == int(STARTED.timestamp()) * 1_000_000_000
    volumes = f"/var/lib/kubelet/pods/{web.metadata.uid}/volumes"
    mounts = [(m.source, m.dest, m.read_write, m.propagation) for m in c.mounts]
    assert mounts[:2] == [
        (f"{volumes}/kubernetes.io~configmap/conf", "/etc/app", False, "private"),
        ("/lib/modules", "/host/lib/modules", True, "rslave")]
    # the ServiceAccount token the admission plugin adds, as a projected volume
    [(token_source, token_dest, _, _)] = mounts[2:]
    assert token_source.startswith(f"{volumes}/kubernetes.io~projected/kube-api-access-")
    assert token_dest == "/var/run/secrets/kubernetes.io/serviceaccount"

    assert w.index.by_uid(solo.metadata.uid).workload == podwatch.Workload("Pod", "solo")
    assert w.index.by_uid(elsewhere.metadata.uid) is None    # another node's pod
    client.CoreV1Api(kube_client).delete_namespaced_pod("solo", kube_namespace,
                                                        grace_period_seconds=0)
    eventually(lambda: w.index.by_uid(solo.metadata.uid) is None, "solo to leave the index")
    assert w.stats.events >= 3 and w.stats.failures == 0


def test_a_job_pod_belongs_to_its_cronjob(kube_client, kube_namespace, node, watches):
    batch = client.BatchV1Api(kube_client)
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "nightly"}),
        spec=client.V1PodSpec(node_name=node, restart_policy="Never", containers=[
            client.V1Container(name="run", image="busybox:1.36")]))
    cron = batch.create_namespaced_cron_job(kube_namespace, client.V1CronJob(
        metadata=client.V1ObjectMeta(name="nightly"),
        spec=client.V1CronJobSpec(schedule="0 3 1 1 *", job_template=client.V1JobTemplateSpec(
            spec=client.V1JobSpec(template=template)))))
    # The Job the CronJob controller would create at 03:00, owned the same way.
    batch.create_namespaced_job(kube_namespace, client.V1Job(
        metadata=client.V1ObjectMeta(name="nightly-29000000", owner_references=[
            client.V1OwnerReference(api_version="batch/v1", kind="CronJob", name="nightly",
                                    uid=cron.metadata.uid, controller=True)]),
        spec=client.V1JobSpec(template=template)))
    w = _start(kube_client, node, watches)
    pod = _the_pod(kube_client, kube_namespace, "nightly")
    indexed = eventually(lambda: w.index.by_uid(pod.metadata.uid), "the job's pod")
    assert indexed.workload == podwatch.Workload("CronJob", "nightly")


def _pod_reader(kube_client, namespace: str) -> client.ApiClient:
    """A client whose identity may list and watch pods, and nothing else."""
    account, role = "podwatch", f"podwatch-{namespace}"
    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=role),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"],
                                   verbs=["list", "watch"])]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=role),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=role),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=account,
                                       namespace=namespace)]))
    return token_client(kube_client, namespace, account)


def test_without_rbac_for_replicasets_the_deployment_comes_from_the_names(
        kube_client, kube_namespace, node, watches):
    reader = _pod_reader(kube_client, kube_namespace)
    try:
        _deployment(kube_client, kube_namespace, node, name="api")
        w = _start(reader, node, watches)
        pod = _the_pod(kube_client, kube_namespace, "api")
        indexed = eventually(lambda: w.index.by_uid(pod.metadata.uid), "the api pod")
        assert indexed.workload == podwatch.Workload("Deployment", "api")
        assert "ReplicaSet" in w.workloads.forbidden and w.workloads.derived >= 1
    finally:
        rbac = client.RbacAuthorizationV1Api(kube_client)
        rbac.delete_cluster_role_binding(f"podwatch-{kube_namespace}")
        rbac.delete_cluster_role(f"podwatch-{kube_namespace}")
        reader.close()


def test_a_410_relists_and_the_loop_resyncs_periodically(kube_client, node, watches):
    # The API server's 410 Gone arrives as an ERROR watch event (or, with a client
    # timeout, as an ApiException 410): either ends the watch for a relist. On this
    # control plane a real 410 could not be provoked: kube-apiserver 1.34's watch cache
    # serves resourceVersion=1 even after an etcd compaction.
    w = PodWatch(kube_client, node)
    with pytest.raises(listwatch.Gone):
        w._apply({"type": "ERROR", "object": None,
                  "raw_object": {"code": 410, "reason": "Expired"}}, "5")
    resyncing = PodWatch(kube_client, node, resync_s=1.0)
    watches.append(resyncing)
    resyncing.start()
    eventually(lambda: resyncing.stats.lists >= 3, "periodic relists", timeout_s=15)
    assert resyncing.stats.failures == 0


def test_an_event_that_races_ahead_of_the_watch_is_still_enriched(kube_client, kube_namespace,
                                                                  node):
    """The pod and its container exist in the API, but the index has never seen them
    (the watch is behind): the lookup relists once and finds them; an unknown
    container is a counted miss, and does not relist again within MIN_RELIST_S."""
    solo = _bare_pod(kube_client, kube_namespace, node, "racer")
    _report_container(kube_client, solo, CID)
    w = PodWatch(kube_client, node)                          # never started
    meta = Metadata()
    meta.follow(w)
    pod, container = meta.lookup(Cgroup(CID, "cri", solo.metadata.uid))
    assert pod is not None and pod.name == "racer" and container is not None
    assert meta.stats.relists == 1 and meta.stats.misses == 0
    assert meta.lookup(Cgroup("0f" * 32, "cri", "")) == (None, None)
    assert meta.stats.misses == 1 and w.stats.lists == 1     # rate-limited: no second list
    assert "misses 1; pod watch: lists 1, 410 Gone 0, failures 0" in meta.report()
