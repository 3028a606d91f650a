"""Drop accounting: what the sensor lost, where, and Falco's internal drop alert.

The kernel side counts records lost because the ring buffer was full and records whose
entry was stashed but never sent ("in flight"); user space counts records it could not
decode or process. `DropAccount.check` (once a second) takes the kernel counters and
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
    """Cumulative kernel-side losses."""

    ring: int = 0               # ring buffer full
    stash: int = 0              # entry stashed, exit never sent

    @property
    def total(self) -> int:
        return self.ring + self.stash


class DropAccount:
    """Kernel loss counters over time, and the alerts they raise."""

    def __init__(self) -> None:
        self.kernel = KernelDrops()
        self.bucket = alerts.TokenBucket()

    def check(self, ring: int, stash: int, events: int) -> Alert | None:
        """Take the kernel's cumulative counters; the drop alert for new losses, if the
        bucket allows one now."""
        new_ring, new_stash = ring - self.kernel.ring, stash - self.kernel.stash
        self.kernel = KernelDrops(ring, stash)
        if new_ring + new_stash and self.bucket.take():
            return alerts.drop_alert(new_ring + new_stash, new_ring, new_stash, events)
        return None
