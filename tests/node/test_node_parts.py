"""The node's parts that need no root: configuration rendering, node certificates, the
TCP relay (real sockets on loopback), the host lock and the crictl pin."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from falconer.paths import ROOT
from falconer_e2e import binaries, node_config, node_host, pki
from falconer_e2e.controlplane import SERVICE_CLUSTER_IP_RANGE, free_ports
from falconer_e2e.tcp_relay import TcpRelay


def test_node_ip_is_the_first_pod_address() -> None:
    network = node_config.NodeNetwork("10.250.3.0/24", "br-x", "net-x")
    assert (network.node_ip, network.prefix_length) == ("10.250.3.1", 24)


@pytest.mark.parametrize("cidr,bridge", [
    ("10.0.0.0/31", "br0"), ("fd00::/64", "br0"), ("10.0.0.0/24", "a-bridge-name-too-long"),
    ("10.0.0.0/24", ""),
])
def test_bad_networks_are_refused(cidr: str, bridge: str) -> None:
    with pytest.raises(ValueError):
        node_config.NodeNetwork(cidr, bridge, "net")


def test_containerd_config_keeps_everything_in_the_work_dir(tmp_path: Path) -> None:
    paths = node_config.layout(tmp_path)
    config = tomllib.loads(node_config.containerd_config(paths, "falconer.local/pause:3.10"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "falconer.local/pause:3.10"
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)
    paths_in_config = [config["root"], config["state"], config["grpc"]["address"],
                       config["ttrpc"]["address"], runc["options"]["Root"]]
    assert all(Path(p).is_relative_to(tmp_path) for p in paths_in_config)


def test_cni_network_hands_out_pod_addresses_behind_the_node_ip(tmp_path: Path) -> None:
    network = node_config.NodeNetwork("10.250.3.0/24", "br-x", "net-x")
    conflist = node_config.cni_conflist(network, node_config.layout(tmp_path))
    bridge = conflist["plugins"][0]
    assert (conflist["name"], bridge["bridge"], bridge["isGateway"]) == ("net-x", "br-x", True)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.250.3.0/24", "gateway": "10.250.3.1"}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(tmp_path)


def test_kubelet_serves_with_webhook_authn_and_authz_on_the_node_ip(tmp_path: Path) -> None:
    network = node_config.NodeNetwork("10.250.3.0/24", "br-x", "net-x")
    config = node_config.kubelet_config(
        node_config.layout(tmp_path), network, port=1, healthz_port=2,
        client_ca=tmp_path / "ca.crt", serving_cert=tmp_path / "s.crt",
        serving_key=tmp_path / "s.key")
    assert (config["address"], config["readOnlyPort"]) == ("10.250.3.1", 0)
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["webhook"]["enabled"] is True
    assert config["authorization"]["mode"] == "Webhook"
    assert config["cgroupDriver"] == "cgroupfs"


def test_service_ip_is_the_first_address_of_the_service_range() -> None:
    first = next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts())
    assert str(first) == pki.KUBERNETES_SERVICE_IP
    assert pki.KUBERNETES_SERVICE_IP in pki.SERVING_IPS


def test_node_certificates_carry_the_node_identity(tmp_path: Path) -> None:
    cluster = pki.ensure(tmp_path / "cluster")
    certs = pki.issue_node(cluster, tmp_path / "node", "worker-1", "10.250.3.1")
    ca = x509.load_pem_x509_certificate(cluster.ca.cert.read_bytes())
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)

    def load(pair: pki.KeyPair) -> x509.Certificate:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        assert cert.issuer == ca.subject and cert.signature_hash_algorithm is not None
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes,
                      ec.ECDSA(cert.signature_hash_algorithm))  # raises when forged
        return cert

    client = load(certs.kubelet_client)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:node:worker-1"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"
    serving = load(certs.kubelet_serving)
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["worker-1"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.250.3.1")]
    proxy = load(certs.kube_proxy)
    assert proxy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:kube-proxy"


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A loopback server that echoes upper-cased bytes until the client half-closes,
    then says "bye"; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())
                conn.sendall(b"bye")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    server.close()


def test_relay_pipes_both_ways_and_passes_half_closes(echo_server: int) -> None:
    (listen,) = free_ports(1)
    relay = TcpRelay(("127.0.0.1", listen), ("127.0.0.1", echo_server))
    relay.start()
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as conn:
            conn.sendall(b"hello ")
            conn.sendall(b"relay")
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(1024):
                received += chunk
        assert received == b"HELLO RELAYbye"
        assert (relay.counters.relayed, relay.counters.target_failures) == (1, 0)
    finally:
        relay.stop()


def test_relay_counts_connections_the_target_refuses() -> None:
    listen, closed = free_ports(2)
    relay = TcpRelay(("127.0.0.1", listen), ("127.0.0.1", closed))
    relay.start()
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as conn:
            assert conn.recv(1024) == b""  # closed on us
        assert (relay.counters.relayed, relay.counters.target_failures) == (0, 1)
    finally:
        relay.stop()


def test_a_second_node_waits_then_names_the_first(tmp_path: Path) -> None:
    first, second = node_host.HostLock(tmp_path), node_host.HostLock(tmp_path)
    first.acquire(Path("/work/first"), timeout=0)
    try:
        with pytest.raises(node_host.HostBusy, match="/work/first"):
            second.acquire(Path("/work/second"), timeout=0.2)
    finally:
        first.release()
    second.acquire(Path("/work/second"), timeout=0)
    second.release()


def test_host_state_survives_a_restart(tmp_path: Path) -> None:
    state = node_host.snapshot(Path("/work/n"), "br-x", "net-x")
    assert state.sysctls  # at least vm/overcommit_memory exists everywhere
    node_host.save(state, tmp_path)
    assert node_host.load(tmp_path) == state
    node_host.forget(tmp_path)
    assert node_host.load(tmp_path) is None


def test_crictl_pin_matches_the_setup_step() -> None:
    script = (ROOT / "tools" / "setup" / "40-node.sh").read_text()
    pinned = re.search(r"^CRICTL_VERSION=(\S+)$", script, re.M)
    assert pinned and pinned.group(1) == binaries.CRICTL_VERSION
