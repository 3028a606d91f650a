"""A real Kubernetes node on this host: containerd (CRI) + runc + CNI bridge, kubelet and
kube-proxy, registered to a running `ControlPlane`.

    with ControlPlane(cp_dir) as cp, Node(cp, node_dir, sandbox_image=images.REFS["pause"],
                                          images=[images.build("pause"), ...]) as node:
        ...   # pods scheduled to node.name run for real; kubectl logs/exec work

What runs (all as children of this process, logs in `work_dir/logs/<component>.log`):

- containerd (Debian's, `tools/setup/40-node.sh`) with its own config, root, state and
  socket in the work dir; its CRI plugin runs pods with runc on cgroupfs and wires them to
  the CNI bridge `bridge` (host-local addresses from `pod_cidr`). The given OCI/Docker
  archives are imported into its `k8s.io` namespace; `sandbox_image` must be among them.
- kubelet v1.34 (built with the control plane), registered as `name` with a client
  certificate system:node:<name>/system:nodes from the cluster CA, serving HTTPS on the
  node IP with webhook authentication/authorization (the API server's logs/exec).
- kube-proxy in iptables mode, so Services, and in particular the `kubernetes` Service
  (KUBERNETES_SERVICE_HOST/PORT in every pod), work from pod and host network namespaces.

The node IP is the bridge's address (first address of `pod_cidr`). The API server only
listens on loopback, which pods cannot reach and which is no valid endpoint, so the node
relays node_ip:<api port> to it (`tcp_relay`) and publishes that as the `kubernetes`
Service's EndpointSlice; the API server's certificate names the Service IP.

The node changes its host (sysctls, iptables, cgroups, mounts; see `node_host`), so one
node at a time may run on a host; stop() undoes all of it, and start() first undoes what
a killed run left. Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from falconer_e2e import binaries, kubeconfig, node_config, node_host, pki, processes
from falconer_e2e.controlplane import ControlPlane, free_ports
from falconer_e2e.tcp_relay import RelayCounters, TcpRelay

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_NAME = "falconer-node"
DEFAULT_POD_CIDR = "10.244.0.0/24"
DEFAULT_BRIDGE = "falconer0"
CNI_NETWORK = "falconer"

#: How long start() waits for the node to be Ready (containerd, kubelet, kube-proxy).
DEFAULT_START_TIMEOUT = 180.0
#: How long start() waits for another node on this host to stop.
DEFAULT_LOCK_TIMEOUT = 120.0
#: Bound on removing all pods through the CRI at stop().
CRI_TEARDOWN_SECONDS = 120

#: Debian commands the node runs (tools/setup/40-node.sh installs them).
HOST_COMMANDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip",
                 "umount")

#: The API server's identity towards kubelets gets kubeadm's binding.
KUBELET_API_ADMIN_BINDING = "falconer:kube-apiserver-kubelet-client"
#: The `managed-by` label of the `kubernetes` Service's EndpointSlice this node publishes.
ENDPOINTSLICE_MANAGER = "node.falconer.io"


class NodeError(RuntimeError):
    """The node failed to start or to stop cleanly; the message says why (log tails)."""


def missing_prerequisites() -> list[str]:
    """Why a node cannot run here (root, binaries, Debian packages); empty when it can."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("a node needs root (cgroups, mounts, iptables, network devices)")
    for name in ("kubelet", "kube-proxy", "crictl"):
        try:
            binaries.locate(name)
        except binaries.BinaryNotFound as error:
            problems.append(str(error))
    problems += [f"{command} not found on PATH: run ./dev setup (tools/setup/40-node.sh)"
                 for command in HOST_COMMANDS if shutil.which(command) is None]
    return problems


