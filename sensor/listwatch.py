"""The list-then-watch loop the sensor's API caches share (pods on this node, Services).

List, then watch from the list's resourceVersion; relist when the server answers 410 Gone
(the version is too old), when the list or watch fails (with doubling backoff), and
every `resync_s`, so that a missed event cannot stay wrong. Subclasses say what to list
and watch (`_list_call`, `_load`) and what an event changes (`_change`). Source:
Kubernetes API concepts, "Efficient detection of changes" (watch, bookmarks, 410 Gone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from falconer.sensor import kube

RESYNC_S = 300.0
#: How long one watch request may stay open (server side), seconds.
WATCH_TIMEOUT_S = 60
#: Backoff after a failed list or watch, doubling up to the maximum, seconds.
BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): relist."""


@dataclass
class WatchStats:
    """What a list/watch loop did (for the sensor's summary)."""

    lists: int = 0              # full lists (first, 410, resync, failure, on request)
    gone: int = 0               # 410 Gone answers
    failures: int = 0           # lists or watches that raised
    events: int = 0             # ADDED / MODIFIED / DELETED applied


class ListWatch:
    """One list/watch loop in a daemon thread: `start()`, `stop()`, `wait_synced()`."""

    #: The thread's name.
    thread_name = "falconer-listwatch"

    def __init__(self, resync_s: float = RESYNC_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.resync_s = resync_s
        self.stats = WatchStats()
        self._clock = clock
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch: kube.Watch | None = None
        self._thread: threading.Thread | None = None

    # -- what a subclass says ---------------------------------------------------------

    def _list_call(self) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The client's list function and its arguments (a field selector...)."""
        raise NotImplementedError

    def _load(self, items: list[Any]) -> None:
        """Replace the cache with a full list's items."""
        raise NotImplementedError

    def _change(self, kind: str, obj: Any) -> None:
        """Apply one ADDED / MODIFIED / DELETED event."""
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end (a watch in progress is cut)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def wait_synced(self, timeout_s: float) -> bool:
        """Whether a first list completed within the timeout."""
        return self._synced.wait(timeout_s)

    def run(self) -> None:
        """List, then watch, until stopped."""
        backoff = BACKOFF_S
        while not self._stop.is_set():
            try:
                version = self._relist()
                resync_at = self._clock() + self.resync_s
                while not self._stop.is_set() and self._clock() < resync_at:
                    version = self._watch_once(version, resync_at)
                backoff = BACKOFF_S
            except Gone:
                self.stats.gone += 1
            except Exception:  # noqa: BLE001 - any failure: back off, then relist
                if self._stop.is_set():
                    return   # stop() cut the watch's connection: no failure
                self.stats.failures += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _relist(self) -> str:
        """A full list into the cache; returns its resourceVersion."""
        call, kwargs = self._list_call()
        found = kube.call(call, **kwargs)
        self._load(list(found.items))
        self.stats.lists += 1
        self._synced.set()
        return str(found.metadata.resource_version if found.metadata is not None else "")

    def _watch_once(self, version: str, resync_at: float) -> str:
        """One watch request from `version`; returns the last version seen."""
        self._watch = kube.Watch()
        timeout = max(1, min(WATCH_TIMEOUT_S, int(resync_at - self._clock())))
        call, kwargs = self._list_call()
        events = self._watch.stream(
            call, resource_version=version, timeout_seconds=timeout, allow_watch_bookmarks=True, **kwargs)
        try:
            for event in events:
                version = self._apply(event, version)
                if self._stop.is_set():
                    break
        except kube.KubeRejected as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        return version

    def _apply(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            raw = event.get("raw_object") or {}
            if raw.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {raw}")
        if kind == "BOOKMARK":
            return str(obj["metadata"]["resourceVersion"] if isinstance(obj, dict)
                       else obj.metadata.resource_version)
        self._change(kind, obj)
        self.stats.events += 1
        return str(obj.metadata.resource_version)
