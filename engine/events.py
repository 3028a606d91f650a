"""What producers give the engine: the Event protocol and the replay-line event.

The sensor implements `Event` over its own state; `MappingEvent` is a plain mapping
of field values, built from a replay line (`falconer replay`) or by tests.

An event class may also offer `accessor(field, arg)` (a classmethod): a getter of that
field bound once, `event -> value`, that must return what `get(field, arg)` returns
(None: no faster way, `get` is used). The ruleset binds each rule's checks to the
accessors of the event classes it meets (falconer.engine.binding); `evt.type` must
read as the event's `type`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Event(Protocol):
    """One event as the engine sees it; `get` returns None for a missing value."""

    source: str
    type: str
    time_ns: int

    def get(self, field: str, arg: str | None = None) -> object | None: ...


_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


def parse_time(value: object) -> int:
    """Nanoseconds since the epoch from an int or an ISO-8601 string (ns precision kept).
    Raises ValueError for anything else, and for a time outside Falco's `evt.rawtime`
    (an unsigned 64-bit count of ns since the epoch: 1970 to 2554)."""
    ns = _time_ns(value)
    if not 0 <= ns < MAX_TIME_NS:
        raise ValueError(f"'time' is outside 1970-01-01 to 2554 (u64 ns since the epoch): {value!r}")
    return ns


#: evt.rawtime is a uint64 of ns since the epoch.
MAX_TIME_NS = 1 << 64


def _time_ns(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError("'time' must be an integer (ns) or an ISO-8601 string")
    m = _ISO.match(value.strip())
    if not m:
        raise ValueError(f"'time' is not an ISO-8601 timestamp: {value!r}")
    zone = m.group(3) or "Z"
    zone = "+00:00" if zone == "Z" else zone
    # Whole seconds from datetime (always zone-aware here: a zone is always appended);
    # the fraction is kept as digits, since a float timestamp would lose nanoseconds.
    seconds = int(datetime.fromisoformat(m.group(1).replace(" ", "T") + zone).timestamp())
    frac = (m.group(2) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac)


class MappingEvent:
    """An event whose field values sit in a mapping keyed `field` or `field[arg]`."""

    __slots__ = ("source", "type", "time_ns", "fields")

    def __init__(self, fields: Mapping[str, object], source: str = "syscall",
                 time_ns: int = 0) -> None:
        self.fields = dict(fields)
        self.source = source
        self.type = str(self.fields.get("evt.type", ""))
        self.time_ns = time_ns

    def get(self, field: str, arg: str | None = None) -> object | None:
        """The value of `field` (with `arg`), accepting `evt.arg.x` and `evt.arg[x]` alike."""
        fields = self.fields
        if arg is None:
            value = fields.get(field)
            if value is None:
                if field == "evt.source":
                    return self.source
                cut = field.rfind(".")
                if field.startswith(("evt.arg.", "evt.rawarg.")) and cut > 0:
                    value = fields.get(f"{field[:cut]}[{field[cut + 1:]}]")
            return value
        value = fields.get(f"{field}[{arg}]")
        if value is None:
            value = fields.get(f"{field}.{arg}")
        return value

    @classmethod
    def accessor(cls, field: str, arg: str | None) -> Callable[[Any], object] | None:
        """A direct read of a field `get` finds under its own name (the fields with
        fallback spellings are left to `get`)."""
        if arg is not None or field == "evt.source" or field.startswith(
                ("evt.arg.", "evt.rawarg.")):
            return None
        return lambda ev: ev.fields.get(field)

    @classmethod
    def from_json(cls, obj: object) -> MappingEvent:
        """Build from a replay line's object; raises ValueError with the reason."""
        if not isinstance(obj, dict):
            raise ValueError("an event must be a JSON object")
        fields = obj.get("fields")
        if not isinstance(fields, dict):
            raise ValueError("an event needs a 'fields' object")
        source = obj.get("source", "syscall")
        if not isinstance(source, str):
            raise ValueError("'source' must be a string")
        if "time" not in obj:
            raise ValueError("an event needs a 'time'")
        return cls(fields, source, parse_time(obj["time"]))
