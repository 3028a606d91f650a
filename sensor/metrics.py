"""Prometheus metrics of one sensor, served on `/metrics` (prometheus-client).

Names follow Falco's Prometheus exporter where Falco has the metric (falco.org "Falco
Metrics", the Prometheus blocks of each group; Falco 0.41): rule matches
(`falcosecurity_falco_rules_matches_total{rule_name, priority, source, tag_<tag>="true"}`,
`priority` as Falco's number, Emergency 0 .. Debug 7), kernel drops
(`falcosecurity_scap_n_drops_total`), records read (`falcosecurity_scap_n_evts_total`),
the loaded rules files (`falcosecurity_falco_sha256_rules_files_info{file_name, sha256}`),
the last (re)load and the start (`falcosecurity_falco_reload_timestamp_nanoseconds`,
`..._start_timestamp_nanoseconds`), the version (`falcosecurity_falco_version_info`) and
the outputs' losses (`falcosecurity_falco_outputs_queue_num_drops_total`). Falconer's own
are `falconer_*`: events by type, kernel-filter hits, enrichment misses, per sink queue
depth, delivered, dropped, API writes and failed attempts.

Unlike Falco, a match may also carry `k8s_ns_name`/`k8s_pod_name` (`podLabels`); the
distinct pods are capped (`maxPodSeries`): matches of pods beyond the cap are counted
with empty pod labels and in `falconer_rules_matches_pod_overflow_total`.

Values are read from the sensor when scraped (a `Readings` snapshot), so nothing is
counted twice; only rule matches are counted here, as they happen (`RuleMatches`).
The listener serves TLS from a certificate and key file (a FalcoInstance mounts them from
a Secret); plain HTTP only when asked for explicitly (`falconer sensor --metrics-insecure`).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from falconer import __version__
from falconer.engine import Alert
from falconer.engine.collector import PRIORITIES
from falconer.sensor.podmeta import PodMeta
from falconer.sensorconfig import DEFAULT_METRICS_PORT, Metrics

if TYPE_CHECKING:
    from falconer.sensor.sinks.base import SinkStats

#: Distinct (namespace, pod) pairs rule matches are labelled with before overflowing.
DEFAULT_MAX_POD_SERIES = 500
_HELP = "https://falco.org/docs/metrics/"
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class MetricsConfigError(ValueError):
    """A metrics setting of the command line is malformed (the message names it)."""


@dataclass(frozen=True)
class MetricsSettings:
    """How this sensor serves /metrics: from falconer.yaml's `metrics`
    (`sensorconfig.Metrics`, via `from_config`) or from the command line."""

    enabled: bool = False
    address: str = "0.0.0.0"
    port: int = DEFAULT_METRICS_PORT
    cert_file: Path | None = None           # PEM; required unless insecure
    key_file: Path | None = None
    insecure: bool = False                  # plain HTTP: command line only, never a config
    pod_labels: bool = False                # k8s_ns_name/k8s_pod_name on rule matches
    max_pod_series: int = DEFAULT_MAX_POD_SERIES

    def check(self, where: str) -> MetricsSettings:
        """Itself, or MetricsConfigError when enabled without TLS files or with a bad port."""
        if not self.enabled:
            return self
        if not 0 <= self.port <= 65535:
            raise MetricsConfigError(f"{where}port: expected 0..65535, got {self.port}")
        if not self.insecure and (self.cert_file is None or self.key_file is None):
            raise MetricsConfigError(f"{where}tls: a certificate and a key file are required "
                                     "(plain HTTP only with falconer sensor --metrics-insecure)")
        return self

    @classmethod
    def from_config(cls, metrics: Metrics) -> MetricsSettings:
        """A FalcoInstance's settings: TLS files where its pods mount the Secret."""
        cert, key = metrics.tls_files()
        return cls(enabled=metrics.enabled, port=metrics.port, pod_labels=metrics.pod_labels,
                   max_pod_series=metrics.max_pod_series, cert_file=cert, key_file=key)


@dataclass(frozen=True)
class Readings:
    """The sensor's counters at scrape time (cumulative since start unless said)."""

    records: int                             # ring-buffer records read
    events_by_type: Mapping[str, int]        # decoded syscall events by evt.type
    kernel_filtered: int                     # records the rule-derived kernel filter kept back
    ring_drops: int                          # records lost, ring buffer full
    undecodable: int
    failed: int                              # events whose processing raised
    enrichment_misses: int                   # metadata lookups that found nothing
    sinks: Mapping[str, SinkStats]
    queue_depths: Mapping[str, int]          # alerts waiting per sink now


@dataclass
class _Loaded:
    files: tuple[tuple[str, str], ...] = ()  # (file name, sha256 of its text)
    at_ns: int = 0


