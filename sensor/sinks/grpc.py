"""The gRPC output: Falco's legacy outputs API served by the sensor (`falco.outputs.service`
`sub` and `get`, `falco.version.service` `version`; protos in `sensor/grpc_api/`).

As in Falco, alerts wait in one queue that the clients consume: `get` returns what is
queued at the call and ends; `sub` streams alerts for as long as the client keeps its
request stream open (several subscribers share the queue: each alert goes to one).
The queue is bounded (Falco's is not): when no client takes alerts, the newest are
dropped and counted. A network address is served over mutual TLS only (the server's
`cert_chain` and `private_key`, clients verified against `root_certs`: Falco's `grpc`
keys; in a FalcoInstance the files of a mounted Secret, `tls.crt`, `tls.key`, `ca.crt`);
a `unix://` address is served without TLS (file permissions guard it, 0660).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from falconer import __version__, sensorconfig
from falconer.engine import ENGINE_VERSION, Alert
from falconer.sensor.grpc_api import outputs_pb2, outputs_pb2_grpc, schema_pb2, version_pb2, version_pb2_grpc
from falconer.sensor.sinks.base import Delivery, Sink, enqueue
from falconer.sensor.sinks.stream import falco_bool

#: Alerts waiting for a client; more are dropped (counted).
QUEUE_SIZE = 10_000
#: Falco's default `grpc.threadiness` is the number of CPUs; each `sub` holds a thread.
DEFAULT_THREADS = 8
#: Seconds a subscriber's wait for the next alert lasts before it checks its stream.
POLL_S = 0.5
#: Seconds clients get to finish at shutdown.
GRACE_S = 1.0
#: falco.yaml keys: `grpc.<key>` and `grpc_output.enabled`.
FALCO_KEYS = frozenset({"enabled", "bind_address", "threadiness", "private_key", "cert_chain", "root_certs"})
#: Falco's source names -> the deprecated `source` enum (client-py decodes only these).
SOURCES = {"syscall": schema_pb2.SYSCALL, "k8s_audit": schema_pb2.K8S_AUDIT, "internal": schema_pb2.INTERNAL}


class GrpcConfigError(ValueError):
    """A gRPC output setting is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class GrpcSettings:
    """Where the API is served: `bind_address` is `host:port` (mutual TLS with the three
    PEM files, all required) or `unix:///path` (no TLS)."""

    bind_address: str
    private_key: Path | None = None
    cert_chain: Path | None = None
    root_certs: Path | None = None
    threadiness: int = DEFAULT_THREADS

    def __post_init__(self) -> None:
        tls = (self.private_key, self.cert_chain, self.root_certs)
        if self.unix_socket is None and None in tls:
            raise GrpcConfigError(f"{self.bind_address}: a network address is served over mutual TLS only: "
                                  "give private_key, cert_chain and root_certs (or a unix:/// address)")
        if self.unix_socket is None and ":" not in self.bind_address:
            raise GrpcConfigError(f"bind_address: expected host:port or unix:///path, got {self.bind_address!r}")
        if self.threadiness < 1:
            raise GrpcConfigError(f"threadiness: must be at least 1, got {self.threadiness}")

    @property
    def unix_socket(self) -> Path | None:
        """The socket's path for a `unix://` address, else None."""
        if self.bind_address.startswith("unix://"):
            return Path(self.bind_address.removeprefix("unix://"))
        return None

    @classmethod
    def from_config(cls, output: sensorconfig.GrpcOutput, tls_root: Path) -> GrpcSettings:
        """From falconer.yaml `outputs.grpc`: `bindAddress:port`, the Secret's files in
        `tls_dir(tls_root, "grpc")`."""
        folder = sensorconfig.tls_dir(tls_root, "grpc")
        host = f"[{output.bind_address}]" if ":" in output.bind_address else output.bind_address
        return cls(f"{host}:{output.port}", private_key=folder / sensorconfig.KEY_FILE,
                   cert_chain=folder / sensorconfig.CERT_FILE, root_certs=folder / sensorconfig.CA_FILE,
                   threadiness=output.threads)

    @classmethod
    def from_falco_keys(cls, keys: Mapping[str, str]) -> GrpcSettings | None:
        """From falco.yaml `grpc.<key>` and `grpc_output.enabled` as `-o` strings (here
        merged, `enabled` meaning both); None unless enabled."""
        unknown = set(keys) - FALCO_KEYS
        if unknown:
            raise GrpcConfigError(f"grpc: unsupported keys {sorted(unknown)}; supported: {sorted(FALCO_KEYS)}")
        if not falco_bool(keys.get("enabled", "false"), "grpc.enabled"):
            return None
        if "bind_address" not in keys:
            raise GrpcConfigError("grpc.enabled=true needs grpc.bind_address")
        try:
            threads = int(keys.get("threadiness", DEFAULT_THREADS))
        except ValueError as exc:
            raise GrpcConfigError(f"grpc.threadiness: expected an integer: {exc}") from exc
        return cls(keys["bind_address"], threadiness=threads,
                   **{k: Path(keys[k]) if keys.get(k) else None for k in ("private_key", "cert_chain", "root_certs")})

    def credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS server credentials from the three files (GrpcConfigError naming
        the file that cannot be read)."""
        data = {}
        for key in ("private_key", "cert_chain", "root_certs"):
            path = getattr(self, key)
            try:
                data[key] = Path(path).read_bytes()
            except OSError as exc:
                raise GrpcConfigError(f"grpc.{key}: {exc}") from exc
        return grpc.ssl_server_credentials([(data["private_key"], data["cert_chain"])],
                                           root_certificates=data["root_certs"], require_client_auth=True)


def to_response(alert: Alert, hostname: str) -> outputs_pb2.response:
    """An alert as the API's `response`: `output` is the whole line as in Falco's JSON,
    output fields as strings (JSON text for numbers and lists), `evt.time` included."""
    fields = alert.to_json(hostname)["output_fields"]
    assert isinstance(fields, dict)
    resp = outputs_pb2.response(
        priority=alert.priority.upper(),  # the enum value by its name
        source_deprecated=SOURCES.get(alert.source, schema_pb2.PLUGIN),
        rule=alert.rule, output=alert.line(), hostname=hostname, tags=alert.tags, source=alert.source,
        output_fields={k: v if isinstance(v, str) else "<NA>" if v is None else json.dumps(v)
                       for k, v in fields.items()})
    resp.time.seconds, resp.time.nanos = divmod(alert.time_ns, 1_000_000_000)
    return resp


def version_response() -> version_pb2.response:
    """Falconer's version, and the engine's (`engine_version`: its minor number, as
    Falco's integer engine versions became the semver minor) with a checksum of the
    fields the sensor answers (Falco: of the fields its engine knows)."""
    from falconer.sensor.event import ANSWERED_FIELDS  # noqa: PLC0415

    core, _, build = __version__.partition("+")
    core, _, pre = core.partition("-")
    major, minor, patch = (int(x) for x in core.split(".")[:3])
    checksum = hashlib.sha256("\n".join(sorted(ANSWERED_FIELDS)).encode()).hexdigest()
    return version_pb2.response(version=__version__, major=major, minor=minor, patch=patch, prerelease=pre,
                                build=build, engine_version=int(ENGINE_VERSION.split(".")[1]),
                                engine_fields_checksum=checksum)


class GrpcSink(Sink, outputs_pb2_grpc.serviceServicer, version_pb2_grpc.serviceServicer):
    """Queues alerts for the API's clients and serves the API (started by `start`)."""

    name = "grpc"

    def __init__(self, output: GrpcSettings, hostname: str, err: TextIO | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        super().__init__()
        self.output = output
        self.hostname = hostname
        self.err = err or sys.stderr
        self._queue: queue.Queue[Delivery] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None

    def offer(self, delivery: Delivery) -> None:
        """Queue the alert for a client; a full queue drops it (counted)."""
        enqueue(self._queue, delivery, self.counters)

    def start(self) -> None:
        """Bind and serve (GrpcConfigError for unreadable TLS files, RuntimeError when
        the address cannot be bound)."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.output.threadiness,
                                                        thread_name_prefix="grpc-output"))
        # The generated registration functions carry no annotations.
        outputs_pb2_grpc.add_serviceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        version_pb2_grpc.add_serviceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        sock = self.output.unix_socket
        if sock is not None:
            _clear_stale_socket(sock)
            port = server.add_insecure_port(self.output.bind_address)
        else:
            port = server.add_secure_port(self.output.bind_address, self.output.credentials())
        if port == 0:
            raise RuntimeError(f"grpc output: cannot bind {self.output.bind_address}")
        server.start()
        if sock is not None:
            os.chmod(sock, 0o660)
        self._server = server

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving; alerts no client took are dropped (counted, said)."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop(min(GRACE_S, timeout_s)).wait(timeout_s)
        lost = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            lost += 1
        if lost:
            self.counters.add("dropped", lost)
            self.err.write(f"falconer sensor: grpc output: {lost} alerts no client took (counted as dropped)\n")

    # -- the API ----------------------------------------------------------------------

    def get(self, request: outputs_pb2.request, context: grpc.ServicerContext) -> Iterator[outputs_pb2.response]:
        """The alerts queued at the call, then the end of the stream."""
        for _ in range(self._queue.qsize()):
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                return
            yield from self._send(delivery)

    def sub(self, request_iterator: Iterator[outputs_pb2.request],
            context: grpc.ServicerContext) -> Iterator[outputs_pb2.response]:
        """Alerts as they come, until the client ends its request stream or goes away."""
        done = threading.Event()
        threading.Thread(target=_drain_requests, args=(request_iterator, done), daemon=True,
                         name="grpc-sub-requests").start()
        while context.is_active() and not done.is_set() and not self._stopping.is_set():
            try:
                delivery = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            yield from self._send(delivery)

    def version(self, request: version_pb2.request, context: grpc.ServicerContext) -> version_pb2.response:
        """Falconer's and its engine's version."""
        return version_response()

    def _send(self, delivery: Delivery) -> Iterator[outputs_pb2.response]:
        """Yield one alert; delivered once the stream asks for the next one, dropped
        (counted) when the client went away with it in flight."""
        try:
            yield to_response(delivery.alert, self.hostname)
        except GeneratorExit:
            self.counters.add("dropped")
            raise
        self.counters.add("delivered")


def _drain_requests(requests: Iterator[outputs_pb2.request], done: threading.Event) -> None:
    """Read a subscriber's request stream (its keep-alive) until it ends."""
    try:
        for _ in requests:
            pass
    except grpc.RpcError:
        pass
    finally:
        done.set()


def _clear_stale_socket(path: Path) -> None:
    """Make the socket's folder; remove a socket a previous run left (never another file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise GrpcConfigError(f"{path}: exists and is not a socket")
    path.unlink()