class Node:
    """Start/stop one node of `control_plane`; also a context manager.

    `work_dir=None` uses a temporary folder that stop() removes; a given one is kept
    (logs, image store), and a later start reuses its images. After start(), `name`
    is Ready and `network.node_ip` is its InternalIP.
    """

    def __init__(self, control_plane: ControlPlane, work_dir: Path | str | None = None, *,
                 sandbox_image: str, images: Sequence[Path] = (), name: str = DEFAULT_NAME,
                 pod_cidr: str = DEFAULT_POD_CIDR, bridge: str = DEFAULT_BRIDGE,
                 start_timeout: float = DEFAULT_START_TIMEOUT,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.control_plane = control_plane
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="falconer-node-")).resolve()
        self.paths = node_config.layout(self.work_dir)
        self.network = node_config.NodeNetwork(pod_cidr, bridge, CNI_NETWORK)
        self.name = name
        self.sandbox_image = sandbox_image
        self.images = list(images)
        self.start_timeout = start_timeout
        self.lock_timeout = lock_timeout
        self._lock = node_host.HostLock()
        self._state: node_host.HostState | None = None
        self._children: dict[str, processes.Child] = {}
        self._relay: TcpRelay | None = None
        self._kube_proxy_healthz = 0

    # -- public API -------------------------------------------------------------------

    def start(self) -> Node:
        """Start containerd, kube-proxy and the kubelet; return once the Node is Ready,
        untainted, and kube-proxy has synced its rules.

        Raises NodeError (after undoing whatever started), binaries.BinaryNotFound, or
        node_host.HostBusy when another node holds this host past `lock_timeout`.
        """
        if self._children:
            raise NodeError("node already started")
        problems = missing_prerequisites()
        if problems:
            raise NodeError("; ".join(problems))
        deadline = time.monotonic() + self.start_timeout
        self._lock.acquire(self.work_dir, self.lock_timeout)
        try:
            self._take_host()
            self._write_files()
            self._create_bridge()
            self._start_containerd(deadline)
            for archive in self.images:
                self.import_image(archive)
            self._require_image(self.sandbox_image)
            self._publish_api_endpoint()
            self._start_kube_proxy()
            self._start_kubelet()
            self._wait_ready(deadline)
        except BaseException:
            self._teardown()
            raise
        return self

    def stop(self) -> None:
        """Stop everything and undo every host change; idempotent. Raises NodeError when
        something could not be undone (it is retried at the next start)."""
        problems = self._teardown()
        if problems:
            raise NodeError("the node's teardown left: " + "; ".join(problems))

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def relay_counters(self) -> RelayCounters | None:
        """What the `kubernetes` Service's relay did (None when not running): relayed
        connections and those lost because the API server refused them."""
        return None if self._relay is None else self._relay.counters

    @property
    def components(self) -> list[processes.Child]:
        """The node's processes (containerd, kube-proxy, kubelet); for a
        `processes.Supervisor`."""
        return list(self._children.values())

    def running(self) -> bool:
        """Whether start() succeeded and stop() has not been called since."""
        return bool(self._children)

    def log(self, component: str) -> Path:
        """The log file of "containerd", "kubelet" or "kube-proxy"."""
        return self.paths.logs / f"{component}.log"

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI or Docker image archive into the CRI's image store; returns the
        image references now known to the runtime. Raises NodeError when ctr fails."""
        self._ctr("images", "import", str(archive))
        return self.image_refs()

    def image_refs(self) -> list[str]:
        """The image references in the CRI's store (containerd namespace k8s.io)."""
        return self._ctr("images", "list", "--quiet").split()

    def crictl(self, *args: str, timeout: float = 60.0) -> str:
        """Run crictl against this node's runtime; its stdout. NodeError on failure."""
        crictl = binaries.locate("crictl").path
        endpoint = f"unix://{self.paths.containerd_socket}"
        return _run([str(crictl), "--runtime-endpoint", endpoint, "--image-endpoint",
                     endpoint, "--timeout", f"{int(timeout)}s", *args], timeout=timeout + 10)

    # -- start ------------------------------------------------------------------------

    def _take_host(self) -> None:
        """Undo a killed run's leftovers, then record the host before changing it."""
        previous = node_host.load()
        if previous is not None:
            left = node_host.sweep(previous)
            if left:
                raise NodeError("leftovers of a previous node remain: " + "; ".join(left))
            node_host.forget()
        self._state = node_host.snapshot(self.work_dir, self.network.bridge,
                                         self.network.cni_network)
        node_host.save(self._state)

    def _write_files(self) -> None:
        p = self.paths
        for folder in (p.logs, p.run, p.containerd_root, p.containerd_state, p.cni_conf_dir,
                       p.cni_ipam_dir, p.kubelet_root, p.pod_logs, p.volume_plugins,
                       p.kube_proxy_config.parent):
            folder.mkdir(parents=True, exist_ok=True)
        # Addresses handed out by a previous run belong to pods that no longer exist.
        shutil.rmtree(p.cni_ipam_dir, ignore_errors=True)
        cp = self.control_plane
        certs = pki.issue_node(cp.pki, p.pki, self.name, self.network.node_ip)
        kubeconfig.write(p.kubelet_kubeconfig, server=cp.server, ca_cert=cp.pki.ca.cert,
                         client=certs.kubelet_client, user=pki.node_identity(self.name)[0])
        kubeconfig.write(p.kube_proxy_kubeconfig, server=cp.server, ca_cert=cp.pki.ca.cert,
                         client=certs.kube_proxy, user=pki.KUBE_PROXY[0])
        p.containerd_config.write_text(node_config.containerd_config(p, self.sandbox_image))
        (p.cni_conf_dir / "10-falconer.conflist").write_text(
            json.dumps(node_config.cni_conflist(self.network, p), indent=1))
        kubelet_port, kubelet_healthz, proxy_healthz, proxy_metrics = free_ports(4)
        self._kube_proxy_healthz = proxy_healthz
        _write_yaml(p.kubelet_config, node_config.kubelet_config(
            p, self.network, port=kubelet_port, healthz_port=kubelet_healthz,
            client_ca=cp.pki.ca.cert, serving_cert=certs.kubelet_serving.cert,
            serving_key=certs.kubelet_serving.key))
        _write_yaml(p.kube_proxy_config, node_config.kube_proxy_config(
            p, self.network, node=self.name, healthz_port=proxy_healthz,
            metrics_port=proxy_metrics))

    def _create_bridge(self) -> None:
        """The CNI bridge, made before any pod so the node IP exists from the start (the
        bridge plugin adopts it and its gateway address)."""
        bridge = self.network.bridge
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.network.node_ip}/{self.network.prefix_length}",
              "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])

    def _spawn(self, name: str, argv: list[str]) -> processes.Child:
        child = processes.Child(name, argv, self.log(name), self.paths.run / f"{name}.pid")
        child.start()
        self._children[name] = child
        return child

    def _start_containerd(self, deadline: float) -> None:
        child = self._spawn("containerd", [
            shutil.which("containerd") or "containerd",
            f"--config={self.paths.containerd_config}",
        ])
        while True:
            self._check_alive(child)
            try:
                self._ctr("version")
                return
            except NodeError as error:
                if time.monotonic() > deadline:
                    raise NodeError(f"containerd not ready: {error}; last lines of "
                                    f"{child.log}:\n{child.log_tail()}") from None
            time.sleep(0.2)

    def _require_image(self, ref: str) -> None:
        refs = self.image_refs()
        if ref not in refs:
            raise NodeError(f"image {ref} is not in the node's image store (imported: "
                            f"{', '.join(refs) or 'nothing'}); pass its archive in images")

    def _publish_api_endpoint(self) -> None:
        """Relay node_ip:<api port> to the API server and publish it as the `kubernetes`
        Service's endpoint; let the API server use kubelets' API (logs, exec)."""
        from kubernetes import client

        assert self.control_plane.ports is not None
        port = self.control_plane.ports.apiserver
        self._relay = TcpRelay((self.network.node_ip, port), ("127.0.0.1", port))
        self._relay.start()
        with self.control_plane.api_client() as api:
            _apply(client.RbacAuthorizationV1Api(api).create_cluster_role_binding,
                   client.V1ClusterRoleBinding(
                       metadata=client.V1ObjectMeta(name=KUBELET_API_ADMIN_BINDING),
                       role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io",
                                                 kind="ClusterRole",
                                                 name="system:kubelet-api-admin"),
                       subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io",
                                                      kind="User",
                                                      name=pki.APISERVER_KUBELET_CLIENT[0])],
                   ))
            discovery = client.DiscoveryV1Api(api)
            _delete(discovery.delete_namespaced_endpoint_slice, "kubernetes", "default")
            discovery.create_namespaced_endpoint_slice("default", client.V1EndpointSlice(
                metadata=client.V1ObjectMeta(name="kubernetes", labels={
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
                }),
                address_type="IPv4",
                endpoints=[client.V1Endpoint(addresses=[self.network.node_ip],
                                             conditions=client.V1EndpointConditions(ready=True),
                                             node_name=self.name)],
                ports=[client.DiscoveryV1EndpointPort(name="https", port=port,
                                                      protocol="TCP")],
            ))

    def _start_kube_proxy(self) -> None:
        self._spawn("kube-proxy", [
            str(binaries.locate("kube-proxy").path),
            f"--config={self.paths.kube_proxy_config}",
        ])

    def _start_kubelet(self) -> None:
        p = self.paths
        self._spawn("kubelet", [
            str(binaries.locate("kubelet").path),
            f"--config={p.kubelet_config}",
            f"--kubeconfig={p.kubelet_kubeconfig}",
            f"--root-dir={p.kubelet_root}",
            f"--cert-dir={p.pki}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.node_ip}",
        ])

    def _wait_ready(self, deadline: float) -> None:
        """Until the Node is Ready without taints and kube-proxy reports healthy."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        healthz = f"http://127.0.0.1:{self._kube_proxy_healthz}/healthz"
        with self.control_plane.api_client() as api:
            core = client.CoreV1Api(api)
            while True:
                for child in self._children.values():
                    self._check_alive(child)
                try:
                    why = _not_ready(core.read_node(self.name)) or _unhealthy(healthz)
                except ApiException as error:
                    why = f"Node {self.name}: HTTP {error.status}"
                if why is None:
                    return
                if time.monotonic() > deadline:
                    kubelet = self._children["kubelet"]
                    raise NodeError(f"node not ready within {self.start_timeout:.0f}s: {why}; "
                                    f"last lines of {kubelet.log}:\n{kubelet.log_tail()}")
                time.sleep(0.5)

    def _check_alive(self, child: processes.Child) -> None:
        code = child.exit_code()
        if code is not None:
            raise NodeError(f"{child.name} exited with status {code}; last lines of "
                            f"{child.log}:\n{child.log_tail()}")

    def _ctr(self, *args: str) -> str:
        return _run(["ctr", "--address", str(self.paths.containerd_socket),
                     "--namespace", "k8s.io", *args], timeout=300)

    # -- stop -------------------------------------------------------------------------

    def _teardown(self) -> list[str]:
        """Stop, remove pods, forget the node in the API, sweep the host; the problems
        that remain (empty when all is undone)."""
        problems: list[str] = []
        for name in ("kubelet", "kube-proxy"):
            child = self._children.pop(name, None)
            if child is not None:
                child.stop()
        containerd = self._children.pop("containerd", None)
        if containerd is not None:
            if containerd.running():
                try:
                    # Stops and removes every pod through the CRI, which also runs the
                    # CNI DEL (addresses, veths, portmap rules) and unmounts the rootfs.
                    self.crictl("rmp", "--all", "--force", timeout=CRI_TEARDOWN_SECONDS)
                except NodeError as error:
                    problems.append(str(error))
            containerd.stop()
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        problems += self._forget_in_api()
        if self._state is not None:
            left = node_host.sweep(self._state)
            if not left:
                node_host.forget()
            problems += left
            self._state = None
        self._lock.release()
        if self._owns_work_dir and not problems:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return problems

    def _forget_in_api(self) -> list[str]:
        """Remove what this node published: its Node, the pods bound to it (they ran
        here and are gone), the `kubernetes` endpoint. A stopped API server is fine."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self._state is None or self.control_plane.ports is None:
            return []
        try:
            with self.control_plane.api_client() as api:
                core = client.CoreV1Api(api)
                pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}")
                for pod in pods.items:
                    meta = pod.metadata
                    assert meta is not None
                    _delete(core.delete_namespaced_pod, meta.name, meta.namespace,
                            grace_period_seconds=0)
                _delete(core.delete_node, self.name)
                _delete(client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice,
                        "kubernetes", "default")
        except HTTPError:
            return []  # the control plane is already gone, and with it these objects
        except ApiException as error:
            return [f"cannot remove node {self.name} from the API: HTTP {error.status}"]
        return []


