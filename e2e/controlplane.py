"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler as child processes on loopback, without Docker.

The operator's tests and the all-in-one main job need a genuine API server (RBAC,
admission, garbage collection, the DaemonSet controller), not a fake. This module starts
the upstream binaries built by `tools/setup/30-controlplane.sh` (see
`falconer_e2e.binaries`) the way envtest does, plus the controller manager and the
scheduler so that owned objects are collected and workload controllers create Pods.

    with ControlPlane(work_dir) as cp:
        api = cp.api_client()          # kubernetes.client.ApiClient, admin identity
        subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "ns"])

Everything lives in the work dir: `pki/` (certificates and keys, reused on restart),
`etcd/` (the data), `logs/<component>.log`, `run/<component>.pid` and `admin.kubeconfig`.
Pods stay Pending until a node runs them: `falconer_e2e.node.Node` adds a real kubelet,
for which the API server is already configured (Node,RBAC authorization, NodeRestriction,
its own client certificate towards kubelets, which it verifies with the cluster CA).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from falconer_e2e import binaries, kubeconfig, pki, processes

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

#: The ServiceAccount token issuer: fixed (not port-dependent) so tokens survive restarts.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: The Service ClusterIP range; its first address is pki.KUBERNETES_SERVICE_IP. Only a
#: running node's kube-proxy routes it (see falconer_e2e.node).
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"

#: How long start() waits for everything to be ready before giving up.
DEFAULT_START_TIMEOUT = 120.0


