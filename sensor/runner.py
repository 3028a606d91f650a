"""The sensor's main loop: kernel records -> state -> engine -> alerts.

It owns the life cycle users see: load rules, compile and attach the probe, seed the
process table from /proc, then poll the ring buffer until SIGINT/SIGTERM. Once a second
the rules input (`--rules` files, or a `--config` file and the rules it names) is read
again and reloaded when its content changed (mtimes mean nothing when kubelet swaps a
ConfigMap's `..data` symlink), or on SIGHUP; a missing or broken config, or rules with
errors, keep the rules already running. Lost records are checked once a second and
reported as Falco's internal drop alert (rate limited) and in the final summary.
"""

from __future__ import annotations

import collections
import json
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from falconer.engine import Alert, Engine, LoadResult
from falconer.sensor import alerts, cri, probe, record, syscalls
from falconer.sensor.config import ConfigError, RulesInput, Snapshot
from falconer.sensor.capture import CaptureWriter
from falconer.sensor.state import Process
from falconer.sensor.tracker import Tracker

POLL_MS = 100
MAX_COMPLAINTS = 20
CHECK_EVERY_S = 1.0


@dataclass
class SensorOptions:
    """Everything `falconer sensor` can be told."""

    rules: RulesInput
    json_output: bool = False           # forces JSON even when a config says text
    capture: Path | None = None
    all_events: bool = False
    buffer_pages: int | None = None     # None: the config's bufferSizeBytes, or the default
    cri_socket: str | None = None       # None: the first of cri.DEFAULT_SOCKETS that exists


@dataclass
class Stats:
    """Counters for the summary and the drop alert."""

    records: int = 0
    events: int = 0
    dropped_ring: int = 0
    dropped_stash: int = 0
    undecodable: int = 0
    failed: int = 0             # decoded, but state, capture or evaluation raised
    unwritten: int = 0          # alerts that could not be written to stdout
    alerts: collections.Counter[str] = field(default_factory=collections.Counter)


