"""The HTTP output: each alert POSTed as Falco's JSON alert to a URL, as Falco's
`http_output` does with `json_output: true`: what falcosidekick's main handler (`/`)
takes (a POST whose JSON body has a non-empty `output`; `rule`, `priority`, `time`,
`output_fields`, `source`, `tags`, `hostname` as Falco writes them).

Over HTTPS the server is verified against the system's CAs or the given CA file/folder,
and with `mtls` the sensor presents a client certificate. In a FalcoInstance the TLS
files come from the Secret `outputs.http.tlsSecret` that the operator mounts at
`sensorconfig.tls_dir(TLS_ROOT, "http")`: `ca.crt`, and `tls.crt` with `tls.key` for
mutual TLS (a `kubernetes.io/tls` Secret's keys plus cert-manager's `ca.crt`); the
ConfigMap only names the Secret. One connection is kept open and reopened
after a failure; delivery is off the event loop (`stream.StreamSink`: bounded queue,
retries with backoff, every loss counted).
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from falconer import __version__, sensorconfig
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.stream import DeliveryError, StreamSink, falco_bool

#: Falco's default `http_output.user_agent` is "falcosecurity/falco"; ours names us.
DEFAULT_USER_AGENT = f"falconer/{__version__}"
#: Seconds a connect, send or response read may take before the try counts as failed.
TIMEOUT_S = 10.0
#: falco.yaml `http_output` keys this output takes (Falco's names); `insecure`,
#: `echo` and `compress_uploads` are refused with a reason rather than ignored.
FALCO_KEYS = frozenset({"enabled", "url", "user_agent", "ca_cert", "ca_bundle", "ca_path", "mtls",
                        "client_cert", "client_key", "keep_alive"})


class HttpConfigError(ValueError):
    """An http output setting is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class HttpSettings:
    """Where and how alerts are POSTed. Paths are PEM files; `ca_file`/`ca_dir` None
    means the system's CAs; `client_cert`/`client_key` both set means mutual TLS."""

    url: str
    user_agent: str = DEFAULT_USER_AGENT
    ca_file: Path | None = None
    ca_dir: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    keep_alive: bool = True

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpConfigError(f"url: expected http:// or https:// and a host, got {self.url!r}")
        if (self.client_cert is None) != (self.client_key is None):
            raise HttpConfigError("a client certificate needs its key and a key its certificate")
        if parts.scheme == "http" and (self.ca_file or self.ca_dir or self.client_cert):
            raise HttpConfigError(f"TLS files are given but the url is not https: {self.url}")

    @classmethod
    def from_config(cls, output: sensorconfig.HttpOutput, tls_root: Path) -> HttpSettings:
        """From falconer.yaml `outputs.http`: with `tlsSecret`, the Secret's files in
        `tls_dir(tls_root, "http")`: ca.crt when present, tls.crt + tls.key for mTLS."""
        ca, cert, key = (_present(sensorconfig.tls_dir(tls_root, "http") / name) if output.tls_secret else None
                         for name in (sensorconfig.CA_FILE, sensorconfig.CERT_FILE, sensorconfig.KEY_FILE))
        try:
            return cls(url=output.url, user_agent=output.user_agent or DEFAULT_USER_AGENT, ca_file=ca,
                       client_cert=cert, client_key=key)
        except HttpConfigError as exc:
            raise HttpConfigError(f"outputs.http: {exc}") from exc

    @classmethod
    def from_falco_keys(cls, keys: Mapping[str, str]) -> HttpSettings | None:
        """From falco.yaml `http_output.<key>` values given as `-o` strings; None unless
        `enabled` is true (Falco's default is false) or a url is given."""
        unknown = set(keys) - FALCO_KEYS
        if unknown:
            raise HttpConfigError(f"http_output: unsupported keys {sorted(unknown)}; "
                                  f"supported: {sorted(FALCO_KEYS)}")
        if not falco_bool(keys.get("enabled", "true" if "url" in keys else "false"), "http_output.enabled"):
            return None
        if "url" not in keys:
            raise HttpConfigError("http_output.enabled=true needs http_output.url")
        mtls = falco_bool(keys.get("mtls", "false"), "http_output.mtls")
        ca = keys.get("ca_bundle") or keys.get("ca_cert")
        return cls(url=keys["url"], user_agent=keys.get("user_agent", DEFAULT_USER_AGENT),
                   ca_file=Path(ca) if ca else None,
                   ca_dir=Path(keys["ca_path"]) if keys.get("ca_path") else None,
                   client_cert=Path(keys["client_cert"]) if mtls else None,
                   client_key=Path(keys["client_key"]) if mtls else None,
                   keep_alive=falco_bool(keys.get("keep_alive", "true"), "http_output.keep_alive"))

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context (server verified, hostname checked); HttpConfigError
        naming the file when a CA or the client pair cannot be loaded."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file, capath=self.ca_dir)
            if self.client_cert is not None and self.client_key is not None:
                ctx.load_cert_chain(self.client_cert, self.client_key)
        except (OSError, ssl.SSLError) as exc:
            files = [str(p) for p in (self.ca_file, self.ca_dir, self.client_cert, self.client_key) if p]
            raise HttpConfigError(f"http output TLS files {files}: {exc}") from exc
        return ctx


def _present(path: Path) -> Path | None:
    """`path` when it exists (a Secret may hold only some of the TLS files)."""
    return path if path.exists() else None


class HttpSink(StreamSink):
    """POSTs each alert (Falco JSON, `Content-Type: application/json`); a non-2xx answer
    or a connection failure is retried with backoff, then the alert is dropped (counted)."""

    name = "http"

    def __init__(self, output: HttpSettings, hostname: str, err: TextIO | None = None, **kw: Any) -> None:
        super().__init__(err, **kw)
        self.output = output
        self.hostname = hostname
        parts = urllib.parse.urlsplit(output.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._ssl = output.ssl_context() if self._https else None
        self._conn: http.client.HTTPConnection | None = None

    def send(self, delivery: Delivery) -> None:
        """One POST; DeliveryError on a non-2xx status or a protocol failure."""
        body = json.dumps(delivery.alert.to_json(self.hostname)).encode()
        headers = {"Content-Type": "application/json", "User-Agent": self.output.user_agent}
        if not self.output.keep_alive:
            headers["Connection"] = "close"
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            self.release()
            raise DeliveryError(f"POST {self.output.url}: {exc!r}") from exc
        if not self.output.keep_alive or resp.will_close:
            self.release()
        if not 200 <= resp.status < 300:
            raise DeliveryError(f"POST {self.output.url}: HTTP {resp.status} {resp.reason}: "
                                f"{answer.decode(errors='replace').strip()[:200]}")

    def release(self) -> None:
        """Close the kept connection (the next send opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=TIMEOUT_S,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT_S)
        return self._conn
