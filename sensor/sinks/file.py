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
from typing import Any, BinaryIO, TextIO

from falconer import sensorconfig
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.keepalive import KeepAliveSink, falco_keep_alive_keys

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
        found = falco_keep_alive_keys(keys, "file_output", "filename", FileConfigError)
        return None if found is None else cls(Path(found[0]), found[1], json_output)


class FileSink(KeepAliveSink[FileSettings]):
    """Appends one line per alert to the output's file."""

    name = "file"

    def __init__(self, output: FileSettings, hostname: str, err: TextIO | None = None, **kw: Any) -> None:
        super().__init__(output, hostname, err, **kw)
        self._file: BinaryIO | None = None

    def send(self, delivery: Delivery) -> None:
        """Write and flush one line (OSError on failure: the file is reopened next time)."""
        self.write(self._open(), self.line(delivery))
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

    def _open(self) -> BinaryIO:
        if self._file is None:
            fd = os.open(self.output.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            self._file = os.fdopen(fd, "ab")
        return self._file
