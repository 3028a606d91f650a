"""The program output: alerts written to a program's standard input in Falco's text or
JSON lines, as Falco's `program_output`: the program is a shell command line (`sh -c`);
with `keep_alive` it is started once and gets one line per alert (restarted when it has
exited), without it it is started for each alert, gets that line, and its stdin is
closed. Its stdout and stderr go to the sensor's stderr (stdout carries the alerts).
A program that cannot be started, whose pipe broke, or that ran per alert and exited
non-zero (or outlived `TIMEOUT_S`) did not take the alert: retried with backoff, then
counted as dropped (`stream.StreamSink`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from falconer import sensorconfig
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.keepalive import KeepAliveSink, falco_keep_alive_keys
from falconer.sensor.sinks.stream import DeliveryError

#: Seconds a per-alert program may run, and a kept one gets to exit at shutdown.
TIMEOUT_S = 10.0


class ProgramConfigError(ValueError):
    """A program output setting is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class ProgramSettings:
    """Feed alerts to `program` (a `sh -c` command line)."""

    program: str
    keep_alive: bool = False
    json_output: bool = False

    @classmethod
    def from_config(cls, output: sensorconfig.ProgramOutput) -> ProgramSettings:
        """From falconer.yaml `outputs.program`."""
        return cls(output.program, output.keep_alive, output.format == "json")

    @classmethod
    def from_falco_keys(cls, keys: Mapping[str, str], json_output: bool) -> ProgramSettings | None:
        """From falco.yaml `program_output.<key>` `-o` values (format: Falco's global
        `json_output`); None unless enabled (or a program is given)."""
        found = falco_keep_alive_keys(keys, "program_output", "program", ProgramConfigError)
        return None if found is None else cls(found[0], found[1], json_output)


class ProgramSink(KeepAliveSink[ProgramSettings]):
    """Writes one line per alert to the program's stdin."""

    name = "program"

    def __init__(self, output: ProgramSettings, hostname: str, err: TextIO | None = None, **kw: Any) -> None:
        super().__init__(output, hostname, err, **kw)
        self._proc: subprocess.Popen[bytes] | None = None

    def send(self, delivery: Delivery) -> None:
        """Deliver one line (DeliveryError/OSError when the program did not take it)."""
        line = self.line(delivery)
        if not self.output.keep_alive:
            self._run_once(line)
            return
        proc = self._kept()
        assert proc.stdin is not None
        try:
            self.write(proc.stdin, line)
        except OSError as exc:
            raise DeliveryError(f"program {self.output.program!r} exited ({proc.poll()}): {exc}") from exc

    def release(self) -> None:
        """Close a kept program's stdin and wait for it (killed after TIMEOUT_S)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            _finish(proc, b"")

    def _run_once(self, line: bytes) -> None:
        code = _finish(self._spawn(), line)
        if code != 0:
            raise DeliveryError(f"program {self.output.program!r} exited with {code}")

    def _kept(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is not None:
            self.say(f"program {self.output.program!r} exited with {self._proc.returncode}; restarting it")
            self._proc = None
        if self._proc is None:
            self._proc = self._spawn()
        return self._proc

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["/bin/sh", "-c", self.output.program], stdin=subprocess.PIPE,
                                stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno(), close_fds=True)


def _finish(proc: subprocess.Popen[bytes], line: bytes) -> int | None:
    """Write `line`, close stdin, wait up to TIMEOUT_S (then kill); the exit code, or
    None when it had to be killed."""
    try:
        proc.communicate(line, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    except OSError:
        proc.wait(TIMEOUT_S)
    return proc.returncode
