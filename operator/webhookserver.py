"""The operator's admission webhook endpoint: TLS, its certificate kept in a Secret,
and the ValidatingWebhookConfiguration that points the API server at it.

- Certificate: a Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) named by
  `--webhook-secret NAMESPACE/NAME`. When it is missing, not for this endpoint's name, or
  within ROTATE_BEFORE of expiry, the operator makes a new CA and serving certificate
  (ECDSA P-256, VALIDITY), writes the Secret, and uses it; a Secret made by someone else
  (cert-manager) is used as it is while it is valid for the endpoint. Checked at start and
  every CHECK_EVERY_S; a new certificate is used for new connections at once.
- Configuration: with `--webhook-url` (or `--webhook-service`), the operator applies
  ValidatingWebhookConfiguration CONFIG_NAME with the CA as `caBundle`, for CREATE and
  UPDATE of FalcoRules and ClusterFalcoRules, `failurePolicy: Ignore` and a
  TIMEOUT_SECONDS timeout: a stopped or slow operator never blocks an apply, and the
  status path catches up when it is back.
- Server: `POST /validate` takes an AdmissionReview (at most MAX_BODY bytes) and answers
  with operator/webhook.py's decision; TLS 1.2 or later.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from falconer.operator import webhook
from falconer.operator.api import GROUP, MANAGED_BY, VERSION
from falconer.operator.catalog import Catalog
from falconer.operator.kube import Kube

CONFIG_NAME = "falconer.io"
WEBHOOK_NAME = "rules.falconer.io"
PATH = "/validate"
TIMEOUT_SECONDS = 5
VALIDITY = datetime.timedelta(days=365)
ROTATE_BEFORE = datetime.timedelta(days=30)
CHECK_EVERY_S = 3600.0
MAX_BODY = 3 << 20
CONNECTION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    """Where the API server calls the webhook: a URL, or a Service (namespace, name, port)."""

    url: str | None = None
    service: tuple[str, str, int] | None = None

    @classmethod
    def parse(cls, url: str | None, service: str | None) -> Endpoint:
        """From `--webhook-url` or `--webhook-service NS/NAME[:PORT]`; ValueError if bad."""
        if url:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"--webhook-url must be https://HOST[:PORT]/PATH, got {url!r}")
            return cls(url=url)
        if service:
            where, _, port = service.partition(":")
            namespace, _, name = where.partition("/")
            if not namespace or not name or (port and not port.isdigit()):
                raise ValueError(f"--webhook-service must be NAMESPACE/NAME[:PORT], got {service!r}")
            return cls(service=(namespace, name, int(port or 443)))
        raise ValueError("give --webhook-url or --webhook-service")

    @property
    def names(self) -> list[str]:
        """The names the serving certificate must carry (an IP address or DNS names)."""
        if self.url:
            return [str(urlsplit(self.url).hostname)]
        assert self.service is not None
        namespace, name, _ = self.service
        return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]

    def client_config(self, ca_pem: bytes) -> dict[str, Any]:
        """The webhook's clientConfig with the CA bundle."""
        config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
        if self.url:
            config["url"] = self.url
        else:
            assert self.service is not None
            namespace, name, port = self.service
            config["service"] = {"namespace": namespace, "name": name, "port": port, "path": PATH}
        return config


@dataclass(frozen=True)
class WebhookSettings:
    """`falconer operator --webhook-*`, handed to the handlers' startup through the
    environment (as the resync period is)."""

    ENV = "FALCONER_WEBHOOK"

    listen: tuple[str, int]
    endpoint: Endpoint
    secret: tuple[str, str]

    @classmethod
    def parse(cls, listen: str, url: str | None, service: str | None, secret: str) -> WebhookSettings:
        """From the command line's values; ValueError naming the bad one."""
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--webhook-listen must be HOST:PORT, got {listen!r}")
        namespace, _, name = secret.partition("/")
        if not namespace or not name:
            raise ValueError(f"--webhook-secret must be NAMESPACE/NAME, got {secret!r}")
        return cls((host, int(port)), Endpoint.parse(url, service), (namespace, name))

    def to_env(self) -> str:
        """The settings as one environment value (JSON)."""
        return json.dumps({"listen": list(self.listen), "url": self.endpoint.url,
                           "service": list(self.endpoint.service) if self.endpoint.service else None,
                           "secret": list(self.secret)})

    @classmethod
    def from_env(cls, value: str) -> WebhookSettings:
        """The inverse of `to_env`."""
        raw = json.loads(value)
        svc = raw["service"]
        service = (str(svc[0]), str(svc[1]), int(svc[2])) if svc else None
        return cls((str(raw["listen"][0]), int(raw["listen"][1])), Endpoint(raw["url"], service),
                   (str(raw["secret"][0]), str(raw["secret"][1])))


