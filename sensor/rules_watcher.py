"""Reload decisions: when the rules input changed, load it beside the running rules.

Once a second (or on SIGHUP) the watcher reads the rules input again (`config.RulesInput`:
`--rules` files, or a `--config` file and the rules it names) and compares the content's
digest with the running rules' and with the last attempt's, since mtimes mean nothing
when kubelet swaps a ConfigMap's `..data` symlink. A changed input is loaded into a new
Engine, off to the side: the running rules are untouched until the caller switches
(`Sensor.switch_rules`), and a broken input never replaces them. Each problem is
reported once (not every second) until the input changes again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from falconer.engine import Engine, LoadResult
from falconer.sensor.config import ConfigError, RulesInput, Snapshot


@dataclass(frozen=True)
class Loaded:
    """A clean load, ready to switch to."""

    engine: Engine
    snapshot: Snapshot
    result: LoadResult


@dataclass(frozen=True)
class Failed:
    """A changed input that could not be loaded; `reason` is one or more lines."""

    reason: str


class RulesError(RuntimeError):
    """The first load failed (there are no previous rules to keep)."""


def format_errors(result: LoadResult) -> str:
    """A load's errors, one `file:line:col: CODE: message` line each."""
    return "\n".join(f"  {d.file}:{d.line}:{d.column}: {d.code}: {d.message}" for d in result.errors)


class RulesWatcher:
    """Decides whether to reload and loads; the caller switches and reports."""

    def __init__(self, rules: RulesInput, say: Callable[[str], None]) -> None:
        self.rules = rules
        self.say = say
        self.running = ""             # digest of the input the running rules came from
        self._attempt = ""            # digest of the last input tried, or the problem seen

    def first(self) -> Loaded:
        """Load the rules to start with; RulesError when they cannot be loaded."""
        try:
            snap = self.rules.read()
        except ConfigError as exc:
            raise RulesError(f"bad configuration: {exc}") from exc
        loaded = self._load(snap)
        if isinstance(loaded, Failed):
            raise RulesError(f"rules have errors:\n{loaded.reason}")
        self.running = snap.digest
        return loaded

    def check(self, forced: bool = False) -> Loaded | Failed | None:
        """Read the input: a Loaded to switch to, a Failed to report (once per distinct
        problem, or on every forced check), or None when there is nothing to do."""
        try:
            snap = self.rules.read()
        except ConfigError as exc:
            problem = f"problem:{exc}"
            if not forced and problem == self._attempt:
                return None
            self._attempt = problem
            return Failed(str(exc))
        if not forced and snap.digest == self.running != self._attempt:
            self._attempt = snap.digest
            self.say("falconer sensor: the rules input is back to the running rules")
            return None
        if not forced and snap.digest == self._attempt:
            return None
        return self._load(snap)

    def switched(self, loaded: Loaded) -> None:
        """The caller now runs `loaded`."""
        self.running = loaded.snapshot.digest

    def _load(self, snap: Snapshot) -> Loaded | Failed:
        self._attempt = snap.digest
        engine = Engine(snap.engine)
        result = engine.load(list(snap.sources))
        if not result.ok:
            return Failed(format_errors(result))
        return Loaded(engine, snap, result)
