"""The sink interface, the API sinks' worker loop, and the counters every sink keeps.

An API sink (`ApiSink`) takes an alert in `offer()` without blocking: into a bounded
queue, or counted as dropped when the queue is full. Its worker thread absorbs queued
alerts into in-memory aggregates (so repeated alerts cost one write, and counts stay
exact while writes wait) and flushes them every `flush_every_s`. When the API server is
unavailable the flush is retried with exponential backoff (`BACKOFF_S`, never a tight
loop); when it answers again the sink says once on stderr how long it was gone and what
it had to drop. Losses are counted, never silent: queue full, aggregate table full, or
an alert the API server refused.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TextIO, TypeVar

from falconer.engine import Alert
from falconer.sensor.kube import KubeUnavailable
from falconer.sensor.podmeta import PodMeta

#: Alerts an API sink holds before the worker absorbs them; more are dropped (counted).
QUEUE_SIZE = 10_000
#: Retry delays after a failed flush, seconds (the last one repeats).
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 10.0)
#: An aggregate the API server keeps refusing (a deleted namespace, an invalid object)
#: is retried at each flush for this long, then its waiting alerts are dropped (counted).
#: Long enough for an API server that just restarted to sync its authorizers and CRDs.
GIVE_UP_S = 120.0


@dataclass(frozen=True)
class Delivery:
    """One alert on its way to the sinks, with the pod it came from (None: the host)."""

    alert: Alert
    pod: PodMeta | None


def destination(delivery: Delivery, host_namespace: str) -> str | None:
    """The namespace an alert's objects are written to: a tenant rule's alert
    (`Alert.namespace`, falconer.engine.scope) to that namespace only, and only when its
    pod is there (None otherwise: the sink drops it, counted, never writes it elsewhere);
    a cluster rule's alert to its pod's namespace, or `host_namespace` for the host."""
    alert, pod = delivery.alert, delivery.pod
    if alert.namespace:
        return alert.namespace if pod is not None and pod.namespace == alert.namespace else None
    return pod.namespace if pod is not None else host_namespace


@dataclass(frozen=True)
class SinkStats:
    """A sink's counters: alerts offered, delivered, dropped; API writes and failures."""

    offered: int = 0
    delivered: int = 0
    dropped: int = 0
    writes: int = 0
    failures: int = 0


@dataclass
class Aggregate:
    """Alerts counted into one API object. The object's count is `base + total`;
    `written` of the `total` have reached the API server."""

    total: int = 0              # alerts absorbed (minus any dropped after refusals)
    written: int = 0
    base: int = 0               # the count the object had before this sensor wrote to it
    created: bool = False
    refused_since: float | None = None

    @property
    def dirty(self) -> bool:
        """Whether alerts wait to be written."""
        return self.total > self.written


T = TypeVar("T")


def enqueue(bounded: queue.Queue[T], item: T, counters: Counters) -> None:
    """Put `item` in a sink's bounded queue without waiting: counted as offered, and as
    dropped when the queue is full."""
    counters.add("offered")
    try:
        bounded.put_nowait(item)
    except queue.Full:
        counters.add("dropped")


class Counters:
    """Thread-safe counters behind `SinkStats` (the event loop and a worker both count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {k: 0 for k in SinkStats.__dataclass_fields__}

    def add(self, key: str, n: int = 1) -> None:
        """Add `n` to one counter (a SinkStats field name)."""
        with self._lock:
            self._values[key] += n

    def snapshot(self) -> SinkStats:
        """The counters now."""
        with self._lock:
            return SinkStats(**self._values)


class Outage:
    """A sink's destination failing: since when (monotonic seconds) and how many attempts
    failed; the sink says once when it begins and once when it ends."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    def failed(self) -> bool:
        """Count one failed attempt; True when it begins an outage."""
        self.failures += 1
        if self.since is not None:
            return False
        self.since = time.monotonic()
        return True

    def ended(self) -> tuple[float, int] | None:
        """After a success: (seconds gone, failed attempts) when an outage ends here,
        None when there was none; the outage is reset either way."""
        since, failures = self.since, self.failures
        self.since, self.failures = None, 0
        return None if since is None else (time.monotonic() - since, failures)


class Sink(ABC):
    """A destination for alerts. `offer` never blocks the caller for long."""

    name: str = ""
    #: What the sink's stderr lines call it after its name ("sink" or "output").
    kind: str = "sink"
    #: Where `say` writes (sinks set it in their constructor).
    err: TextIO

    def __init__(self) -> None:
        self.counters = Counters()

    @abstractmethod
    def offer(self, delivery: Delivery) -> None:
        """Take one alert (deliver it, queue it, or count it as dropped)."""

    def start(self) -> None:
        """Start any worker (none by default)."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout_s`, then stop."""

    def stats(self) -> SinkStats:
        """The sink's counters now."""
        return self.counters.snapshot()

    def depth(self) -> int:
        """Alerts waiting in the sink's queue now (0 for a synchronous sink)."""
        return 0

    def say(self, msg: str) -> None:
        """One stderr line, prefixed with the sink's name and kind; a closed or broken
        stderr loses the line."""
        try:
            self.err.write(f"falconer sensor: {self.name} {self.kind}: {msg}\n")
            self.err.flush()
        except (OSError, ValueError):
            pass

    def so_far(self) -> str:
        """The sink's delivered and dropped counts, as its recovery lines say them."""
        s = self.stats()
        return f"delivered {s.delivered}, dropped {s.dropped} alerts so far"