def rules_file_hashes(sources: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """(path, text) pairs -> (file name, sha256 hex of the UTF-8 text), as Falco labels them."""
    return tuple((Path(p).name, hashlib.sha256(t.encode()).hexdigest()) for p, t in sources)


@dataclass
class RuleMatches:
    """Rule matches by (rule, priority, source, tags, namespace, pod); thread-safe."""

    pod_labels: bool = False
    max_pod_series: int = DEFAULT_MAX_POD_SERIES
    overflow: int = 0
    _counts: dict[tuple[str, str, str, tuple[str, ...], str, str], int] = field(default_factory=dict)
    _pods: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, alert: Alert, pod: PodMeta | None) -> None:
        """Count one match; its pod's labels only while under the pod cap."""
        ns, name = (pod.namespace, pod.name) if pod is not None and self.pod_labels else ("", "")
        with self._lock:
            if name and (ns, name) not in self._pods:
                if len(self._pods) >= self.max_pod_series:
                    self.overflow += 1
                    ns = name = ""
                else:
                    self._pods.add((ns, name))
            key = (alert.rule, alert.priority, alert.source, tuple(alert.tags), ns, name)
            self._counts[key] = self._counts.get(key, 0) + 1

    def family(self) -> Metric:
        """falcosecurity_falco_rules_matches_total, one sample per key (labels vary with
        the rule's tags, so the samples are built by hand)."""
        fam = CounterMetricFamily("falcosecurity_falco_rules_matches", _HELP)
        with self._lock:
            items = list(self._counts.items())
        for (rule, priority, source, tags, ns, pod), n in items:
            labels = {"rule_name": rule, "source": source,
                      "priority": str(PRIORITIES.index(priority)) if priority in PRIORITIES else priority}
            labels |= {"tag_" + _LABEL_CHARS.sub("_", t): "true" for t in tags}
            if self.pod_labels:
                labels |= {"k8s_ns_name": ns, "k8s_pod_name": pod}
            fam.samples.append(Sample("falcosecurity_falco_rules_matches_total", labels, n, None, None))
        return fam


class SensorCollector(Collector):
    """Turns `Readings` (asked at every scrape) and the match counts into families."""

    def __init__(self, read: Callable[[], Readings], matches: RuleMatches, hostname: str) -> None:
        self.read = read
        self.matches = matches
        self.hostname = hostname
        self.loaded = _Loaded()
        self.start_ns = time.time_ns()

    def rules_loaded(self, files: tuple[tuple[str, str], ...]) -> None:
        """A (re)load switched in these rules files (name, sha256) now."""
        self.loaded = _Loaded(files, time.time_ns())

    def collect(self) -> Iterator[Metric]:
        """Every family, from one consistent reading."""
        r, loaded = self.read(), self.loaded
        yield _gauge("falcosecurity_falco_version_info", {"version": __version__}, 1)
        yield _gauge("falcosecurity_evt_hostname_info", {"hostname": self.hostname}, 1)
        files = GaugeMetricFamily("falcosecurity_falco_sha256_rules_files_info", _HELP,
                                  labels=["file_name", "sha256"])
        for name, digest in loaded.files:
            files.add_metric([name, digest], 1)
        yield files
        yield _gauge("falcosecurity_falco_reload_timestamp_nanoseconds", {}, loaded.at_ns)
        yield _gauge("falcosecurity_falco_start_timestamp_nanoseconds", {}, self.start_ns)
        yield self.matches.family()
        yield _counter("falcosecurity_scap_n_evts", {}, r.records)
        yield _counter("falcosecurity_scap_n_drops", {}, r.ring_drops)
        yield _counter("falcosecurity_falco_outputs_queue_num_drops", {},
                       sum(s.dropped for s in r.sinks.values()))
        yield from self._falconer(r)

    def _falconer(self, r: Readings) -> Iterator[Metric]:
        events = CounterMetricFamily("falconer_events", "Syscall events decoded, by evt.type.",
                                     labels=["evt_type"])
        for evt_type, n in sorted(r.events_by_type.items()):
            events.add_metric([evt_type], n)
        yield events
        yield _counter("falconer_kernel_filter_kept", {}, r.kernel_filtered,
                       "Records the rule-derived kernel filter kept in the kernel (no loss).")
        yield _counter("falconer_events_undecodable", {}, r.undecodable, "Records that could not be decoded.")
        yield _counter("falconer_events_failed", {}, r.failed, "Events whose processing raised.")
        yield _counter("falconer_enrichment_misses", {}, r.enrichment_misses,
                       "Container/pod metadata lookups that found nothing.")
        yield _counter("falconer_rules_matches_pod_overflow", {}, self.matches.overflow,
                       "Rule matches counted without pod labels: over maxPodSeries distinct pods.")
        depth = GaugeMetricFamily("falconer_sink_queue_depth", "Alerts waiting in a sink's queue.",
                                  labels=["sink"])
        for sink, n in sorted(r.queue_depths.items()):
            depth.add_metric([sink], n)
        yield depth
        for key, help_text in (("offered", "Alerts offered to a sink."),
                               ("delivered", "Alerts a sink delivered."),
                               ("dropped", "Alerts a sink lost (queue full, refused, shutdown)."),
                               ("writes", "API requests a sink made."),
                               ("failures", "Failed delivery attempts of a sink (retried).")):
            fam = CounterMetricFamily(f"falconer_sink_{key}", help_text, labels=["sink"])
            for sink, st in sorted(r.sinks.items()):
                fam.add_metric([sink], getattr(st, key))
            yield fam


def _gauge(name: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, _HELP, labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


def _counter(name: str, labels: dict[str, str], value: float, help_text: str = _HELP) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, help_text, labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


class MetricsServer:
    """The /metrics listener of one sensor (a prometheus-client thread)."""

    def __init__(self, settings: MetricsSettings, collector: SensorCollector) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen; returns the bound port (settings.port 0 picks a free one). OSError
        (address in use, unreadable certificate) propagates."""
        s = self.settings
        tls: dict[str, Any] = {} if s.insecure else {"certfile": str(s.cert_file), "keyfile": str(s.key_file)}
        self._server, self._thread = start_http_server(s.port, s.address, registry=self.registry, **tls)
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        """https, or http when insecure."""
        return "http" if self.settings.insecure else "https"

    def stop(self) -> None:
        """Stop listening (waits for the serving thread)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = None
