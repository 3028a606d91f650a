"""The file output: alerts appended to a file in Falco's text or JSON lines, as Falco's
`file_output`: with `keep_alive` the file is opened once and kept open; without it, the
file is opened (appending, created 0600 when missing) and closed for each alert, so a
rotated or removed file is simply started again. Written off the event loop
(`stream.StreamSink`); a failed write is retried with backoff, then counted as dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from falconer import sensorconfig
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.stream import StreamSink, alert_line, falco_bool

#: falco.yaml `file_output` keys (Falco's names).
FALCO_KEYS = frozenset({"enabled", "keep_alive", "filename"})
#: Mode of a file the output creates: alerts may quote secrets' paths and command lines.
FILE_MODE = 0o600


class FileConfigError(ValueError):
    """A file output setting is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class FileSettings:
    """Append alerts to `filename` (JSON lines or Falco's text lines)."""

    filename: Path
    keep_alive: bool = False
    json_output: bool = False

    @classmethod
    def from_config(cls, output: sensorconfig.FileOutput) -> FileSettings:
        """From falconer.yaml `outputs.file`."""
        return cls(Path(output.path), output.keep_alive, output.format == "json")

    @classmethod
    def from_falco_keys(cls, keys: Mapping[str, str], json_output: bool) -> FileSettings | None:
        """From falco.yaml `file_output.<key>` `-o` values (format: Falco's global
        `json_output`); None unless enabled (or a filename is given)."""
        unknown = set(keys) - FALCO_KEYS
        if unknown:
            raise FileConfigError(f"file_output: unsupported keys {sorted(unknown)}")
        if not falco_bool(keys.get("enabled", "true" if "filename" in keys else "false"), "file_output.enabled"):
            return None
        if not keys.get("filename"):
            raise FileConfigError("file_output.enabled=true needs file_output.filename")
        return cls(Path(keys["filename"]), falco_bool(keys.get("keep_alive", "false"), "file_output.keep_alive"),
                   json_output)


class FileSink(StreamSink):
    """Appends one line per alert to the output's file."""

    name = "file"

    def __init__(self, output: FileSettings, hostname: str, err: TextIO | None = None, **kw: Any) -> None:
        super().__init__(err, **kw)
        self.output = output
        self.hostname = hostname
        self._file: TextIO | None = None

    def send(self, delivery: Delivery) -> None:
        """Write and flush one line (OSError on failure: the file is reopened next time)."""
        line = alert_line(delivery.alert, self.hostname, self.output.json_output) + "\n"
        try:
            f = self._open()
            f.write(line)
            f.flush()
        except OSError:
            self.release()
            raise
        if not self.output.keep_alive:
            self.release()

    def release(self) -> None:
        """Close the file when open."""
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError:
                pass

    def _open(self) -> TextIO:
        if self._file is None:
            fd = os.open(self.output.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        return self._file
