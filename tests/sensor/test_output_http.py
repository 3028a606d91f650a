"""The HTTP output: Falco's JSON alert POSTed over mutual TLS, with retries, every loss
counted; and a real sensor's live alert reaching a receiver that accepts what
falcosidekick's main handler accepts.

falcosidekick itself cannot be built here: the Go module proxy refuses
github.com/falcosecurity/falcosidekick (403 "This module version is not available" for
its version list, @latest and every version asked), so the receiver applies
falcosidekick's acceptance rule (handlers.go mainHandler: a POST, a JSON body decoding
into its FalcoPayload, a non-empty `output`) and the test checks the payload's fields
against FalcoPayload's JSON names and types.
"""

from __future__ import annotations

import datetime
import io
import time
from pathlib import Path

import marked_rule
import pytest
from alert_receiver import https_receiver

from falconer.engine import Alert
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.http import HttpConfigError, HttpSettings, HttpSink
from falconer.sensor.sinks.outputs import from_config, from_falco_keys
from falconer.sensorconfig import HttpOutput, Outputs
from falconer_e2e import pki

#: falcosidekick's FalcoPayload JSON names and the types its decoder needs.
FALCOSIDEKICK_FIELDS = {"output": str, "priority": str, "rule": str, "time": str, "output_fields": dict,
                        "source": str, "tags": list, "hostname": str}
