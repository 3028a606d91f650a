"""A registered Node that looks alive to the control plane, without a kubelet behind it.

A Node that never reports is marked `Ready=Unknown` by the node lifecycle controller
after its startup grace period (about 60 s here) and tainted
`node.kubernetes.io/unreachable:NoSchedule`; a DaemonSet created after that does not
schedule on it (`desiredNumberScheduled` 0), since DaemonSet Pods tolerate only the
NoExecute form of that taint (Kubernetes docs: "Taints and Tolerations", "DaemonSet").
`FakeNode` therefore does what a kubelet does to stay Ready: it posts a Ready condition
and renews the Node's Lease in `kube-node-lease` every `HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

#: How often the Lease is renewed and the status posted (the kubelet's default is 10 s).
HEARTBEAT_SECONDS = 10.0
#: The Lease's duration (the kubelet's default is 40 s).
LEASE_SECONDS = 40
LEASE_NAMESPACE = "kube-node-lease"
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeNode:
    """`start()` registers the Node and its heartbeat thread; `stop()` ends both."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.name = name
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{name}", daemon=True)

    def start(self) -> None:
        """Create the Node (labelled with its hostname), report it Ready, keep it so."""
        self._core.create_node({"apiVersion": "v1", "kind": "Node",
                                "metadata": {"name": self.name, "labels": {"kubernetes.io/os": "linux",
                                                                           "kubernetes.io/hostname": self.name}}})
        self._report()
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat, then delete the Node and its Lease."""
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS + 5)
        self._core.delete_node(self.name)
        try:
            self._coordination.delete_namespaced_lease(self.name, LEASE_NAMESPACE)
        except ApiException as error:
            if error.status != 404:
                raise

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._report()
            except (ApiException, HTTPError):
                continue  # an API error or an unreachable API server: the next beat retries, as a kubelet does

    def _report(self) -> None:
        now = _now()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "heartbeat of a test Node",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
        self._core.patch_node_status(self.name, {"status": {"capacity": CAPACITY, "allocatable": CAPACITY,
                                                            "conditions": [ready]}})
        self._renew_lease(now)

    def _renew_lease(self, now: str) -> None:
        lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                                          "renewTime": now}}
        try:
            self._coordination.patch_namespaced_lease(self.name, LEASE_NAMESPACE, lease)
        except ApiException as error:
            if error.status != 404:
                raise
            self._coordination.create_namespaced_lease(LEASE_NAMESPACE, lease)
