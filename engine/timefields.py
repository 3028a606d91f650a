"""Time fields (`evt.time`, `evt.datetime`, `evt.rawtime`, ...) computed from `time_ns`.

Every event carries its timestamp, so the engine renders these itself in libsinsp's
formats (UTC) instead of asking each producer to implement them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone


def _clock(ns: int, fmt: str, nanos: bool) -> str:
    """`fmt` in UTC, optionally followed by the nine digits of the nanoseconds."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(secs, tz=timezone.utc).strftime(fmt)
    return f"{text}.{frac:09d}" if nanos else text


def time_of_day(ns: int) -> str:
    """`evt.time`, also the time that starts Falco's text alert line."""
    return _clock(ns, "%H:%M:%S", True)


def iso8601(ns: int) -> str:
    """`evt.time.iso8601`, also the `time` of Falco's JSON alert."""
    return _clock(ns, "%Y-%m-%dT%H:%M:%S", True) + "Z"


TIME_FIELDS: dict[str, Callable[[int], object]] = {
    "evt.time": time_of_day,
    "evt.time.s": lambda ns: _clock(ns, "%H:%M:%S", False),
    "evt.time.iso8601": iso8601,
    "evt.datetime": lambda ns: _clock(ns, "%Y-%m-%d %H:%M:%S", True),
    "evt.datetime.s": lambda ns: _clock(ns, "%Y-%m-%d %H:%M:%S", False),
    "evt.rawtime": lambda ns: ns,
    "evt.rawtime.s": lambda ns: ns // 1_000_000_000,
    "evt.rawtime.ns": lambda ns: ns % 1_000_000_000,
}


def getter(name: str, arg: str | None) -> Callable[[object], object]:
    """Read a field from an event; time fields come from the event's `time_ns`."""
    compute = TIME_FIELDS.get(name) if arg is None else None
    if compute is not None:
        return lambda ev: compute(ev.time_ns)  # type: ignore[attr-defined]
    return lambda ev: ev.get(name, arg)  # type: ignore[attr-defined]
