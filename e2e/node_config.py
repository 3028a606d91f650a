"""The configuration files of one node: containerd, the CNI network, kubelet, kube-proxy.

Pure rendering from a `NodeLayout` and a `NodeNetwork`; `falconer_e2e.node` writes them
and starts the processes. Every setting that departs from upstream's defaults says why;
the facts come from running them on this kind of machine (/work/shared/notes/kubelet.md).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The CNI plugins' folder in Debian's containernetworking-plugins.
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class NodeNetwork:
    """The node's addresses: pods get addresses from `pod_cidr` on `bridge`, whose first
    address `node_ip` is the pods' gateway, the kubelet's address (the Node's InternalIP)
    and the `kubernetes` Service's endpoint. Raises ValueError for a CIDR too small."""

    pod_cidr: str
    bridge: str
    cni_network: str

    def __post_init__(self) -> None:
        network = ipaddress.ip_network(self.pod_cidr)
        if network.version != 4 or network.num_addresses < 4:
            raise ValueError(f"pod CIDR {self.pod_cidr}: need an IPv4 network of 4+ addresses")
        if not 0 < len(self.bridge) <= 15:
            raise ValueError(f"bridge name {self.bridge!r}: 1 to 15 characters")

    @property
    def node_ip(self) -> str:
        """The first host address of the pod CIDR."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def prefix_length(self) -> int:
        """The pod CIDR's prefix length (the bridge address's netmask)."""
        return ipaddress.ip_network(self.pod_cidr).prefixlen


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps everything, all inside `work_dir` (see `layout`)."""

    work_dir: Path
    containerd_config: Path
    containerd_root: Path
    containerd_state: Path
    containerd_socket: Path
    cni_conf_dir: Path
    cni_ipam_dir: Path
    kubelet_config: Path
    kubelet_root: Path
    kubelet_kubeconfig: Path
    pod_logs: Path
    volume_plugins: Path
    kube_proxy_config: Path
    kube_proxy_kubeconfig: Path
    pki: Path
    logs: Path
    run: Path


def layout(work_dir: Path) -> NodeLayout:
    """The paths of a node whose work dir is `work_dir` (which may not exist yet)."""
    return NodeLayout(
        work_dir=work_dir,
        containerd_config=work_dir / "containerd" / "config.toml",
        containerd_root=work_dir / "containerd" / "root",
        containerd_state=work_dir / "containerd" / "state",
        containerd_socket=work_dir / "containerd" / "containerd.sock",
        cni_conf_dir=work_dir / "cni" / "net.d",
        cni_ipam_dir=work_dir / "cni" / "ipam",
        kubelet_config=work_dir / "kubelet" / "config.yaml",
        kubelet_root=work_dir / "kubelet" / "root",
        kubelet_kubeconfig=work_dir / "kubelet" / "kubeconfig",
        pod_logs=work_dir / "kubelet" / "pod-logs",
        volume_plugins=work_dir / "kubelet" / "volume-plugins",
        kube_proxy_config=work_dir / "kube-proxy" / "config.yaml",
        kube_proxy_kubeconfig=work_dir / "kube-proxy" / "kubeconfig",
        pki=work_dir / "pki",
        logs=work_dir / "logs",
        run=work_dir / "run",
    )


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(paths: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6's config.toml (version 2): everything under the work dir, the CRI
    plugin with runc v2 on cgroupfs, overlayfs, our CNI network and local sandbox image.

    `restrict_oom_score_adj`: without CAP_SYS_RESOURCE no process may lower its
    oom_score_adj, and runc fails to start the pause container (-998) otherwise.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f"root = {_toml_string(paths.containerd_root)}",
        f"state = {_toml_string(paths.containerd_state)}",
        "[grpc]",
        f"  address = {_toml_string(paths.containerd_socket)}",
        "[ttrpc]",
        f"  address = {_toml_string(paths.containerd_socket.with_suffix('.ttrpc'))}",
        "[metrics]",
        '  address = ""',
        f"[{cri}]",
        f"  sandbox_image = {_toml_string(sandbox_image)}",
        "  restrict_oom_score_adj = true",
        # The kubelet's CRI stream server stays on loopback (exec, attach, port-forward).
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
        # runc's state stays ours too (its default /run/containerd/runc is shared with
        # any other containerd on the host).
        f"  Root = {_toml_string(paths.containerd_state / 'runc')}",
        f"[{cri}.cni]",
        f"  bin_dir = {_toml_string(CNI_BIN_DIR)}",
        f"  conf_dir = {_toml_string(paths.cni_conf_dir)}",
        "  max_conf_num = 1",
        'plugins."io.containerd.internal.v1.opt".path = '
        + _toml_string(paths.containerd_root / "opt"),
        "",
    ])


def cni_conflist(network: NodeNetwork, paths: NodeLayout) -> dict[str, Any]:
    """The CNI network: a bridge (gateway = node IP) with host-local addresses whose
    allocations live in the work dir, and portmap for hostPort. The loopback plugin is
    added by containerd itself."""
    return {
        "cniVersion": "1.0.0",
        "name": network.cni_network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_cidr, "gateway": network.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: NodeLayout, network: NodeNetwork, *, port: int,
                   healthz_port: int, client_ca: Path, serving_cert: Path,
                   serving_key: Path) -> dict[str, Any]:
    """The KubeletConfiguration (kubelet.config.k8s.io/v1beta1).

    Serves HTTPS on `node_ip:port` with the CA-issued serving pair; authenticates clients
    by certificate (`client_ca`) or token (webhook) and authorizes them by
    SubjectAccessReview (webhook), so the API server's `logs`/`exec` are checked.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        # runc is configured for cgroupfs (no systemd here); both must agree.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.volume_plugins),
        # cadvisor cannot map this machine's root device: no ephemeral-storage accounting,
        # eviction or image GC (which would otherwise count as disk pressure).
        "localStorageCapacityIsolation": False,
        "evictionHard": {"memory.available": "100Mi"},
        "imageGCHighThresholdPercent": 100,
        # Without CAP_SYS_RESOURCE the kubelet cannot lower its own oom_score_adj.
        "oomScoreAdj": 0,
        "registerNode": True,
    }


def kube_proxy_config(paths: NodeLayout, network: NodeNetwork, *, node: str,
                      healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """The KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), iptables mode.

    NodePorts only on the node IP (never on this host's real interfaces, never on
    localhost, so route_localnet stays untouched); conntrack limits left as they are;
    oomScoreAdj 0 as for the kubelet.
    """
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(paths.kube_proxy_kubeconfig)},
        "hostnameOverride": node,
        "bindAddress": network.node_ip,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": network.pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{network.node_ip}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0, "min": 0,
            "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }
