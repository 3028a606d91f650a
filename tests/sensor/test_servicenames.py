"""Service names for fd.*ip.name, from a real API server, as the sensor's own account.

The watch runs with the kubeconfig of a sensor ServiceAccount bound to the shipped
`falconer-sensor` ClusterRole (`sensor_identity`), so these tests also prove that the
role's `services` list/watch grant suffices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from operator_harness import wait_for
from kubernetes import client
from sensor_identity import sensor_identity

from falconer.sensor import kube
from falconer.sensor.names import AddressNames
from falconer.sensor.servicenames import ServiceNames

INSTANCE = "names"


def eventually(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    return wait_for(check, timeout=timeout_s, interval=0.1, what=what)


@pytest.fixture
def sensor_api(control_plane, kube_namespace, tmp_path) -> Iterator[object]:
    config = sensor_identity(Path(control_plane.kubeconfig), kube_namespace, INSTANCE, tmp_path)
    api = kube.api_client(config)
    yield api
    api.close()


@pytest.fixture
def watches() -> Iterator[list[ServiceNames]]:
    started: list[ServiceNames] = []
    yield started
    for w in started:
        w.stop()


def _start(api: object, watches: list[ServiceNames], domain: str = "cluster.local") -> ServiceNames:
    w = ServiceNames(api, domain)
    watches.append(w)
    w.start()
    assert w.wait_synced(30.0), f"no first list of Services: {w.stats}"
    return w


def test_the_kubernetes_service_clusterip_is_named_like_cluster_dns(kube_client, sensor_api, watches):
    api_service = client.CoreV1Api(kube_client).read_namespaced_service("kubernetes", "default")
    ip = api_service.spec.cluster_ip
    w = _start(sensor_api, watches)
    assert w.addresses[ip] == "kubernetes.default.svc.cluster.local"
    table = AddressNames()
    table.services = w
    assert table.names(ip) == "kubernetes.default.svc.cluster.local"
    assert w.stats.failures == 0


def test_services_come_and_go_with_the_watch_in_the_configured_domain(kube_client, kube_namespace,
                                                                       sensor_api, watches):
    core = client.CoreV1Api(kube_client)
    w = _start(sensor_api, watches, domain="corp.example")
    port = [client.V1ServicePort(port=80)]
    db = core.create_namespaced_service(kube_namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="db"),
        spec=client.V1ServiceSpec(ports=port, selector={"app": "db"})))
    core.create_namespaced_service(kube_namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="peers"),
        spec=client.V1ServiceSpec(ports=port, cluster_ip="None", selector={"app": "db"})))
    ip = db.spec.cluster_ip
    name = f"db.{kube_namespace}.svc.corp.example"
    eventually(lambda: w.addresses.get(ip) == name, "the new Service's name")
    assert not any(n.startswith(f"peers.{kube_namespace}.") for n in w.addresses.values())
    assert w.stats.events >= 1   # seen by the watch, not a relist
    core.delete_namespaced_service("db", kube_namespace)
    eventually(lambda: ip not in w.addresses, "the deleted Service gone")