PRIORITIES = {"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> pki.MutualTls:
    return pki.mutual_tls(tmp_path_factory.mktemp("tls"))


def alert(marker: str = "m") -> Alert:
    return Alert(rule="Test rule", priority="Warning", source="syscall", time_ns=1_700_000_000_123_456_789,
                 output=f"saw {marker}", output_fields={"proc.name": "cat", "fd.name": marker}, tags=["t1"])


def mtls_output(url: str, tls: pki.MutualTls) -> HttpSettings:
    return HttpSettings(url, ca_file=tls.ca, client_cert=tls.client.cert, client_key=tls.client.key)


def check_falcosidekick_payload(body: dict) -> None:
    for name, kind in FALCOSIDEKICK_FIELDS.items():
        assert isinstance(body[name], kind), name
    assert body["output"] and body["priority"] in PRIORITIES
    datetime.datetime.fromisoformat(body["time"])          # RFC 3339, as Go's time.Time decodes


def test_alert_is_posted_as_falco_json_over_mutual_tls(tls):
    with https_receiver(tls.server.cert, tls.server.key, tls.ca) as (url, got):
        sink = HttpSink(mtls_output(url, tls), "node-a", err=io.StringIO())
        sink.start()
        sink.offer(Delivery(alert("one"), None))
        sink.offer(Delivery(alert("two"), None))
        sink.close(5.0)
    assert [a["output_fields"]["fd.name"] for a in got.alerts] == ["one", "two"]
    assert got.alerts[0] == alert("one").to_json("node-a")
    check_falcosidekick_payload(got.alerts[0])
    assert got.headers[0]["Content-Type"] == "application/json"
    assert got.headers[0]["User-Agent"].startswith("falconer/")
    s = sink.stats()
    assert (s.offered, s.delivered, s.dropped, s.failures) == (2, 2, 0, 0)


def test_server_errors_are_retried_with_backoff(tls):
    with https_receiver(tls.server.cert, tls.server.key, tls.ca) as (url, got):
        got.fail_next = 2
        err = io.StringIO()
        sink = HttpSink(mtls_output(url, tls), "node-a", err=err)
        sink.start()
        started = time.monotonic()
        sink.offer(Delivery(alert(), None))
        assert got.wait(lambda a: True, timeout_s=10.0)
        elapsed = time.monotonic() - started
        sink.close(5.0)
    s = sink.stats()
    assert (s.delivered, s.failures, s.dropped) == (1, 2, 0)
    assert elapsed >= 3.0                                  # backoff 1 s, then 2 s
    assert "HTTP 503" in err.getvalue() and "delivering again" in err.getvalue()


def test_a_server_the_ca_does_not_vouch_for_loses_the_alert_counted(tls, tmp_path):
    other = pki.mutual_tls(tmp_path / "other")
    with https_receiver(other.server.cert, other.server.key, tls.ca) as (url, got):
        err = io.StringIO()
        sink = HttpSink(mtls_output(url, tls), "node-a", err=err, attempts=2)
        sink.start()
        sink.offer(Delivery(alert(), None))
        sink.close(10.0)
    assert got.alerts == []
    s = sink.stats()
    assert (s.delivered, s.failures, s.dropped) == (0, 2, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in err.getvalue()


def test_a_full_queue_and_shutdown_count_their_losses():
    err = io.StringIO()
    sink = HttpSink(HttpSettings("http://127.0.0.1:9/"), "node-a", err=err, queue_size=2)
    for _ in range(3):
        sink.offer(Delivery(alert(), None))
    sink.close(0.0)                                        # never started: nothing sent
    s = sink.stats()
    assert (s.offered, s.delivered, s.dropped) == (3, 0, 3)
    assert "2 alerts not delivered at shutdown" in err.getvalue()


def test_falco_keys_and_falconer_yaml_settings(tls):
    out = from_falco_keys({"http_output.enabled": "true", "http_output.url": "https://h:1/x",
                           "http_output.ca_cert": str(tls.ca), "http_output.mtls": "true",
                           "http_output.client_cert": "/c", "http_output.client_key": "/k"}).http
    assert out == HttpSettings("https://h:1/x", ca_file=tls.ca, client_cert=Path("/c"), client_key=Path("/k"))
    assert from_falco_keys({"http_output.enabled": "false", "http_output.url": "http://h/"}).http is None
    # The operator mounts the Secret at <tls root>/http; pki's client folder is a Secret's layout.
    root = tls.client.cert.parent.parent
    (root / "http").symlink_to(tls.client.cert.parent)
    assert from_config(Outputs(http=HttpOutput("https://h/", tls_secret="s")), root).http \
        == HttpSettings("https://h/", ca_file=root / "http" / "ca.crt", client_cert=root / "http" / "tls.crt",
                        client_key=root / "http" / "tls.key")
    assert from_config(Outputs(http=HttpOutput("https://h/")), root).http == HttpSettings("https://h/")
    for bad, says in [({"http_output.url": "ftp://h/"}, "url: expected http"),
                      ({"http_output.url": "http://h/", "http_output.ca_cert": "/ca"}, "not https"),
                      ({"http_output.url": "https://h/", "http_output.insecure": "true"}, "unsupported keys"),
                      ({"http_output.enabled": "true"}, "needs http_output.url")]:
        with pytest.raises(HttpConfigError, match=says):
            from_falco_keys(bad)


def test_unreadable_tls_files_are_named():
    with pytest.raises(HttpConfigError, match="/nonexistent/ca.crt"):
        HttpSink(HttpSettings("https://h/", ca_file=Path("/nonexistent/ca.crt")), "n")


def test_live_sensor_alert_reaches_the_receiver(start_sensor, tmp_path, marker, tls):
    rules = marked_rule.write_rules(tmp_path)
    with https_receiver(tls.server.cert, tls.server.key, tls.ca) as (url, got):
        sensor = start_sensor("--rules", str(rules), "-o", f"http_output.url={url}",
                              "-o", f"http_output.ca_cert={tls.ca}", "-o", "http_output.mtls=true",
                              "-o", f"http_output.client_cert={tls.client.cert}",
                              "-o", f"http_output.client_key={tls.client.key}")
        opened = marked_rule.open_marked(tmp_path, marker)
        hits = got.wait(lambda a: marker in a["output"])
        printed = sensor.rules_for(marker)
        summary = sensor.stop()
    assert len(hits) == 1 and printed == {marked_rule.NAME}
    check_falcosidekick_payload(hits[0])
    assert hits[0]["rule"] == marked_rule.NAME and hits[0]["tags"] == ["test"]
    assert hits[0]["output_fields"]["fd.name"] == str(opened)
    assert "outputs: http" in summary
    assert "sink http: offered" in summary and "dropped 0" in summary.split("sink http:")[1].splitlines()[0]
