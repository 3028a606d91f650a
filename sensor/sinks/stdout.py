"""Alerts on stdout, as Falco prints them: text lines or JSON lines.

Written synchronously on the event loop: stdout is what `kubectl logs` shows and must
never wait on the API server. A write that fails (closed or broken stdout) loses that
alert, counted as dropped and said once on stderr.
"""

from __future__ import annotations

import json
from typing import TextIO

from falconer.sensor.sinks.base import Delivery, Sink


class StdoutSink(Sink):
    """Falco's text or JSON alert lines on `out` (JSON carries `hostname`)."""

    name = "stdout"

    def __init__(self, out: TextIO, err: TextIO, hostname: str, json_output: bool = False,
                 enabled: bool = True) -> None:
        super().__init__()
        self.out = out
        self.err = err
        self.hostname = hostname
        self.json_output = json_output
        self.enabled = enabled

    def offer(self, delivery: Delivery) -> None:
        """Print the alert now (when enabled; formatting is skipped otherwise)."""
        if not self.enabled:
            return
        self.counters.add("offered")
        alert = delivery.alert
        line = json.dumps(alert.to_json(self.hostname)) if self.json_output else alert.text_line()
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError) as exc:
            self.counters.add("dropped")
            if self.counters.snapshot().dropped == 1:
                self.err.write(f"falconer sensor: alert not written to stdout: {exc!r}\n")
                self.err.flush()
            return
        self.counters.add("delivered")
