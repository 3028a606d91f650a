"""Drop accounting: what the sensor lost, where, and Falco's internal drop alert.

The kernel side counts records lost because the ring buffer was full; user space counts
records it could not decode or process. `DropAccount.check` (once a second) takes the kernel counters and
turns new losses into Falco's "syscall event drop" alert, throttled by a token bucket
(`alerts.TokenBucket`, Falco's one per 30 s, bursts of 10) so that a storm of drops
cannot become a storm of alerts; throttled alerts are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

from falconer.engine import Alert
from falconer.sensor import alerts


@dataclass
class KernelDrops:
    """Cumulative kernel-side losses: records lost because the ring buffer was full (the
    exit-only probe keeps no per-thread state, so nothing is lost "in flight")."""

    ring: int = 0


class DropAccount:
    """Kernel loss counters over time, and the alerts they raise."""

    def __init__(self) -> None:
        self.kernel = KernelDrops()
        self.bucket = alerts.TokenBucket()

    def check(self, ring: int, events: int) -> Alert | None:
        """Take the kernel's cumulative ring-full counter; the drop alert for new losses,
        if the bucket allows one now."""
        new_ring = ring - self.kernel.ring
        self.kernel = KernelDrops(ring)
        if new_ring and self.bucket.take():
            return alerts.drop_alert(new_ring, new_ring, 0, events)
        return None
