"""The sensor's event loop: kernel records -> state -> engine -> sinks.

It owns the life cycle users see: load rules, compile and attach the probe, seed the
process table from /proc, start the sinks, then poll the ring buffer until SIGINT/SIGTERM.
The parts it drives live in their own modules: the rules watcher
(`rules_watcher.RulesWatcher`, reload decisions), the sinks (`sinks/`: stdout, Kubernetes
Events, FalcoAlerts, the status report), and drop accounting (`drops.DropAccount`).

Once a second (or on SIGHUP) the watcher looks at the rules input; a clean load is
switched in by `switch_rules`, which swaps the whole ruleset and the kernel-side syscall
set at once without a gap; a broken one keeps the running rules, raises the internal
"rules reload failed" alert and shows in the node's status report.
"""

from __future__ import annotations

import collections
import signal
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from falconer import sensorconfig
from falconer.engine import Alert, Engine
from falconer.sensor import alerts, cri, kube, lastgood, metadata, probe, record
from falconer.sensor.capture import CaptureWriter
from falconer.sensor.config import DEFAULT_CLUSTER_DOMAIN, RulesInput, SensorConfig, Snapshot
from falconer.sensor.drops import DropAccount
from falconer.sensor.metrics import (MetricsServer, MetricsSettings, Readings, RuleMatches, SensorCollector,
                                     rules_file_hashes)
from falconer.sensor.event import SensorEvent
from falconer.sensor.names import NameResolver, host_names, rule_names
from falconer.sensor.podmeta import PodMeta
from falconer.sensor.podwatch import PodWatch
from falconer.sensor.rules_watcher import Failed, Loaded, RulesError, RulesWatcher
from falconer.sensor.servicenames import ServiceNames
from falconer.sensor.sinks import outputs as stream_outputs
from falconer.sensor.sinks.base import Delivery, Sink, SinkSet
from falconer.sensor.sinks.events import EventsSink
from falconer.sensor.sinks.falcoalerts import FalcoAlertsSink
from falconer.sensor.sinks.status import StatusReporter
from falconer.sensor.sinks.stdout import StdoutSink
from falconer.sensor.state import Process
from falconer.sensor.tracker import Tracker
from falconer.sensorreport import rule_key

#: The longest a record waits in the ring buffer unannounced (Probe.poll), milliseconds.
POLL_MS = 50
MAX_COMPLAINTS = 20
CHECK_EVERY_S = 1.0
#: Seconds the sinks get at shutdown to deliver what they hold.
CLOSE_TIMEOUT_S = 5.0

#: The pod an event came from (None: the host, or not known); `metadata.pod_of` by default.
PodOf = Callable[[SensorEvent], PodMeta | None]


@dataclass
class SensorOptions:
    """Everything `falconer sensor` can be told."""

    rules: RulesInput
    json_output: bool = False           # forces JSON even when a config says text
    capture: Path | None = None
    all_events: bool = False
    buffer_pages: int | None = None     # None: the config's bufferSizeBytes, or the default
    kubeconfig: Path | None = None      # None: $KUBECONFIG, else in-cluster
    node_name: str | None = None        # None: $NODE_NAME
    cri_socket: str | None = None       # None: the first of cri.DEFAULT_SOCKETS that exists
    outputs: stream_outputs.OutputSettings = field(default_factory=stream_outputs.OutputSettings)  # -o *_output.*
    tls_root: Path = Path(sensorconfig.TLS_ROOT)   # the outputs' TLS Secrets, one folder each
    state_dir: Path | None = None       # where the last good rules are kept (sensor/lastgood.py)
    metrics: MetricsSettings | None = None  # None: the config's `metrics` (off without one)


@dataclass
class Stats:
    """Counters for the summary."""

    records: int = 0
    events: int = 0
    undecodable: int = 0
    failed: int = 0             # decoded, but state, capture or evaluation raised
    kept_in_kernel: int = 0     # records the rule-derived kernel filter held back (no loss)
    by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    alerts: collections.Counter[str] = field(default_factory=collections.Counter)


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


