"""The sensor's own alerts (source "internal"), built as the engine's Alert objects.

Falco reports lost kernel events as an alert of its own, "Falco internal: syscall event
drop", through the same outputs as rule alerts, throttled by a token bucket (one per 30
seconds, bursts of 10) so that a storm of drops cannot become a storm of alerts.
"""

from __future__ import annotations

import time

from falconer.engine import Alert, Priority

DROP_RULE = "Falco internal: syscall event drop"


class TokenBucket:
    """Rate limit: `rate` tokens per second, at most `burst` saved up."""

    def __init__(self, rate: float = 1 / 30, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.throttled = 0

    def take(self) -> bool:
        """Spend one token if there is one; count a refusal otherwise."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.throttled += 1
        return False


def drop_alert(n_drops: int, n_ring: int, n_stash: int, n_evts: int) -> Alert:
    """The alert for `n_drops` records lost since the last check (about a second)."""
    return Alert(
        rule=DROP_RULE, priority=Priority.DEBUG, source="internal",
        output=f"{DROP_RULE}. {n_drops} system calls dropped in last second.",
        output_fields={"ebpf_enabled": "1", "n_drops": n_drops, "n_drops_buffer": n_ring,
                       "n_drops_inflight": n_stash, "n_evts": n_evts},
        time_ns=time.time_ns(), tags=[],
    )


RELOAD_RULE = "Falco internal: rules reload failed"


def reload_failed_alert(reason: str) -> Alert:
    """The alert for a rules change that could not be loaded (the previous rules keep
    running). Falconer's own internal alert, named in the style of Falco's."""
    first = reason.strip().splitlines()[0] if reason.strip() else "unknown reason"
    return Alert(
        rule=RELOAD_RULE, priority=Priority.ERROR, source="internal",
        output=f"{RELOAD_RULE}, keeping the previous rules: {first}",
        output_fields={"reason": reason}, time_ns=time.time_ns(), tags=[],
    )
