"""A real `falconer sensor --json ...` process on this host, its alerts gathered.

The sensor filters its own pid in the kernel, so it cannot run inside the pytest
process whose actions it must see: it runs as a subprocess, printing Falco JSON alerts
that a reader thread collects. Tests correlate alerts to their own actions by a unique
marker that the action puts into a command line or a file name. Used by the sensor
tests (tests/sensor/conftest.py) and the kill/outage matrix (tests/faults/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import IO, Any

STARTUP_TIMEOUT_S = 60.0


class SensorProcess:
    """`falconer sensor --json ...` in a subprocess, its alerts gathered in a list
    (or, with `stdout`, written to that file and not gathered)."""

    def __init__(self, *args: str, stdout: IO[str] | None = None) -> None:
        env = dict(os.environ, PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconer", "sensor", "--json", *args],
            stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/",
        )
        self.alerts: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        if stdout is None:
            threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        if not self._ready.wait(STARTUP_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("sensor did not start:\n" + "".join(self.stderr))

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.alerts.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.stderr.append(line)
            if "watching" in line:
                self._ready.set()
        self._ready.set()

    def matching(self, marker: str) -> list[dict[str, Any]]:
        """The alerts so far whose output mentions `marker`."""
        with self._lock:
            return [a for a in self.alerts if marker in a["output"]]

    def rules_for(self, marker: str, settle_s: float = 1.5, timeout_s: float = 10.0,
                  expect: bool = True) -> set[str]:
        """Rule names of the alerts for `marker`, once they stop arriving.

        With `expect`, waits up to `timeout_s` for a first alert; then waits until no new
        one came for `settle_s`. Without, just waits `settle_s` (for negative cases).
        """
        deadline = time.monotonic() + timeout_s
        while expect and not self.matching(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = -1
        while len(self.matching(marker)) != seen:
            seen = len(self.matching(marker))
            time.sleep(settle_s)
        return {a["rule"] for a in self.matching(marker)}

    def wait_stderr(self, text: str, timeout_s: float = 10.0) -> bool:
        """Whether `text` appears on the sensor's stderr within the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if any(text in line for line in self.stderr):
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> str:
        """SIGTERM, wait, and return everything the sensor wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.1)
        with self._lock:
            return "".join(self.stderr)