class ControlPlaneError(RuntimeError):
    """The control plane failed to start; the message carries the failing log's tail."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports one control plane listens on."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that are free right now.

    The sockets are held open until all are chosen, so the kernel never hands out the
    same port twice; another program could still take one before we bind it, which the
    readiness wait then reports clearly.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ControlPlane:
    """Start/stop a local control plane; also a context manager.

    `work_dir=None` uses a fresh temporary folder that stop() removes; a given work dir is
    kept (logs, data and PKI survive, and a later start reuses them). `api_port` pins the
    API server's port (else a free one is chosen). After start(), `kubeconfig` is the
    admin kubeconfig (group system:masters) and `server` the API server's URL.
    """

    def __init__(self, work_dir: Path | str | None = None, *, api_port: int | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="falconer-cp-")).resolve()
        self.api_port = api_port
        self.start_timeout = start_timeout
        self.pki = pki.layout(self.work_dir / "pki")
        self.kubeconfig = self.work_dir / "admin.kubeconfig"
        self.server = ""
        self.ports: Ports | None = None
        self._children: list[processes.Child] = []

    # -- public API -------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start every component and return once the cluster is usable.

        "Usable" means: /readyz is ok, the controller manager and scheduler are healthy,
        and the `default` ServiceAccount of namespace `default` exists (so the controller
        manager's controllers run and Pods can be admitted). Raises ControlPlaneError
        (after stopping whatever started) or binaries.BinaryNotFound.
        """
        if self._children:
            raise ControlPlaneError("control plane already started")
        deadline = time.monotonic() + self.start_timeout
        try:
            located = {name: binaries.locate(name).path for name in
                       ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")}
            for folder in ("logs", "run"):
                (self.work_dir / folder).mkdir(parents=True, exist_ok=True)
            processes.end_leftovers(self.work_dir / "run", str(self.work_dir))
            self.pki = pki.ensure(self.work_dir / "pki")
            self.ports = self._choose_ports()
            self.server = f"https://127.0.0.1:{self.ports.apiserver}"
            self._write_kubeconfigs()
            self._start_etcd(located["etcd"], deadline)
            self._start_apiserver(located["kube-apiserver"], deadline)
            self._start_controllers(located["kube-controller-manager"],
                                    located["kube-scheduler"], deadline)
            self._wait_default_service_account(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component (newest first); idempotent, never leaves a process."""
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def api_client(self) -> ApiClient:
        """A kubernetes.client.ApiClient with the admin identity (imported lazily)."""
        from kubernetes import config

        api: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig))
        return api

    @property
    def components(self) -> list[processes.Child]:
        """The components' processes (etcd, kube-apiserver, kube-controller-manager,
        kube-scheduler), oldest first; for a `processes.Supervisor`."""
        return list(self._children)

    def stop_component(self, name: str) -> None:
        """Stop one component ("etcd", "kube-apiserver", ...) while the others keep
        running, to test clients through its outage; `start_component` brings it back."""
        self._child(name).stop()

    def start_component(self, name: str) -> None:
        """Start a stopped component again with the same flags and ports; returns once it
        is ready (etcd: /health, the API server: /readyz, the controllers: /healthz)."""
        child = self._child(name)
        child.start()
        url, expect = self._readiness(name)
        self._wait(child, url, expect, time.monotonic() + self.start_timeout)

    def stop_apiserver(self) -> None:
        """Stop only the API server (etcd and the controllers keep running)."""
        self.stop_component("kube-apiserver")

    def start_apiserver(self) -> None:
        """Start the stopped API server again; returns once /readyz is ok."""
        self.start_component("kube-apiserver")

    def _readiness(self, name: str) -> tuple[str, bytes]:
        """The URL that answers `expect` once component `name` is ready."""
        assert self.ports is not None
        return {
            "etcd": (f"http://127.0.0.1:{self.ports.etcd_client}/health", b'"health":"true"'),
            "kube-apiserver": (f"{self.server}/readyz", b"ok"),
            "kube-controller-manager": (f"https://127.0.0.1:{self.ports.controller_manager}/healthz", b"ok"),
            "kube-scheduler": (f"https://127.0.0.1:{self.ports.scheduler}/healthz", b"ok"),
        }[name]

    def _child(self, name: str) -> processes.Child:
        return next(c for c in self._children if c.name == name)

    def log(self, component: str) -> Path:
        """The log file of `component` ("etcd", "kube-apiserver", ...)."""
        return self.work_dir / "logs" / f"{component}.log"

    # -- set-up -----------------------------------------------------------------------

    def _choose_ports(self) -> Ports:
        etcd_client, etcd_peer, cm, sched, api = free_ports(5)
        return Ports(etcd_client, etcd_peer, self.api_port or api, cm, sched)

    def _write_kubeconfigs(self) -> None:
        """The admin kubeconfig, and one per controller with that controller's identity."""
        for path, client, identity in (
            (self.kubeconfig, self.pki.admin, pki.ADMIN),
            (self._component_kubeconfig("kube-controller-manager"),
             self.pki.controller_manager, pki.CONTROLLER_MANAGER),
            (self._component_kubeconfig("kube-scheduler"), self.pki.scheduler, pki.SCHEDULER),
        ):
            kubeconfig.write(path, server=self.server, ca_cert=self.pki.ca.cert,
                             client=client, user=identity[0])

    def _component_kubeconfig(self, component: str) -> Path:
        return self.work_dir / f"{component}.kubeconfig"

    def _spawn(self, name: str, argv: list[str]) -> processes.Child:
        child = processes.Child(name, argv, self.log(name), self.work_dir / "run" / f"{name}.pid")
        child.start()
        self._children.append(child)
        return child

    # -- components -------------------------------------------------------------------

    def _start_etcd(self, binary: Path, deadline: float) -> None:
        assert self.ports is not None
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        child = self._spawn("etcd", [
            str(binary),
            "--name=falconer",
            f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=falconer={peer}",
            # A throwaway test/demo cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])
        self._wait(child, *self._readiness("etcd"), deadline)

    def _start_apiserver(self, binary: Path, deadline: float) -> None:
        assert self.ports is not None
        p = self.pki
        child = self._spawn("kube-apiserver", [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={self.work_dir / 'apiserver-certs'}",
            f"--tls-cert-file={p.apiserver.cert}",
            f"--tls-private-key-file={p.apiserver.key}",
            f"--client-ca-file={p.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # Towards kubelets (logs, exec): our own identity, their serving certificates
            # checked against the cluster CA, reached at the address they register.
            f"--kubelet-client-certificate={p.apiserver_kubelet_client.cert}",
            f"--kubelet-client-key={p.apiserver_kubelet_client.key}",
            f"--kubelet-certificate-authority={p.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Loopback is not a valid endpoint address, so the API server cannot publish
            # the `kubernetes` Service's endpoints itself: a node publishes one its pods
            # can reach (falconer_e2e.node).
            "--endpoint-reconciler-type=none",
            # The aggregation layer's front proxy, so delegated authentication in the
            # controller manager and scheduler finds a complete configuration.
            f"--requestheader-client-ca-file={p.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT[0]}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.front_proxy_client.cert}",
            f"--proxy-client-key-file={p.front_proxy_client.key}",
        ])
        self._wait(child, *self._readiness("kube-apiserver"), deadline)

    def _start_controllers(self, manager: Path, scheduler: Path, deadline: float) -> None:
        assert self.ports is not None
        manager_config = self._component_kubeconfig("kube-controller-manager")
        scheduler_config = self._component_kubeconfig("kube-scheduler")
        cm = self._spawn("kube-controller-manager", [
            str(manager),
            *_delegation_flags(manager_config),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--cert-dir={self.work_dir / 'controller-manager-certs'}",
            "--leader-elect=false",
            # Every controller acts as its own ServiceAccount, as in a real cluster, so
            # RBAC sees the same identities; this needs the token signer and root CA.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca.cert}",
            f"--cluster-signing-cert-file={self.pki.ca.cert}",
            f"--cluster-signing-key-file={self.pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ])
        sched = self._spawn("kube-scheduler", [
            str(scheduler),
            *_delegation_flags(scheduler_config),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            f"--cert-dir={self.work_dir / 'scheduler-certs'}",
            "--leader-elect=false",
        ])
        self._wait(cm, *self._readiness("kube-controller-manager"), deadline)
        self._wait(sched, *self._readiness("kube-scheduler"), deadline)

    # -- readiness --------------------------------------------------------------------

    def _wait_default_service_account(self, deadline: float) -> None:
        """Wait for the controller manager to create default/default (its controllers run)."""
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        manager = next(c for c in self._children if c.name == "kube-controller-manager")
        self._wait(manager, url, b'"kind":"ServiceAccount"', deadline)

    def _wait(self, child: processes.Child, url: str, expect: bytes, deadline: float) -> None:
        """Poll `url` until its body contains `expect`; fail fast if `child` exits."""
        context = self._tls_context(url)
        while True:
            code = child.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"{child.name} exited with status {code} while waiting for {url}; "
                    f"last lines of {child.log}:\n{child.log_tail()}"
                )
            last = _probe(url, context, expect)
            if last is None:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{child.name} not ready within {self.start_timeout:.0f}s ({url}: {last}); "
                    f"last lines of {child.log}:\n{child.log_tail()}"
                )
            time.sleep(0.2)

    def _tls_context(self, url: str) -> ssl.SSLContext | None:
        """The client TLS context for a probe: admin identity for the API server; the
        controller manager and scheduler serve self-signed loopback certificates."""
        if not url.startswith("https://"):
            return None
        if self.server and url.startswith(self.server):
            context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
            context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
            return context
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


def _delegation_flags(config: Path) -> list[str]:
    """A controller's own identity, also used to delegate its endpoints' authn/authz."""
    return [
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
    ]


def _probe(url: str, context: ssl.SSLContext | None, expect: bytes) -> str | None:
    """GET `url` once: None when it answers 200 with `expect` in the body, else a short
    description of what it answered (for the timeout message)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as answer:
            body = answer.read(65536)
    except urllib.error.HTTPError as error:
        detail = error.read(2048).decode(errors="replace").strip()
        failing = [line for line in detail.splitlines() if line.startswith("[-]")]
        return f"HTTP {error.code}: {' '.join(failing) or detail[:200]}"
    except (OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    if expect in body:
        return None
    return f"unexpected answer: {body[:200].decode(errors='replace')}"

