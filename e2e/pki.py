"""The certificates and keys of a local control plane, made the way envtest makes them.

Kubernetes authenticates every component by client certificate: the user name is the
certificate's CN and the groups are its O values, so the admin certificate carries
O=system:masters (RBAC's superuser group) and each controller its own identity, which
the API server's bootstrap RBAC roles already grant exactly what it needs. ECDSA P-256
keys keep generation instant; every part of Kubernetes accepts them, including the
service-account token signer (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Long enough for a long-lived demo cluster, short enough to look like a real PKI.
VALIDITY = datetime.timedelta(days=365)

#: The `kubernetes` Service's ClusterIP: the first address of the control plane's Service
#: range (controlplane.SERVICE_CLUSTER_IP_RANGE), where in-cluster clients connect
#: (KUBERNETES_SERVICE_HOST) and which they verify against the cluster CA.
KUBERNETES_SERVICE_IP = "10.96.0.1"

#: Names the API server answers to on this machine and, through kube-proxy, in pods.
SERVING_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
SERVING_IPS = ("127.0.0.1", "::1", KUBERNETES_SERVICE_IP)

#: The identities the control-plane components authenticate as (user, groups).
ADMIN = ("falconer-admin", ("system:masters",))
CONTROLLER_MANAGER = ("system:kube-controller-manager", ())
SCHEDULER = ("system:kube-scheduler", ())
FRONT_PROXY_CLIENT = ("front-proxy-client", ())
#: The API server's identity towards kubelets (logs, exec, port-forward); the node
#: harness binds it to the ClusterRole system:kubelet-api-admin, as kubeadm does.
APISERVER_KUBELET_CLIENT = ("kube-apiserver-kubelet-client", ())
#: kube-proxy's identity: bootstrap RBAC binds system:node-proxier to this user.
KUBE_PROXY = ("system:kube-proxy", ())


def node_identity(node: str) -> tuple[str, tuple[str, ...]]:
    """A kubelet's identity as the Node authorizer and NodeRestriction expect it."""
    return (f"system:node:{node}", ("system:nodes",))


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key, on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file the control plane needs, all inside one folder."""

    ca: KeyPair
    front_proxy_ca: KeyPair
    apiserver: KeyPair
    front_proxy_client: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    apiserver_kubelet_client: KeyPair
    service_account_key: Path
    service_account_pub: Path


@dataclass(frozen=True)
class NodePki:
    """One node's certificates, issued by the cluster CA (see `issue_node`)."""

    kubelet_client: KeyPair
    kubelet_serving: KeyPair
    kube_proxy: KeyPair


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (see the module docstring for why ECDSA)."""
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write a private key readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    """Write a certificate as PEM (public: default permissions)."""
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             ) -> x509.CertificateBuilder:
    """A certificate builder with the fields every certificate here shares."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so a clock a few seconds behind still accepts it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signing only: a CA signs certificates and CRLs, a leaf signs its TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _write_pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, folder: Path,
                stem: str) -> None:
    """Write <stem>.key (owner-only) and <stem>.crt, the names `layout` expects."""
    _write_key(key, folder / f"{stem}.key")
    _write_cert(cert, folder / f"{stem}.crt")


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    """A subject whose CN is the Kubernetes user and whose O values are its groups."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _make_ca(common_name: str, folder: Path, stem: str,
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate authority, written as <stem>.crt/<stem>.key."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(key, cert, folder, stem)
    return key, cert


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, folder: Path,
           stem: str, identity: tuple[str, tuple[str, ...]], *,
           serving: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> None:
    """A leaf certificate signed by the CA: a client identity, or, given `serving`
    (DNS names, IP addresses), a server certificate for those names."""
    key = _new_key()
    common_name, organizations = identity
    usage = [ExtendedKeyUsageOID.SERVER_AUTH if serving else ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        _builder(_name(common_name, organizations), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if serving:
        dns_names, ips = serving
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write_pair(key, builder.sign(ca_key, hashes.SHA256()), folder, stem)


def _service_account_keys(folder: Path) -> None:
    """The key pair that signs (private) and verifies (public) ServiceAccount tokens."""
    key = _new_key()
    private, public = folder / "sa.key", folder / "sa.pub"
    _write_key(key, private)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def layout(folder: Path) -> Pki:
    """The file names of a PKI in `folder` (whether or not they exist yet)."""
    def pair(stem: str) -> KeyPair:
        return KeyPair(folder / f"{stem}.crt", folder / f"{stem}.key")

    return Pki(
        ca=pair("ca"),
        front_proxy_ca=pair("front-proxy-ca"),
        apiserver=pair("apiserver"),
        front_proxy_client=pair("front-proxy-client"),
        admin=pair("admin"),
        controller_manager=pair("controller-manager"),
        scheduler=pair("scheduler"),
        apiserver_kubelet_client=pair("apiserver-kubelet-client"),
        service_account_key=folder / "sa.key",
        service_account_pub=folder / "sa.pub",
    )


def _complete(pki: Pki) -> bool:
    """Whether every file exists; a partial PKI (an interrupted run) is made anew."""
    files = [pki.service_account_key, pki.service_account_pub]
    for pair in (pki.ca, pki.front_proxy_ca, pki.apiserver, pki.front_proxy_client,
                 pki.admin, pki.controller_manager, pki.scheduler, pki.apiserver_kubelet_client):
        files += [pair.cert, pair.key]
    return all(f.is_file() for f in files)


def ensure(folder: Path) -> Pki:
    """The PKI in `folder`, created when it is absent or incomplete.

    A complete one is reused, so a control plane restarted on the same work dir keeps its
    data, its kubeconfig and its ServiceAccount tokens valid.
    """
    pki = layout(folder)
    if _complete(pki):
        return pki
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("falconer-ca", folder, "ca")
    fp_key, fp_cert = _make_ca("falconer-front-proxy-ca", folder, "front-proxy-ca")
    _issue(ca_key, ca_cert, folder, "apiserver", ("kube-apiserver", ()),
           serving=(SERVING_DNS_NAMES, SERVING_IPS))
    _issue(fp_key, fp_cert, folder, "front-proxy-client", FRONT_PROXY_CLIENT)
    _issue(ca_key, ca_cert, folder, "admin", ADMIN)
    _issue(ca_key, ca_cert, folder, "controller-manager", CONTROLLER_MANAGER)
    _issue(ca_key, ca_cert, folder, "scheduler", SCHEDULER)
    _issue(ca_key, ca_cert, folder, "apiserver-kubelet-client", APISERVER_KUBELET_CLIENT)
    _service_account_keys(folder)
    return pki


def issue_node(pki: Pki, folder: Path, node: str, node_ip: str) -> NodePki:
    """Issue (or re-issue) one node's certificates into `folder` with the cluster CA.

    kubelet-client: the kubelet's identity `node_identity(node)`; kubelet-serving: its
    HTTPS endpoint, valid for the DNS name `node` and the address `node_ip` (the API server
    verifies it with the CA); kube-proxy: `KUBE_PROXY`. Always made anew, because a node
    may come back with another address. Raises OSError when the CA files are unreadable.
    """
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki.ca.key}: not the ECDSA key this module makes")
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    _issue(ca_key, ca_cert, folder, "kubelet-client", node_identity(node))
    _issue(ca_key, ca_cert, folder, "kubelet-serving", node_identity(node),
           serving=((node,), (node_ip,)))
    _issue(ca_key, ca_cert, folder, "kube-proxy", KUBE_PROXY)
    return NodePki(
        kubelet_client=KeyPair(folder / "kubelet-client.crt", folder / "kubelet-client.key"),
        kubelet_serving=KeyPair(folder / "kubelet-serving.crt", folder / "kubelet-serving.key"),
        kube_proxy=KeyPair(folder / "kube-proxy.crt", folder / "kube-proxy.key"),
    )


@dataclass(frozen=True)
class MutualTls:
    """A CA and two leaves it signed: a server's (for `localhost` and 127.0.0.1) and a
    client's, as a TLS Secret's files: `ca.crt`, `tls.crt`/`tls.key` per folder."""

    ca: Path
    server: KeyPair
    client: KeyPair


def mutual_tls(folder: Path, client: str = "falconer-client") -> MutualTls:
    """Make a fresh mutual-TLS set under `folder`: `ca.crt` (+ key), `server/tls.*` and
    `client/tls.*` (each folder also holds `ca.crt`, so it is a Secret's whole layout)."""
    parts = {"server": folder / "server", "client": folder / "client"}
    for part in parts.values():
        part.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("falconer-test-ca", folder, "ca")
    _issue(ca_key, ca_cert, parts["server"], "tls", ("localhost", ()), serving=(("localhost",), ("127.0.0.1",)))
    _issue(ca_key, ca_cert, parts["client"], "tls", (client, ()))
    for part in parts.values():
        _write_cert(ca_cert, part / "ca.crt")
    return MutualTls(folder / "ca.crt", *(KeyPair(p / "tls.crt", p / "tls.key") for p in parts.values()))
def serving_pair(folder: Path, common_name: str, dns_names: tuple[str, ...],
                 ips: tuple[str, ...] = ()) -> tuple[Path, KeyPair]:
    """A fresh CA (`<folder>/<common_name>-ca.crt`) and a server certificate it signed for
    `dns_names` and `ips` (`<folder>/<common_name>.crt/.key`): a TLS listener's files for
    tests, e.g. the sensor's /metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca(f"{common_name}-ca", folder, f"{common_name}-ca")
    _issue(ca_key, ca_cert, folder, common_name, (common_name, ()), serving=(dns_names, ips))
    return folder / f"{common_name}-ca.crt", KeyPair(folder / f"{common_name}.crt", folder / f"{common_name}.key")
