"""Prometheus /metrics of a real sensor: scraped over TLS while real syscalls move the
counters, with Falco's metric names and labels; and the settings' bad input."""

from __future__ import annotations

import hashlib
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from falconer.engine import Alert
from falconer.sensor.config import ConfigError, parse
from falconer.sensor.metrics import MetricsSettings, RuleMatches
from falconer.sensor.podmeta import PodMeta
from falconer_e2e import pki

RULE = """
- rule: Metrics marker opened
  desc: a test rule
  condition: evt.type in (open, openat, openat2) and fd.name startswith {prefix}
  output: "marker opened (file=%fd.name)"
  priority: WARNING
  tags: [filesystem, T1552.004]
"""


def scrape(url: str, ca: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels), over TLS verified against `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_metrics_move_with_real_syscalls(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(prefix=str(tmp_path / "m_")))
    ca, pair = pki.serving_pair(tmp_path / "tls", "sensor-metrics", ("localhost",), ("127.0.0.1",))
    sensor = start_sensor("--rules", str(rules), "--metrics-port", "0", "--metrics-address", "127.0.0.1",
                          "--metrics-tls-cert", str(pair.cert), "--metrics-tls-key", str(pair.key))
    assert sensor.wait_stderr("metrics on https://127.0.0.1:")
    (port,) = {m.group(1) for line in sensor.stderr if (m := re.search(r"metrics on https://127\.0\.0\.1:(\d+)", line))}
    url = f"https://127.0.0.1:{port}/metrics"

    before = scrape(url, ca)
    for i in range(3):
        (tmp_path / f"m_{marker}_{i}").write_text("x")
    assert len(sensor.rules_for(marker)) == 1
    after = scrape(url, ca)

    match = {"rule_name": "Metrics marker opened", "priority": "4", "source": "syscall",
             "tag_filesystem": "true", "tag_T1552_004": "true"}
    assert value(before, "falcosecurity_falco_rules_matches_total", **match) == 0
    assert value(after, "falcosecurity_falco_rules_matches_total", **match) == 3
    assert value(after, "falcosecurity_scap_n_evts_total") > value(before, "falcosecurity_scap_n_evts_total")
    assert value(after, "falconer_events_total", evt_type="openat") >= 3
    assert ("falcosecurity_scap_n_drops_total", ()) in after
    digest = hashlib.sha256(rules.read_bytes()).hexdigest()
    assert value(after, "falcosecurity_falco_sha256_rules_files_info", file_name="rules.yaml", sha256=digest) == 1
    loaded_ns = value(after, "falcosecurity_falco_reload_timestamp_nanoseconds")
    assert abs(loaded_ns / 1e9 - time.time()) < 120
    assert value(after, "falconer_sink_offered_total", sink="stdout") >= 3
    assert ("falconer_sink_queue_depth", (("sink", "stdout"),)) in after

    # Reloading changes the rules file hash and moves the reload timestamp.
    rules.write_text(RULE.format(prefix=str(tmp_path / "n_")))
    assert sensor.wait_stderr("rules reloaded")
    reloaded = scrape(url, ca)
    new_digest = hashlib.sha256(rules.read_bytes()).hexdigest()
    assert value(reloaded, "falcosecurity_falco_sha256_rules_files_info", sha256=new_digest) == 1
    assert value(reloaded, "falcosecurity_falco_sha256_rules_files_info", sha256=digest) == 0
    assert value(reloaded, "falcosecurity_falco_reload_timestamp_nanoseconds") > loaded_ns

    # TLS only: a plain HTTP request gets no metrics.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


def test_metrics_need_tls_unless_insecure(tmp_path):
    with pytest.raises(ValueError, match="tls: a certificate and a key file are required"):
        MetricsSettings(enabled=True).check("--metrics-")
    assert MetricsSettings(enabled=True, insecure=True).check("--metrics-").insecure


def test_config_metrics_are_parsed_and_checked(tmp_path):
    path = tmp_path / "falconer.yaml"
    good = parse("rulesFiles: []\nmetrics: {enabled: true, port: 9100, podLabels: true, tlsSecret: s}\n", path)
    assert MetricsSettings.from_config(good.file.metrics) == MetricsSettings(
        enabled=True, port=9100, pod_labels=True, cert_file=Path("/etc/falconer/metrics-tls/tls.crt"),
        key_file=Path("/etc/falconer/metrics-tls/tls.key"))
    with pytest.raises(ConfigError, match="metrics.tlsSecret: metrics.enabled needs metrics.tlsSecret"):
        parse("rulesFiles: []\nmetrics: {enabled: true}\n", path)
    with pytest.raises(ConfigError, match="metrics.port"):
        parse("rulesFiles: []\nmetrics: {enabled: true, port: x, tlsSecret: s}\n", path)


def _alert() -> Alert:
    return Alert(rule="R", priority="Critical", source="syscall", time_ns=0, output="o",
                 output_fields={}, tags=["a"])


def test_pod_labels_are_capped_and_the_overflow_counted():
    matches = RuleMatches(pod_labels=True, max_pod_series=2)
    for i in range(4):
        matches.count(_alert(), PodMeta(namespace="ns", name=f"p{i}", uid=str(i)))
    matches.count(_alert(), None)
    samples = {tuple(sorted(s.labels.items())): s.value for s in matches.family().samples}
    base = {"rule_name": "R", "priority": "2", "source": "syscall", "tag_a": "true"}
    assert samples[tuple(sorted({**base, "k8s_ns_name": "ns", "k8s_pod_name": "p0"}.items()))] == 1
    assert samples[tuple(sorted({**base, "k8s_ns_name": "ns", "k8s_pod_name": "p1"}.items()))] == 1
    assert samples[tuple(sorted({**base, "k8s_ns_name": "", "k8s_pod_name": ""}.items()))] == 3  # 2 over + host
    assert matches.overflow == 2