class Sensor:
    """One running sensor. `start()`, then `run()` until `stop()` (or a signal)."""

    def __init__(self, opts: SensorOptions, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> None:
        self.opts = opts
        self.out = out
        self.err = err
        self.engine = Engine(opts.rules.engine)
        self.json_output = opts.json_output
        self.stdout_enabled = True
        self.tracker = Tracker()
        self.stats = Stats()
        self.drop_bucket = alerts.TokenBucket()
        self.probe: probe.Probe | None = None
        self.capture: CaptureWriter | None = None
        self._capture_file: TextIO | None = None
        self._digest = ""              # of the input the running rules came from
        self._attempt = ""             # of the last input tried (digest or problem)
        self._stopping = False
        self._reload_requested = False
        self._last_ring = self._last_stash = 0

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load rules, compile and attach the probe, seed state. Raises on failure."""
        try:
            snap = self.opts.rules.read()
        except ConfigError as exc:
            raise probe.ProbeError(f"bad configuration: {exc}") from exc
        result = self._load(snap)
        if not result.ok:
            raise probe.ProbeError("rules have errors:\n" + _format_errors(result))
        self._apply_config(snap)
        probe.preflight()
        self._connect_cri()
        self.tracker.seed()
        self.probe = probe.Probe(self._buffer_pages(snap))
        self._apply_event_filter()
        self.probe.open(self._on_record)
        if self.opts.capture is not None:
            self._capture_file = open(self.opts.capture, "w", encoding="utf-8")  # noqa: SIM115
            self.capture = CaptureWriter(self._capture_file)
        self._say(f"falconer sensor: watching {len(self.probe.forwarded)} syscalls, "
                  f"{len(self.tracker.procs)} processes known")

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

    def run(self, duration_s: float | None = None) -> None:
        """Poll until stopped (or for `duration_s`), then drain and close."""
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
        """Detach the probe, close the capture and print the summary."""
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self._capture_file is not None:
            self._capture_file.close()
            self._capture_file = None
        self._say(self.summary())

    def summary(self) -> str:
        """Events seen, lost and alerts by rule, one line each."""
        s = self.stats
        lines = [f"events: {s.events} syscall events from {s.records} records",
                 f"dropped: {s.dropped_ring + s.dropped_stash} "
                 f"(ring buffer full {s.dropped_ring}, lost in flight {s.dropped_stash}, "
                 f"undecodable {s.undecodable}, drop alerts throttled "
                 f"{self.drop_bucket.throttled})",
                 f"events not evaluated (errors): {s.failed}",
                 f"alerts not written (stdout failed): {s.unwritten}",
                 f"processes evicted from the table: {self.tracker.procs.evicted}",
                 self.tracker.metadata.report(),
                 f"descriptors evicted from full fd tables: {Process.fds_evicted}, "
                 f"user/group names evicted from the cache: {self.tracker.users.evicted}",
                 f"alerts: {sum(s.alerts.values())}"]
        lines += [f"  {n:>8}  {rule}" for rule, n in s.alerts.most_common()]
        return "\n".join(lines)

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
        try:
            if self.capture is not None:
                self.capture.write(ev)
            ruleset = self.engine.ruleset
            found = ruleset.evaluate(ev) if ruleset is not None else []
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the sensor
            self.stats.failed += 1
            self._complain(f"{ev.type} event not evaluated: {exc!r}")
            return
        for alert in found:
            self.stats.alerts[alert.rule] += 1
            self._emit(alert)

    def _complain(self, msg: str) -> None:
        """Report a per-event problem, the first few times only (all are counted)."""
        if self.stats.undecodable + self.stats.failed <= MAX_COMPLAINTS:
            self._say(f"falconer sensor: {msg}")

    def _emit(self, alert: Alert) -> None:
        """Print one alert (already counted) when stdout is on; formatting an alert
        evaluates its output fields, so it is skipped when nothing would print it."""
        if not self.stdout_enabled:
            return
        if self.json_output:
            line = json.dumps(alert.to_json(self.tracker.hostname))
        else:
            line = alert.text_line()
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stdout loses the alert
            self.stats.unwritten += 1
            if self.stats.unwritten == 1:
                self._say(f"falconer sensor: alert not written to stdout: {exc!r}")

    # -- rules ----------------------------------------------------------------------------

    def _load(self, snap: Snapshot) -> LoadResult:
        """Load a snapshot; with changed engine options into a new engine, swapped in
        only when the load is clean (so errors keep the running rules either way)."""
        self._attempt = snap.digest
        engine = self.engine if snap.engine == self.engine.options else Engine(snap.engine)
        result = engine.load(list(snap.sources))
        if result.ok:
            self.engine = engine
            self._digest = snap.digest
        return result

    def _apply_config(self, snap: Snapshot) -> None:
        """Take the output settings of a loaded config; say what it asks that we ignore."""
        config = snap.config
        if config is None:
            return
        self.json_output = self.opts.json_output or config.json_output
        self.stdout_enabled = config.stdout_enabled
        if self.probe is not None:
            if self._buffer_pages(snap) != self.probe.buffer_pages:
                self._say("falconer sensor: the ring buffer size changed; it takes effect on restart")
            return
        if config.instance:
            self._say(f"falconer sensor: instance {config.instance} ({self.opts.rules.config})")
        if config.unsupported_outputs:
            self._say("falconer sensor: outputs not delivered by this sensor (ignored): "
                      + ", ".join(config.unsupported_outputs))

    def _buffer_pages(self, snap: Snapshot) -> int:
        """The command line's size wins over the config's (an operator's override)."""
        if self.opts.buffer_pages is not None:
            return self.opts.buffer_pages
        return snap.config.buffer_pages if snap.config else probe.DEFAULT_BUFFER_PAGES

    def _apply_event_filter(self) -> None:
        """Forward only what the running rules (plus state tracking) need, so that the
        kernel drops the rest before it costs a record."""
        assert self.probe is not None
        if self.opts.all_events:
            self.probe.set_forwarded(syscalls.all_names())
            return
        ruleset = self.engine.ruleset
        names = ruleset.event_types("syscall") if ruleset is not None else frozenset()
        self.probe.set_forwarded(syscalls.numbers_for(names))

    def _maybe_reload(self) -> None:
        """Reload when the input's content changed since the last attempt, or on request.

        A problem is reported once, not every second, until the input changes again.
        """
        forced, self._reload_requested = self._reload_requested, False
        try:
            snap = self.opts.rules.read()
        except ConfigError as exc:
            problem = f"problem:{exc}"
            if forced or problem != self._attempt:
                self._attempt = problem
                self._say(f"falconer sensor: reload failed, keeping the previous rules: {exc}")
            return
        if not forced and snap.digest == self._digest != self._attempt:
            self._attempt = snap.digest
            self._say("falconer sensor: the rules input is back to the running rules")
            return
        if not forced and snap.digest == self._attempt:
            return
        result = self._load(snap)
        if not result.ok:
            self._say("falconer sensor: reload failed, keeping the previous rules:\n"
                      + _format_errors(result))
            return
        self._apply_config(snap)
        self._apply_event_filter()
        counts = result.counts
        self._say(f"falconer sensor: rules reloaded ({counts.get('rules', 0)} rules), "
                  f"watching {len(self.probe.forwarded) if self.probe else 0} syscalls")

    # -- drops ----------------------------------------------------------------------------

    def _check_drops(self) -> None:
        """Take the kernel's loss counters; new losses become a (rate-limited) alert."""
        if self.probe is None:
            return
        ring, stash, _ = self.probe.counters()
        new_ring, new_stash = ring - self._last_ring, stash - self._last_stash
        self._last_ring, self._last_stash = ring, stash
        self.stats.dropped_ring, self.stats.dropped_stash = ring, stash
        if new_ring + new_stash and self.drop_bucket.take():
            alert = alerts.drop_alert(new_ring + new_stash, new_ring, new_stash, self.stats.events)
            self.stats.alerts[alert.rule] += 1
            self._emit(alert)

    def _say(self, msg: str) -> None:
        self.err.write(msg + "\n")
        self.err.flush()


def _format_errors(result: LoadResult) -> str:
    """A load's errors, one `file:line:col: CODE: message` line each (for stderr)."""
    return "\n".join(f"  {d.file}:{d.line}:{d.column}: {d.code}: {d.message}"
                     for d in result.errors)
