"""`--capture FILE`: decoded events written in `falconer replay`'s JSONL format.

A capture replays through the same engine later, so it holds the fields rules read,
not the raw record. To stay cheap it writes a fixed set of fields (those the engine's
field registry knows and the sensor computes without extra /proc reads), plus the
event's own `evt.arg.*` parameters; missing values are left out.
"""

from __future__ import annotations

import json
from typing import TextIO

from falconer.sensor import event as sensor_event

#: Fields that cost a /proc read per event: never captured.
_EXPENSIVE = frozenset({"proc.env", "proc.vpid", "proc.pvpid"})
#: Ancestors written as proc.aname[N] / proc.apid[N] for N in 1..this.
ANCESTOR_DEPTH = 4


def _known(name: str) -> bool:
    """Whether the engine's registry knows `name` (all of ours when it cannot tell)."""
    try:
        from falconer.engine import fields  # noqa: PLC0415 - optional at import time
    except ImportError:
        return True
    try:
        fields.resolve(name, None)
    except Exception:  # noqa: BLE001 - the registry's own error type: unknown field
        return False
    return True


def capture_fields() -> tuple[str, ...]:
    """The plain (argument-less) fields a capture line holds."""
    return tuple(
        name for name in sensor_event.FIELDS
        if name not in _EXPENSIVE and name not in ("proc.aname", "proc.apid", "evt.arg")
        and _known(name)
    )


class CaptureWriter:
    """Writes one replay line per event to an open text file."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.fields = capture_fields()
        self.written = 0

    def write(self, ev: sensor_event.SensorEvent) -> None:
        """Append the event as `{"source", "time", "fields"}`."""
        values: dict[str, object] = {}
        for name in self.fields:
            v = ev.get(name)
            if v is not None:
                values[name] = v
        # The whole ancestor lists once (each indexed get would walk the chain again).
        for base in ("proc.aname", "proc.apid"):
            chain = ev.get(base)
            if isinstance(chain, list):
                for i, v in enumerate(chain[:ANCESTOR_DEPTH], start=1):
                    if v is not None:
                        values[f"{base}[{i}]"] = v
        if ev.spec is not None:
            for pname, _, _ in ev.spec.params:
                v = ev.get("evt.arg", pname)
                if v is not None:
                    values[f"evt.arg.{pname}"] = v
        line = {"source": ev.source, "time": ev.time_ns, "fields": values}
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.written += 1