class Sensor:
    """One running sensor. `start()`, then `run()` until `stop()` (or a signal), `close()`."""

    def __init__(self, opts: SensorOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                 pod_of: PodOf = metadata.pod_of) -> None:
        self.opts = opts
        self.err = err
        self.pod_of = pod_of
        self.engine = Engine(opts.rules.engine)
        self.watcher = RulesWatcher(opts.rules, self._say)
        self.tracker = Tracker()
        self.stats = Stats()
        self.drops = DropAccount()
        self.stdout = StdoutSink(out, err, self.tracker.hostname, json_output=opts.json_output)
        self.sinks = SinkSet([self.stdout])
        self.status: StatusReporter | None = None
        self.pod_watch: PodWatch | None = None
        self.services: ServiceNames | None = None
        self.resolver = NameResolver()
        self._names: frozenset[str] = frozenset()
        self.tracker.metadata.names.resolver = self.resolver
        self.probe: probe.Probe | None = None
        self.capture: CaptureWriter | None = None
        self._api_client: Any = None
        self._config: SensorConfig | None = None
        self._stopping = False
        self._reload_requested = False
        self.matches = RuleMatches()
        self.collector = SensorCollector(self.readings, self.matches, self.tracker.hostname)
        self.metrics: MetricsServer | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load rules, start the sinks, compile and attach the probe, seed state.
        Raises probe.ProbeError on failure."""
        loaded, start_error = self._first_rules()
        self.engine = loaded.engine
        self._apply_config(loaded.snapshot)
        self._start_outputs(loaded.snapshot.config)
        self._start_api_sinks(loaded.snapshot.config)
        self._start_metrics(loaded.snapshot.config)
        self._want_names()
        self.resolver.start()
        probe.preflight()
        self._connect_cri()
        self.tracker.seed()
        self.probe = probe.Probe(self._buffer_pages(loaded.snapshot))
        self._apply_filter()
        self.probe.open(self._on_record)
        if self.opts.capture is not None:
            self.capture = CaptureWriter(self.opts.capture, self.err)
        self._report_loaded(loaded)
        if start_error:
            self._reload_failed(start_error)
        self._say_if_no_rules(loaded)
        if self.probe.missing_modules:
            self._say("falconer sensor: no BTF for kernel module(s) "
                      f"{', '.join(sorted(self.probe.missing_modules))} (not loaded at start): "
                      "proc.is_exe_upper_layer and proc.is_exe_lower_layer stay false")
        self._say(f"falconer sensor: watching {len(self.probe.forwarded)} syscalls, "
                  f"{len(self.tracker.procs)} processes known")

    def _say_if_no_rules(self, loaded: Loaded) -> None:
        """Running with no rules files (an instance that selects no FalcoRule) is allowed,
        and said once per load."""
        config = loaded.snapshot.config
        if config is not None and not config.rules_files:
            self._say("falconer sensor: no rules: the configuration names no rules files "
                      "(the FalcoInstance selects no FalcoRule); watching process state only")

    def _connect_cri(self) -> None:
        """Give the metadata resolver the container runtime's socket, when there is one."""
        path = self.opts.cri_socket or next(
            (p for p in cri.DEFAULT_SOCKETS if Path(p).is_socket()), None)
        if path is None:
            self._say("falconer sensor: no CRI socket; container fields beyond container.id "
                      "come only from the pod watch")
            return
        client = cri.CriClient(path)
        try:
            version = client.version()
        except cri.CriError as exc:
            self._say(f"falconer sensor: CRI socket {path} does not answer ({exc}); "
                      "asking again per container")
        else:
            self._say(f"falconer sensor: container metadata from {version.runtime_name} "
                      f"{version.runtime_version} ({path})")
        self.tracker.metadata.cri = client

    def install_signals(self) -> None:
        """SIGINT/SIGTERM stop the loop; SIGHUP reloads the rules."""
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def stop(self) -> None:
        """Ask the loop to finish after the current poll."""
        self._stopping = True

    def request_reload(self) -> None:
        """Ask for a rules reload at the next check."""
        self._reload_requested = True

    def api_client(self) -> Any:
        """The sensor's `kubernetes.client.ApiClient` (made on first use, see
        `kube.api_client`); raises kube.KubeConfigError when there is no connection."""
        if self._api_client is None:
            self._api_client = kube.api_client(self.opts.kubeconfig)
        return self._api_client

    def run(self, duration_s: float | None = None) -> None:
        """Poll until stopped (or for `duration_s`), then drain."""
        assert self.probe is not None, "start() first"
        end = None if duration_s is None else time.monotonic() + duration_s
        next_check = time.monotonic() + CHECK_EVERY_S
        while not self._stopping and (end is None or time.monotonic() < end):
            self.probe.poll(POLL_MS)
            now = time.monotonic()
            if now >= next_check or self._reload_requested:
                next_check = now + CHECK_EVERY_S
                self._check_drops()
                self._maybe_reload()
        self.probe.poll(0)
        self._check_drops()

    def close(self) -> None:
        """Detach the probe, close the capture and the sinks, print the summary."""
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self.capture is not None:
            self.capture.close()
        if self.pod_watch is not None:
            self.pod_watch.stop()
        if self.services is not None:
            self.services.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.resolver.stop()
        self.sinks.close(CLOSE_TIMEOUT_S)
        self._say(self.summary())

    def summary(self) -> str:
        """Events seen, lost, delivered by each sink, and alerts by rule, one line each."""
        s, k = self.stats, self.drops.kernel
        lines = [f"events: {s.events} syscall events from {s.records} records",
                 f"dropped: {k.ring + s.undecodable} (ring buffer full {k.ring}, "
                 f"undecodable {s.undecodable}, drop alerts throttled {self.drops.bucket.throttled})",
                 f"kept in the kernel by the rule-derived filter: {s.kept_in_kernel}",
                 f"events not evaluated (errors): {s.failed}",
                 f"alerts not written (stdout failed): {self.stdout.stats().dropped}",
                 *([f"capture: {self.capture.written} events written, {self.capture.lost} lost "
                    f"(refused by the file system)"] if self.capture is not None else []),
                 f"processes evicted from the table: {self.tracker.procs.evicted}",
                 self.tracker.metadata.report(),
                 self._names_report(),
                 f"descriptors evicted from full fd tables: {Process.fds_evicted}, "
                 f"user/group names evicted from the cache: {self.tracker.users.evicted}"]
        for name, st in self.sinks.stats().items():
            if name != "stdout":
                lines.append(f"sink {name}: offered {st.offered}, delivered {st.delivered}, "
                             f"dropped {st.dropped}, API requests {st.writes}, failed attempts {st.failures}")
        lines.append(f"alerts: {sum(s.alerts.values())}")
        lines += [f"  {n:>8}  {rule}" for rule, n in s.alerts.most_common()]
        return "\n".join(lines)

    def _names_report(self) -> str:
        r = self.resolver.stats
        line = (f"address names (fd.*ip.name): {len(self.resolver.wanted)} names for the host "
                f"resolver, {r.rounds} rounds, {r.lookups} lookups, {r.failures} failed, "
                f"{r.skipped} not resolved (over the limit)")
        if self.services is not None:
            s = self.services.stats
            line += (f"; Service watch: {len(self.services.addresses)} ClusterIPs, lists "
                     f"{s.lists}, 410 Gone {s.gone}, failures {s.failures}, events {s.events}")
        return line

    # -- per record -----------------------------------------------------------------------

    def _on_record(self, raw: bytes) -> None:
        """One ring-buffer record: state, then rules. Runs inside bcc's ctypes callback,
        where an escaping exception would be printed and the record silently lost, so
        every failure is counted here instead."""
        self.stats.records += 1
        try:
            ev = self.tracker.handle(record.Record.decode(raw))
        except (ValueError, IndexError, KeyError, UnicodeError, struct.error) as exc:
            self.stats.undecodable += 1
            self._complain(f"undecodable record skipped: {exc!r}")
            return
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the sensor
            self.stats.failed += 1
            self._complain(f"record not processed: {exc!r}")
            return
        if ev is None:
            return
        self.stats.events += 1
        self.stats.by_type[ev.type] += 1
        try:
            if self.capture is not None:
                self.capture.write(ev)
            ruleset = self.engine.ruleset
            found = ruleset.evaluate(ev) if ruleset is not None else []
            pod = self.pod_of(ev) if found else None
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the sensor
            self.stats.failed += 1
            self._complain(f"{ev.type} event not evaluated: {exc!r}")
            return
        for alert in found:
            self.emit(alert, pod)

    def _complain(self, msg: str) -> None:
        """Report a per-event problem, the first few times only (all are counted)."""
        if self.stats.undecodable + self.stats.failed <= MAX_COMPLAINTS:
            self._say(f"falconer sensor: {msg}")

    def emit(self, alert: Alert, pod: PodMeta | None = None) -> None:
        """Count one alert and hand it to every sink."""
        self.stats.alerts[rule_key(alert.namespace, alert.rule)] += 1
        self.matches.count(alert, pod)
        self.sinks.deliver(Delivery(alert, pod))

    # -- rules ----------------------------------------------------------------------------

    def _wanted(self, engine: Engine) -> frozenset[str] | None:
        """The syscall `evt.type`s the rules need (None: all)."""
        if self.opts.all_events:
            return None
        return engine.ruleset.event_types("syscall") if engine.ruleset is not None else frozenset()

    def _apply_filter(self) -> None:
        """Forward exactly what the running rules and the state tracker need, with the
        rule-derived path filter in the kernel (`sensor/kfilter.py`): the one call into
        the probe's filter API outside a switch."""
        if self.probe is None:
            return
        ruleset = self.engine.ruleset
        self.probe.apply_ruleset(ruleset, all_events=self.opts.all_events)
        self._say(f"falconer sensor: {self.probe.filter.describe()}")

    def switch_rules(self, loaded: Loaded) -> None:
        """Run `loaded` instead of the current rules, with no gap: the kernel first
        forwards what either ruleset needs, records already forwarded are evaluated by
        the rules they were forwarded for, then the ruleset is swapped (between two
        events) and the kernel narrowed to what the new rules need."""
        old, new = self._wanted(self.engine), self._wanted(loaded.engine)
        if self.probe is not None:
            self.probe.forward_unfiltered(_union(old, new))
            self.probe.poll(0)
        self.engine = loaded.engine
        self._apply_filter()
        self.watcher.switched(loaded)
        self._keep(loaded)
        self._apply_config(loaded.snapshot)
        self._want_names()
        self._report_loaded(loaded)

    def _want_names(self) -> None:
        """Resolve the names the running rules compare fd.*ip.name with (those in the
        cluster's DNS zone come from the Service watch instead)."""
        domain = self._config.cluster_domain if self._config is not None else DEFAULT_CLUSTER_DOMAIN
        names = rule_names(self.engine.ruleset)
        host = host_names(names, domain)
        if host != self.resolver.wanted:
            self.resolver.want(host)
        if names != self._names:
            self._names = names
            source = ("from the Service watch" if self.services is not None
                      else "unanswered (no Kubernetes connection)")
            self._say(f"falconer sensor: fd.*ip.name: {len(host)} names for the host resolver, "
                      f"{len(names - host)} under {domain} {source}")

    def _maybe_reload(self) -> None:
        """Ask the watcher; switch to a clean load, report a failed one."""
        forced, self._reload_requested = self._reload_requested, False
        outcome = self.watcher.check(forced)
        if isinstance(outcome, Failed):
            self._say(f"falconer sensor: reload failed, keeping the previous rules:\n{outcome.reason}")
            self._reload_failed(outcome.reason)
        elif isinstance(outcome, Loaded):
            self.switch_rules(outcome)
            self._say_if_no_rules(outcome)
            self._say(f"falconer sensor: rules reloaded ({outcome.result.counts.get('rules', 0)} rules), "
                      f"watching {len(self.probe.forwarded) if self.probe else 0} syscalls")

    def _reload_failed(self, reason: str) -> None:
        """Raise the internal alert and report the reason (the running rules stay)."""
        self.emit(alerts.reload_failed_alert(reason))
        if self.status is not None:
            self.status.reload_failed(reason)

    def _first_rules(self) -> tuple[Loaded, str]:
        """The rules to start with, and why the given ones could not be loaded ("" when
        they could): with --state-dir, a config that does not load falls back to the
        last good rules kept there. Raises probe.ProbeError when nothing loads."""
        try:
            loaded = self.watcher.first()
        except RulesError as exc:
            kept = lastgood.kept_config(self.opts.state_dir) if self.opts.state_dir else None
            if kept is None:
                raise probe.ProbeError(str(exc)) from exc
            try:
                loaded = RulesWatcher(RulesInput(config=kept), self._say).first()
            except RulesError:
                raise probe.ProbeError(str(exc)) from exc
            self._say(f"falconer sensor: {exc}\nfalconer sensor: running the last good rules kept in "
                      f"{kept.parent.resolve()} until {self.watcher.rules.describe()} loads")
            return loaded, str(exc)
        self._keep(loaded)
        return loaded, ""

    def _keep(self, loaded: Loaded) -> None:
        """Keep a clean load of --config as the last good rules (with --state-dir)."""
        config = self.opts.rules.config
        if self.opts.state_dir is None or config is None:
            return
        try:
            lastgood.keep(self.opts.state_dir, config, loaded.snapshot)
        except lastgood.KeepError as exc:
            self._say(f"falconer sensor: {exc}")

    def _report_loaded(self, loaded: Loaded) -> None:
        self.collector.rules_loaded(rules_file_hashes(
            (src.name, src.text) for src in loaded.snapshot.sources if not isinstance(src, Path)))
        config = loaded.snapshot.config
        if self.status is not None and config is not None:
            self.status.loaded(config.rules_hash, config.falco_rules)

    def _apply_config(self, snap: Snapshot) -> None:
        """Take the output settings of a loaded config; say what it asks that we ignore."""
        config = snap.config
        if config is None:
            return
        self.stdout.json_output = self.opts.json_output or config.json_output
        self.stdout.enabled = config.stdout_enabled
        before, self._config = self._config, config
        if before is not None:
            if self.probe is not None and self._buffer_pages(snap) != self.probe.buffer_pages:
                self._say("falconer sensor: the ring buffer size changed; it takes effect on restart")
            if _api_outputs(before) != _api_outputs(config):
                self._say("falconer sensor: the Kubernetes outputs changed; they take effect on restart")
            if _stream_outputs(before) != _stream_outputs(config):
                self._say("falconer sensor: the http, grpc, file or program outputs changed; "
                          "they take effect on restart")
            return
        if config.instance:
            self._say(f"falconer sensor: instance {config.instance} ({self.opts.rules.config})")

    def _start_outputs(self, config: SensorConfig | None) -> None:
        """The HTTP, gRPC, file and program outputs of the config (else of the command
        line); ProbeError when one cannot start (bad TLS files, an address in use)."""
        try:
            wanted = (stream_outputs.from_config(config.outputs, self.opts.tls_root) if config is not None
                      else self.opts.outputs)
            started = stream_outputs.sinks(wanted, self.tracker.hostname, self.err)
            for sink in started:
                sink.start()
                self.sinks.sinks.append(sink)
        except (ValueError, RuntimeError, OSError) as exc:
            raise probe.ProbeError(f"output not started: {exc}") from exc
        if started:
            self._say(f"falconer sensor: outputs: {', '.join(wanted.configured())}")

    def _start_api_sinks(self, config: SensorConfig | None) -> None:
        """The Kubernetes sinks a config with an instance asks for (and the status report);
        without a connection they are named as not delivered, and the sensor goes on."""
        if config is None or not config.instance_namespace:
            return
        try:
            client = kube.Kube(self.api_client())
            node = kube.node_name(self.opts.node_name)
        except kube.KubeConfigError as exc:
            wanted = [n for n, on in (("kubernetesEvents", config.kubernetes_events),
                                      ("falcoAlerts", config.falco_alerts), ("status", True)) if on]
            self._say(f"falconer sensor: not delivered: {', '.join(wanted)}: {exc}")
            return
        self.pod_watch = PodWatch(self.api_client(), node)
        self.pod_watch.start()
        self.tracker.metadata.follow(self.pod_watch)
        self.services = ServiceNames(self.api_client(), config.cluster_domain)
        self.services.start()
        self.tracker.metadata.names.services = self.services
        ns, name = config.instance_namespace, config.instance_name
        api: list[Sink] = []
        if config.kubernetes_events:
            api.append(EventsSink(client, node, config.rate_per_second, config.rate_burst, err=self.err))
        if config.falco_alerts:
            api.append(FalcoAlertsSink(client, node, ns, name, config.rate_per_second, config.rate_burst,
                                       err=self.err))
        self.status = StatusReporter(client, node, ns, name, self._drop_counts, err=self.err)
        api.append(self.status)
        for sink in api:
            sink.start()
        self.sinks.sinks.extend(api)

    def _start_metrics(self, config: SensorConfig | None) -> None:
        """Serve /metrics when the command line or the config asks (sensor/metrics.py);
        a listener that cannot start stops the sensor's start (OSError)."""
        settings = self.opts.metrics or (MetricsSettings.from_config(config.file.metrics)
                                         if config is not None else MetricsSettings())
        if not settings.enabled:
            return
        self.matches.pod_labels = settings.pod_labels
        self.matches.max_pod_series = settings.max_pod_series
        self.metrics = MetricsServer(settings, self.collector)
        port = self.metrics.start()
        self._say(f"falconer sensor: metrics on {self.metrics.scheme}://{settings.address}:{port}/metrics")

    def readings(self) -> Readings:
        """The counters the metrics endpoint shows (called on its thread: copies only)."""
        s = self.stats
        return Readings(
            records=s.records, events_by_type=dict.copy(s.by_type), kernel_filtered=s.kept_in_kernel,
            ring_drops=self.drops.kernel.ring, undecodable=s.undecodable, failed=s.failed,
            enrichment_misses=self.tracker.metadata.stats.misses,
            sinks=self.sinks.stats(), queue_depths={k.name: k.depth() for k in list(self.sinks.sinks)})

    def _drop_counts(self) -> dict[str, int]:
        """Losses for the status report: kernel records, capture lines (with
        --capture), then alerts per sink."""
        capture = {"capture": self.capture.lost} if self.capture is not None else {}
        return {"kernel": self.drops.kernel.ring, **capture, **self.sinks.drops()}

    def _buffer_pages(self, snap: Snapshot) -> int:
        """The command line's size wins over the config's (an operator's override)."""
        if self.opts.buffer_pages is not None:
            return self.opts.buffer_pages
        return snap.config.buffer_pages if snap.config else probe.DEFAULT_BUFFER_PAGES

    # -- drops ----------------------------------------------------------------------------

    def _check_drops(self) -> None:
        """Take the kernel's loss counters; new losses may raise the drop alert."""
        if self.probe is None:
            return
        counters = self.probe.counters()
        self.stats.kept_in_kernel = counters.filtered
        alert = self.drops.check(counters.ring_full, self.stats.events)
        if alert is not None:
            self.emit(alert)

    def _say(self, msg: str) -> None:
        self.err.write(msg + "\n")
        self.err.flush()


def _api_outputs(config: SensorConfig) -> tuple[object, ...]:
    """The settings the Kubernetes sinks were started with."""
    return (config.instance, config.kubernetes_events, config.falco_alerts,
            config.rate_per_second, config.rate_burst, config.cluster_domain)


def _stream_outputs(config: SensorConfig) -> tuple[object, ...]:
    """The settings the http, grpc, file and program outputs were started with."""
    o = config.outputs
    return (o.http, o.grpc, o.file, o.program)