def _run(argv: list[str], *, timeout: float = 60.0) -> str:
    """Run a command; its stdout, or NodeError with its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NodeError(f"{' '.join(argv[:4])}...: {error}") from None
    if done.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def _write_yaml(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _apply(create: Any, body: Any) -> None:
    """Create a cluster-scoped object unless it exists."""
    from kubernetes.client.exceptions import ApiException

    try:
        create(body)
    except ApiException as error:
        if error.status != 409:
            raise


def _delete(delete: Any, *args: Any, **kwargs: Any) -> None:
    """Delete an object unless it is already gone."""
    from kubernetes.client.exceptions import ApiException

    try:
        delete(*args, **kwargs)
    except ApiException as error:
        if error.status != 404:
            raise


def _not_ready(node: Any) -> str | None:
    """None when the Node is Ready and untainted, else what is missing."""
    ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
    if ready is None or ready.status != "True":
        return f"Node Ready={ready.status if ready else 'absent'} ({ready.message if ready else ''})"
    taints = [t.key for t in node.spec.taints or []]
    return f"Node tainted {taints}" if taints else None


def _unhealthy(url: str) -> str | None:
    """None when kube-proxy's healthz answers 200, else its answer."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            answer.read()
        return None
    except urllib.error.HTTPError as error:
        return f"kube-proxy healthz: HTTP {error.code}"
    except OSError as error:
        return f"kube-proxy healthz: {error}"