_WAKE = object()


class ApiSink(Sink):
    """A sink with a bounded queue and a worker thread that writes to the API server.

    Subclasses implement `absorb` (take one alert into memory; count a loss when there
    is no room) and `flush` (write what changed; raise KubeUnavailable to back off).
    """

    def __init__(self, flush_every_s: float, err: TextIO | None = None, queue_size: int = QUEUE_SIZE) -> None:
        super().__init__()
        self.flush_every_s = flush_every_s
        self.err = err or sys.stderr
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._flush_now = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._outage = Outage()

    def offer(self, delivery: Delivery) -> None:
        """Queue the alert; a full queue drops it (counted)."""
        enqueue(self._queue, delivery, self.counters)

    def depth(self) -> int:
        """Alerts (and wake-ups) waiting in the queue now."""
        return self._queue.qsize()

    def wake(self) -> None:
        """Flush at the worker's next turn (e.g. after a reload)."""
        self._flush_now = True
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Absorb what is queued, try one last flush, stop the worker (bounded wait);
        what is still unwritten then counts as dropped."""
        self._stopping.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            lost = self.pending() + sum(1 for item in take_all(self._queue) if item is not _WAKE)
            if lost:
                self.counters.add("dropped", lost)
                self.say(f"{lost} alerts not delivered at shutdown (counted as dropped)")

    @abstractmethod
    def absorb(self, delivery: Delivery) -> None:
        """Take one alert into the sink's memory (worker thread)."""

    @abstractmethod
    def flush(self) -> None:
        """Write what changed since the last flush (worker thread); KubeUnavailable
        leaves everything pending for the next attempt."""

    def pending(self) -> int:
        """Alerts absorbed but not yet written (for the final report)."""
        return 0

    def written(self, agg: Aggregate, total: int) -> None:
        """The API server now holds `total` alerts of `agg`."""
        self.counters.add("delivered", total - agg.written)
        agg.written, agg.refused_since = total, None

    def refused(self, agg: Aggregate, what: str, exc: Exception) -> None:
        """The API server refused writing `agg`: keep its alerts for the next flush, and
        drop them (counted, said) once refused for GIVE_UP_S; never blocks other objects."""
        now = time.monotonic()
        if agg.refused_since is None:
            agg.refused_since = now
            self.say(f"{what} refused, retrying for up to {GIVE_UP_S:.0f} s: {exc}")
            return
        if now - agg.refused_since < GIVE_UP_S:
            return
        lost = agg.total - agg.written
        agg.total, agg.refused_since = agg.written, None
        self.counters.add("dropped", lost)
        self.say(f"{what} still refused after {GIVE_UP_S:.0f} s: {lost} alerts dropped: {exc}")

    # -- worker --------------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_every_s
        attempt = 0
        while True:
            self._drain(max(0.0, next_flush - time.monotonic()))
            stopping = self._stopping.is_set()
            if time.monotonic() < next_flush and not self._flush_now and not stopping:
                continue
            self._flush_now = False
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any failure
                self.counters.add("failures")
                if isinstance(exc, KubeUnavailable):
                    self._unavailable(exc)
                else:
                    self.say(f"flush failed, retrying with backoff: {exc!r}")
                if stopping:
                    return
                next_flush = time.monotonic() + BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
                continue
            self._recovered()
            attempt = 0
            next_flush = time.monotonic() + self.flush_every_s
            if stopping and self._queue.empty():
                return

    def _drain(self, timeout_s: float) -> None:
        """Absorb queued alerts until `timeout_s` passes or a wake-up arrives."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if item is _WAKE:
                return
            assert isinstance(item, Delivery)
            self.absorb(item)
            if time.monotonic() >= deadline:
                return

    def _unavailable(self, exc: KubeUnavailable) -> None:
        if self._outage.failed():
            self.say(f"API server unavailable, alerts wait in memory and are retried with backoff: {exc}")

    def _recovered(self) -> None:
        ended = self._outage.ended()
        if ended is not None:
            self.say(f"API server reachable again after {ended[0]:.0f} s ({ended[1]} failed attempts); "
                     f"{self.so_far()}")


def take_all(q: queue.Queue[T]) -> list[T]:
    """Everything left in a queue (taken without waiting)."""
    out: list[T] = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


class SinkSet:
    """The sinks of one sensor: every alert is offered to each."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def deliver(self, delivery: Delivery) -> None:
        """Offer one alert to every sink."""
        for sink in self.sinks:
            sink.offer(delivery)

    def close(self, timeout_s: float = 5.0) -> None:
        """Close every sink (each gets up to `timeout_s` to deliver what it holds)."""
        for sink in self.sinks:
            sink.close(timeout_s)

    def stats(self) -> dict[str, SinkStats]:
        """Counters by sink name."""
        return {sink.name: sink.stats() for sink in self.sinks}

    def drops(self) -> dict[str, int]:
        """Dropped alerts by sink name (for the status report)."""
        return {sink.name: sink.stats().dropped for sink in self.sinks}
