"""The kubelet's part for one sensor pod on this host, for the all-in-one demo.

The local control plane has no kubelet, so the DaemonSet's pod for this host stays a
plain API object. This stand-in does what kubelet would do for that pod, and no more:

- it registers this host as a Node (Ready) and renews its Lease in `kube-node-lease`,
  so the node lifecycle controller keeps the node healthy and the DaemonSet controller
  places the sensor pod on it;
- it watches the instance's ConfigMap and projects it into a local folder exactly as a
  ConfigMap volume is updated (`configmap_volume`: atomic `..data` symlink swap), which
  is what the sensor's `--config` reload is built for;
- it reports the pod on this node Running and Ready while the sensor process runs, so the
  DaemonSet and the FalcoInstance show a ready sensor.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falconer.e2e import configmap_volume

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

#: How often the node Lease is renewed and the pod's status checked (kubelet: 10 s).
HEARTBEAT_S = 5.0
#: Server-side timeout of one ConfigMap watch (then resumed); bounds stop()'s wait.
WATCH_S = 2
#: What this node offers the scheduler: without `pods` capacity nothing is placed on it.
CAPACITY = {"cpu": str(os.cpu_count() or 1), "memory": "1Gi", "pods": "110"}
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40


def node_name() -> str:
    """This host's name as a valid Node name (lower-case DNS label characters)."""
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in raw).strip("-")
    return name or "localhost"


def _arch() -> str:
    """This machine's architecture in Go's (and so Kubernetes') spelling."""
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _os_image() -> str:
    """The distribution's name, as kubelet reports it (PRETTY_NAME of os-release)."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeletStandIn:
    """Node registration, ConfigMap projection and pod status for one instance."""

    def __init__(self, api: ApiClient, *, node: str, namespace: str, configmap: str,
                 pod_labels: dict[str, str], volume: Path, say: Callable[[str], None],
                 sensor_running: Callable[[], bool]) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.node = node
        self.namespace = namespace
        self.configmap = configmap
        self.pod_selector = ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items()))
        self.volume = volume
        self.say = say
        self.sensor_running = sensor_running
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- node ---------------------------------------------------------------------------

    def register_node(self) -> None:
        """Create (or refresh) this host's Node object and mark it Ready."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": _arch()}
        body = client.V1Node(metadata=client.V1ObjectMeta(name=self.node, labels=labels))
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._post_node_status()
        self._renew_lease()

    def _post_node_status(self) -> None:
        stamp = _stamp()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "falconer kubelet stand-in is posting status",
                 "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        self.core.patch_node_status(self.node, {"status": {
            "conditions": [ready],
            "capacity": CAPACITY, "allocatable": CAPACITY,
            "addresses": [{"type": "Hostname", "address": self.node},
                          {"type": "InternalIP", "address": "127.0.0.1"}],
            "nodeInfo": {"architecture": _arch(), "operatingSystem": "linux",
                         "kernelVersion": platform.release(), "osImage": _os_image(),
                         "kubeletVersion": "falconer-standin", "kubeProxyVersion": "",
                         "containerRuntimeVersion": "none://", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        }})

    def _renew_lease(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        now = _now()
        try:
            self.coordination.patch_namespaced_lease(self.node, LEASE_NAMESPACE, {"spec": {
                "holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
        except ApiException as exc:
            if exc.status != 404:
                raise
            spec = client.V1LeaseSpec(holder_identity=self.node,
                                      lease_duration_seconds=LEASE_SECONDS, renew_time=now)
            self.coordination.create_namespaced_lease(LEASE_NAMESPACE, client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.node), spec=spec))

    # -- ConfigMap volume -----------------------------------------------------------------

    def project_once(self) -> str | None:
        """Project the ConfigMap now if it exists: the list's resourceVersion (to watch
        from), or None when there is no such ConfigMap yet."""
        found = self.core.list_namespaced_config_map(
            self.namespace, field_selector=f"metadata.name={self.configmap}")
        if not found.items:
            return None
        self._project(found.items[0].data or {})
        return str(found.metadata.resource_version)

    def _project(self, data: dict[str, str]) -> None:
        if configmap_volume.write(self.volume, data):
            self.say(f"kubelet stand-in: ConfigMap {self.namespace}/{self.configmap} "
                     f"projected into {self.volume} ({len(data)} keys)")

    def _watch_configmap(self) -> None:
        """Follow the ConfigMap, resuming each short watch where the last one ended; an
        expired or failed watch starts again from a fresh read. A deleted ConfigMap
        leaves the last projection in place, as kubelet does."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self.project_once()
                w = watch.Watch()
                for event in w.stream(self.core.list_namespaced_config_map, self.namespace,
                                      field_selector=f"metadata.name={self.configmap}",
                                      resource_version=version, timeout_seconds=WATCH_S,
                                      _request_timeout=WATCH_S + 5):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._project(event["object"].data or {})
                    if self._stop.is_set():
                        w.stop()
                version = w.resource_version or version
            except (ApiException, HTTPError, OSError) as exc:
                version = None
                if not self._stop.is_set() and getattr(exc, "status", None) != 410:
                    self.say(f"kubelet stand-in: ConfigMap watch failed, retrying: {exc}")
                    self._stop.wait(1.0)

    # -- pod status -------------------------------------------------------------------------

    def _report_pods(self) -> None:
        """Mark the instance's pod on this node Running/Ready exactly while the sensor runs."""
        running = self.sensor_running()
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.pod_selector,
                                             field_selector=f"spec.nodeName={self.node}")
        for pod in pods.items:
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())
            if ready != running or pod.status.phase != "Running":
                self.core.patch_namespaced_pod_status(
                    pod.metadata.name, self.namespace, _pod_status(pod, running))

    def _heartbeat(self) -> None:
        from urllib3.exceptions import HTTPError

        from kubernetes.client.exceptions import ApiException

        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._renew_lease()
                self._report_pods()
            except (ApiException, HTTPError, OSError) as exc:
                self.say(f"kubelet stand-in: heartbeat failed: {exc}")

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ConfigMap watch and the heartbeat (daemon threads)."""
        for target in (self._watch_configmap, self._heartbeat):
            thread = threading.Thread(target=target, name=f"kubelet-standin-{target.__name__}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads (the watch ends within WATCH_S); report the pod not ready
        when the sensor is no longer running."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_S + 6)
        self._threads.clear()
        try:
            self._report_pods()
        except (ApiException, HTTPError, OSError) as exc:
            self.say(f"kubelet stand-in: could not report the pod stopped: {exc}")


def _pod_status(pod: Any, running: bool) -> dict[str, Any]:
    """The status kubelet would post for a one-container pod, running or not."""
    stamp = _stamp()
    flag = "True" if running else "False"
    containers = [{
        "name": c.name, "image": c.image, "imageID": "", "ready": running, "started": running,
        "restartCount": 0,
        "state": {"running": {"startedAt": stamp}} if running else
                 {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": stamp}},
    } for c in pod.spec.containers]
    return {"status": {
        "phase": "Running",  # a stopped sensor is a pod whose container is not ready
        "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "startTime": stamp if pod.status.start_time is None else pod.status.start_time.isoformat(),
        "conditions": [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in (
            ("PodScheduled", "True"), ("Initialized", "True"),
            ("ContainersReady", flag), ("Ready", flag))],
        "containerStatuses": containers,
    }}
