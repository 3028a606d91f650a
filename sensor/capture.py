"""`--capture FILE`: decoded events written in `falconer replay`'s JSONL format.

A capture replays through the same engine later, so it holds the fields rules read,
not the raw record. To stay cheap it writes a fixed set of fields (those the engine's
field registry knows and the sensor computes without extra /proc reads), plus the
event's own `evt.arg.*` parameters; missing values are left out.

Lines are gathered and written in blocks of `FLUSH_BYTES`. A block the file system
refuses (disk full, I/O error) is lost, never the sensor's detection: the file is cut
back to its last whole line, the lost lines are counted (`lost`, in the sensor's summary
and its status report's `drops.capture`) and the first failure is said on stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from falconer.sensor import event as sensor_event

#: Fields that cost a /proc read per event: never captured.
_EXPENSIVE = frozenset({"proc.env", "proc.vpid", "proc.pvpid"})
#: Ancestors written as proc.aname[N] / proc.apid[N] for N in 1..this.
ANCESTOR_DEPTH = 4
#: Bytes of lines gathered before one write(2).
FLUSH_BYTES = 64 * 1024


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
    """Writes one replay line per event to `path` (created or truncated); `written`
    counts the lines on disk, `lost` those the file system refused. Raises OSError
    when the file cannot be opened."""

    def __init__(self, path: Path, err: TextIO) -> None:
        self.path = path
        self.err = err
        self.fields = capture_fields()
        self.written = 0
        self.lost = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._offset = 0
        self._pending = bytearray()
        self._pending_lines = 0

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
        self._pending += json.dumps(line, separators=(",", ":")).encode() + b"\n"
        self._pending_lines += 1
        if len(self._pending) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the gathered lines; what the file system refuses is cut back to the
        last whole line and counted as lost (never raises)."""
        data, lines = bytes(self._pending), self._pending_lines
        self._pending.clear()
        self._pending_lines = 0
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as exc:
            whole = data.rfind(b"\n", 0, done) + 1
            self._cut_back(self._offset + whole)
            kept = data.count(b"\n", 0, whole)
            self.written += kept
            self._lose(lines - kept, exc)
            return
        self._offset += len(data)
        self.written += lines

    def _cut_back(self, offset: int) -> None:
        """End the file at `offset`, dropping a partly written line (best effort: a
        file system that refuses this too leaves the partial line)."""
        self._offset = offset
        try:
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError:
            pass

    def _lose(self, lines: int, exc: OSError) -> None:
        """Count lost lines; the first loss is said on stderr."""
        if lines and not self.lost:
            self.err.write(f"falconer sensor: capture lines lost (counted): {self.path}: {exc}\n")
            self.err.flush()
        self.lost += lines

    def close(self) -> None:
        """Write what is gathered and close the file; idempotent."""
        if self._fd < 0:
            return
        self.flush()
        os.close(self._fd)
        self._fd = -1