def start(settings: WebhookSettings, kube: Kube, catalog: Callable[[], Catalog]) -> WebhookServer:
    """The webhook server for these settings, serving."""
    store = CertificateStore(kube, *settings.secret, settings.endpoint.names)
    server = WebhookServer(settings.listen, settings.endpoint, store, kube, catalog)
    server.start()
    return server


@dataclass(frozen=True)
class Certificate:
    """PEM serving certificate, key and the CA that signed it."""

    cert: bytes
    key: bytes
    ca: bytes

    def valid_for(self, names: list[str], now: datetime.datetime) -> bool:
        """Whether it carries every name and stays valid beyond ROTATE_BEFORE."""
        cert = x509.load_pem_x509_certificate(self.cert)
        # not_valid_after (naive UTC): Debian 12's cryptography 38 has no *_utc yet
        if cert.not_valid_after.replace(tzinfo=datetime.UTC) - ROTATE_BEFORE < now:
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
        return set(names) <= have


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(names: list[str], now: datetime.datetime) -> Certificate:
    """A new CA and a serving certificate for `names` signed by it."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "falconer-webhook-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return Certificate(leaf.public_bytes(pem), key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()),
                       ca.public_bytes(pem))


class CertificateStore:
    """The serving certificate in its Secret: read, renewed when needed, written back."""

    def __init__(self, kube: Kube, namespace: str, name: str, names: list[str]) -> None:
        self._kube, self.namespace, self.name, self.names = kube, namespace, name, names

    def current(self) -> tuple[Certificate, bool]:
        """The certificate to serve, and whether it was (re)issued now."""
        now = datetime.datetime.now(datetime.UTC)
        secret = self._kube.get("v1", "Secret", self.name, self.namespace)
        data = (secret or {}).get("data") or {}
        if all(k in data for k in ("tls.crt", "tls.key", "ca.crt")):
            found = Certificate(*(base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt")))
            if found.valid_for(self.names, now):
                return found, False
        fresh = issue(self.names, now)
        self._kube.apply({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(MANAGED_BY)},
            "data": {k: base64.b64encode(v).decode() for k, v in
                     (("tls.crt", fresh.cert), ("tls.key", fresh.key), ("ca.crt", fresh.ca))},
        })
        return fresh, True


def webhook_configuration(endpoint: Endpoint, ca_pem: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for FalcoRules and ClusterFalcoRules."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIG_NAME, "labels": dict(MANAGED_BY)},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": endpoint.client_config(ca_pem),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                       "resources": ["falcorules", "clusterfalcorules"], "scope": "*"}],
            "failurePolicy": "Ignore",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
        }],
    }


def _handler(catalog: Callable[[], Catalog]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """POST /validate: an AdmissionReview in, the decision out."""

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.split("?")[0] != PATH or not 0 < length <= MAX_BODY:
                self.send_error(404 if self.path.split("?")[0] != PATH else 413)
                return
            try:
                body = json.loads(self.rfile.read(length))
                answer = json.dumps(webhook.review(body, catalog())).encode()
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self.send_error(400, f"not an AdmissionReview: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Quiet: kopf's log is the operator's; refusals are in the API server's answer."""

    return Handler


class _TLSServer(ThreadingHTTPServer):
    """Each connection's TLS handshake runs in its own thread, under a timeout, so a
    slow client never holds the accept loop."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        super().__init__(listen, handler)
        self._context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake, then serve the request."""
        request.settimeout(CONNECTION_TIMEOUT_S)
        try:
            tls = self._context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


class WebhookServer:
    """The HTTPS server in a thread, its certificate checked every CHECK_EVERY_S."""

    def __init__(self, listen: tuple[str, int], endpoint: Endpoint, store: CertificateStore, kube: Kube,
                 catalog: Callable[[], Catalog]) -> None:
        self._endpoint, self._store, self._kube = endpoint, store, kube
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._install(store.current()[0])
        self._server = _TLSServer(listen, _handler(catalog), self._context)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True),
                         threading.Thread(target=self._rotate, name="webhook-cert", daemon=True)]

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self._server.server_address[1])

    def _install(self, cert: Certificate) -> None:
        """Serve `cert` to new connections from now on, and point the API server at it
        with its CA (compare-then-apply: written only when it differs)."""
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            crt.write_bytes(cert.cert)
            key.write_bytes(cert.key)
            self._context.load_cert_chain(crt, key)
        self._kube.apply(webhook_configuration(self._endpoint, cert.ca))

    def _rotate(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            cert, issued = self._store.current()
            if issued:
                self._install(cert)

    def start(self) -> None:
        """Serve in background threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
