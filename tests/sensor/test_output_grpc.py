"""The gRPC output: Falco's legacy outputs API (`sub`, `get`, `version`) served over
mutual TLS or a Unix socket, proved with the real client-py (PyPI `falco` 0.4.0) in a
process of its own; a live sensor's alert reaches a subscribed client; the committed
generated code is what grpcio-tools makes from the committed protos.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
from pathlib import Path

import falco_client
import marked_rule
import pytest

from falconer import __version__
from falconer.engine import ENGINE_VERSION, Alert
from falconer.sensor.grpc_api import generate
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.grpc import GrpcConfigError, GrpcSettings, GrpcSink
from falconer.sensor.sinks.outputs import from_config, from_falco_keys
from falconer.sensorconfig import GrpcOutput, Outputs
from falconer_e2e import pki


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> pki.MutualTls:
    return pki.mutual_tls(tmp_path_factory.mktemp("tls"))


def client_files(tls: pki.MutualTls) -> tuple[Path, Path, Path]:
    return tls.client.cert, tls.client.key, tls.ca


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(marker: str, priority: str = "Critical", source: str = "syscall") -> Alert:
    return Alert(rule="Test rule", priority=priority, source=source, time_ns=1_700_000_000_123_456_789,
                 output=f"saw {marker}", output_fields={"fd.name": marker, "proc.pid": 42, "k8s.ns.name": None},
                 tags=["a", "b"])


def mtls_server(tls: pki.MutualTls, port: int) -> GrpcSink:
    sink = GrpcSink(GrpcSettings(f"localhost:{port}", private_key=tls.server.key, cert_chain=tls.server.cert,
                               root_certs=tls.ca), "node-a", err=io.StringIO())
    sink.start()
    return sink


def test_get_returns_queued_alerts_to_client_py_over_mutual_tls(tls):
    port = free_port()
    sink = mtls_server(tls, port)
    try:
        for m in ("one", "two"):
            sink.offer(Delivery(alert(m), None))
        sink.offer(Delivery(alert("drop", priority="Informational", source="internal"), None))
        got = falco_client.run(f"localhost:{port}", "get", client_files(tls))
        assert got.returncode == 0, got.stderr
        lines = [json.loads(x) for x in got.stdout.splitlines()]
        again = falco_client.run(f"localhost:{port}", "get", client_files(tls))
    finally:
        sink.close(2.0)
    assert [x["output_fields"]["fd.name"] for x in lines] == ["one", "two", "drop"]
    first = lines[0]
    assert first["rule"] == "Test rule" and first["priority"] == "critical" and first["source"] == "syscall"
    assert first["hostname"] == "node-a" and first["tags"] == ["a", "b"]
    assert first["output"] == alert("one").line()
    assert first["output_fields"] == {"evt.time": "1700000000123456789", "fd.name": "one", "proc.pid": "42",
                                      "k8s.ns.name": "<NA>"}
    assert first["time"].startswith("2023-11-14T22:13:20.12345")     # client-py: float seconds
    assert (lines[2]["priority"], lines[2]["source"]) == ("informational", "internal")
    assert again.returncode == 0 and again.stdout == ""          # get took them: the queue is empty
    s = sink.stats()
    assert (s.offered, s.delivered, s.dropped) == (3, 3, 0)


def test_version_names_falconer_and_its_engine(tls):
    port = free_port()
    sink = mtls_server(tls, port)
    try:
        got = falco_client.run(f"localhost:{port}", "version", client_files(tls))
    finally:
        sink.close(2.0)
    assert got.returncode == 0, got.stderr
    version = json.loads(got.stdout)
    assert version["version"] == __version__ and version["engine_version"] == int(ENGINE_VERSION.split(".")[1])
    assert [version[k] for k in ("major", "minor", "patch")] == [int(x) for x in __version__.split(".")]
    assert len(version["engine_fields_checksum"]) == 64


def test_a_client_without_a_certificate_the_ca_signed_gets_nothing(tls, tmp_path):
    other = pki.mutual_tls(tmp_path / "other")
    port = free_port()
    sink = mtls_server(tls, port)
    try:
        sink.offer(Delivery(alert("secret"), None))
        got = falco_client.run(f"localhost:{port}", "get", (other.client.cert, other.client.key, tls.ca),
                               timeout_s=30)
    finally:
        sink.close(2.0)
    assert got.returncode != 0 and "secret" not in got.stdout
    assert sink.stats().dropped == 1                              # untaken at shutdown: counted


def test_sub_over_a_unix_socket_and_a_full_queue_counts_drops(tmp_path):
    sock = tmp_path / "run" / "falconer.sock"
    sink = GrpcSink(GrpcSettings(f"unix://{sock}"), "node-a", err=io.StringIO(), queue_size=2)
    sink.start()
    proc = subprocess.Popen(falco_client.command(f"unix://{sock}", "sub"), env=falco_client.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)                                           # the client is subscribed
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        sink.offer(Delivery(alert("live"), None))
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    assert first["output_fields"]["fd.name"] == "live"
    time.sleep(1.0)                                               # the server saw the client go
    for m in ("q1", "q2", "q3"):
        sink.offer(Delivery(alert(m), None))
    sink.close(2.0)
    s = sink.stats()
    assert (s.offered, s.delivered, s.dropped) == (4, 1, 3)       # q3: queue full; q1, q2: untaken


def test_settings_from_falco_keys_and_falconer_yaml(tls):
    keys = {"grpc.enabled": "true", "grpc_output.enabled": "true", "grpc.bind_address": "127.0.0.1:5060",
            "grpc.private_key": "/k", "grpc.cert_chain": "/c", "grpc.root_certs": "/r", "grpc.threadiness": "2"}
    assert from_falco_keys(keys).grpc == GrpcSettings("127.0.0.1:5060", Path("/k"), Path("/c"), Path("/r"), 2)
    assert from_falco_keys({**keys, "grpc_output.enabled": "false"}).grpc is None
    assert from_config(Outputs(grpc=GrpcOutput(5060, "s", threads=3)), Path("/t")).grpc == \
        GrpcSettings("0.0.0.0:5060", Path("/t/grpc/tls.key"), Path("/t/grpc/tls.crt"), Path("/t/grpc/ca.crt"), 3)
    assert from_config(Outputs(grpc=GrpcOutput(5060, "s", bind_address="::1")), Path("/t")).grpc.bind_address \
        == "[::1]:5060"
    with pytest.raises(GrpcConfigError, match="mutual TLS only"):
        from_falco_keys({"grpc.enabled": "true", "grpc.bind_address": "0.0.0.0:5060"})
    with pytest.raises(GrpcConfigError, match="grpc.private_key"):
        GrpcSink(GrpcSettings("127.0.0.1:0", Path("/nonexistent"), tls.server.cert, tls.ca), "n").start()


def test_generated_code_is_what_the_protos_give(tmp_path):
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.generated_names())
    for path in written:
        assert path.read_bytes() == (generate.HERE / path.name).read_bytes(), \
            f"{path.name} is stale: run python -m falconer.sensor.grpc_api.generate"


def test_live_sensor_alert_reaches_a_subscribed_client_py(start_sensor, tmp_path, marker, tls):
    rules = marked_rule.write_rules(tmp_path, priority="ERROR")
    port = free_port()
    sensor = start_sensor("--rules", str(rules), "-o", "grpc.enabled=true", "-o", "grpc_output.enabled=true",
                          "-o", f"grpc.bind_address=localhost:{port}", "-o", f"grpc.private_key={tls.server.key}",
                          "-o", f"grpc.cert_chain={tls.server.cert}", "-o", f"grpc.root_certs={tls.ca}")
    proc = subprocess.Popen(falco_client.command(f"localhost:{port}", "sub", client_files(tls)),
                            env=falco_client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        opened = marked_rule.open_marked(tmp_path, marker)
        assert proc.stdout is not None
        got = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
        summary = sensor.stop()
    assert got["rule"] == marked_rule.NAME and got["priority"] == "error" and got["tags"] == ["test"]
    assert got["output_fields"]["fd.name"] == str(opened)
    assert "outputs: grpc" in summary and "sink grpc: offered" in summary
