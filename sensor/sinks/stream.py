"""Alert-by-alert delivery off the event loop: the shared worker of the HTTP, file and
program outputs.

`StreamSink.offer()` puts the alert in a bounded queue (a full queue drops it, counted).
A worker thread hands queued alerts, oldest first, to `send()`; a failed send (raising
`DeliveryError` or `OSError`) is retried with the API sinks' backoff (`base.BACKOFF_S`)
up to `attempts` times, then that alert is dropped (counted) and the next one is tried.
The sink says once on stderr when its destination fails and once when it works again,
with what it delivered and dropped meanwhile. At shutdown, what cannot be sent within
the close timeout is dropped (counted).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from abc import abstractmethod
from typing import TextIO

from falconer.engine import Alert
from falconer.sensor.sinks.base import BACKOFF_S, Delivery, Outage, Sink, enqueue, take_all

#: Alerts a streaming sink holds before dropping (counted): Falco's outputs queue
#: (`outputs_queue.capacity`) is unbounded by default; ours never is.
QUEUE_SIZE = 10_000
#: Tries per alert before it is dropped (counted): about 15 s of backoff in all.
ATTEMPTS = 5


class DeliveryError(Exception):
    """The destination refused or did not take an alert (the message says why)."""


def falco_bool(value: str, key: str) -> bool:
    """A falco.yaml boolean given on the command line as text (ValueError otherwise)."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key}: expected true or false, got {value!r}")


def alert_line(alert: Alert, hostname: str, json_output: bool) -> str:
    """One alert as Falco prints it: the JSON object (with `hostname`) or the text line
    (control characters escaped), without the newline."""
    return json.dumps(alert.to_json(hostname)) if json_output else alert.text_line()


class StreamSink(Sink):
    """A sink whose worker delivers alerts one by one (`send`), with retries."""

    kind = "output"

    def __init__(self, err: TextIO | None = None, queue_size: int = QUEUE_SIZE,
                 attempts: int = ATTEMPTS) -> None:
        super().__init__()
        self.err = err or sys.stderr
        self.attempts = attempts
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._outage = Outage()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    @abstractmethod
    def send(self, delivery: Delivery) -> None:
        """Deliver one alert (worker thread); raise DeliveryError or OSError on failure."""

    def release(self) -> None:
        """Free what `send` holds open (worker thread, at the end); nothing by default."""

    def offer(self, delivery: Delivery) -> None:
        """Queue the alert; a full queue drops it (counted)."""
        enqueue(self._queue, delivery, self.counters)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for up to `timeout_s`, then stop; the rest is dropped
        (counted and said)."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 1.0)
        lost = sum(1 for d in take_all(self._queue) if d is not None)
        if lost:
            self.counters.add("dropped", lost)
            self.say(f"{lost} alerts not delivered at shutdown (counted as dropped)")

    # -- worker --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                self._deliver(item)
                if self._stop.is_set() and time.monotonic() >= self._deadline:
                    return
        finally:
            self.release()

    def _deliver(self, delivery: Delivery) -> None:
        """Send with retries; the alert is delivered or dropped (counted) at the end."""
        for attempt in range(self.attempts):
            try:
                self.send(delivery)
            except (DeliveryError, OSError) as exc:
                self.counters.add("failures")
                self._failed(exc)
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                if attempt + 1 == self.attempts or not self._wait(delay):
                    break
                continue
            self.counters.add("delivered")
            self.counters.add("writes")
            self._recovered()
            return
        self.counters.add("dropped")

    def _wait(self, delay_s: float) -> bool:
        """Sleep before a retry; False when shutdown leaves no time for it."""
        if not self._stop.is_set():
            self._stop.wait(delay_s)        # a shutdown cuts the wait short
            return True
        if time.monotonic() + delay_s >= self._deadline:
            return False
        time.sleep(delay_s)
        return True

    def _failed(self, exc: Exception) -> None:
        if self._outage.failed():
            self.say(f"delivery failing, retrying with backoff (up to {self.attempts} tries "
                     f"per alert): {exc}")

    def _recovered(self) -> None:
        ended = self._outage.ended()
        if ended is not None:
            self.say(f"delivering again after {ended[0]:.0f} s; {self.so_far()}")
