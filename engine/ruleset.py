"""The evaluable ruleset: rules indexed by event type, selection, alerts.

Each rule lands only in the buckets of the event types its condition can match
(`evttypes`), so an `openat` event meets the handful of open rules and not the
execve ones. Rules that can match (almost) any type sit in every bucket except the
types they exclude. Buckets are built lazily per event type and keep definition
order, which `rule_matching: first` relies on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from falconer.engine.collector import PRIORITIES, Priority, parse_priority
from falconer.engine.compiler import CompiledRule
from falconer.engine.events import Event
from falconer.engine.output import escape_text
from falconer.engine.timefields import iso8601, time_of_day

Selection = Sequence[tuple[str, str, str]]


@dataclass
class Alert:
    """One rule match."""

    rule: str
    priority: Priority
    source: str
    time_ns: int
    output: str
    output_fields: dict[str, object]
    tags: list[str] = field(default_factory=list)

    def to_json(self, hostname: str) -> dict[str, object]:
        """Falco's JSON alert object; its `output` is the whole line, unescaped (JSON's
        own encoding makes it safe)."""
        return {
            "hostname": hostname,
            "output": self.line(),
            # Falco always includes evt.time, as integer nanoseconds; keys sorted.
            "output_fields": dict(sorted({**self.output_fields,
                                          "evt.time": self.time_ns}.items())),
            "priority": self.priority,
            "rule": self.rule,
            "source": self.source,
            "tags": list(self.tags),
            "time": iso8601(self.time_ns),
        }

    def line(self) -> str:
        """Falco's alert line, `<time>: <Priority> <output>` (time of day, UTC, ns), as
        decoded: control characters included. For JSON, never for a text sink."""
        return f"{time_of_day(self.time_ns)}: {self.priority} {self.output}"

    def text_line(self) -> str:
        """The line for text outputs: `line()` with control characters escaped, so that
        event data can never start a forged line (Falco 0.44, issue 3895)."""
        return escape_text(self.line())


def _name_matcher(pattern: str) -> re.Pattern[str]:
    """Rule-name patterns: `*` is the only wildcard; everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def select(rules: Sequence[CompiledRule], min_priority: str, selection: Selection) -> set[str]:
    """Names of the enabled rules after the ordered enable/disable actions and priority."""
    floor = parse_priority(min_priority)
    if floor is None:
        raise ValueError(f"invalid minimum priority '{min_priority}'")
    rank = PRIORITIES.index(floor)
    enabled = {r.name for r in rules if r.enabled}
    for action, kind, value in selection:
        if action not in ("enable", "disable") or kind not in ("rule", "tag"):
            raise ValueError(f"invalid selection action {(action, kind, value)!r}")
        if kind == "rule":
            rx = _name_matcher(value)
            hit = {r.name for r in rules if rx.fullmatch(r.name)}
        else:
            hit = {r.name for r in rules if value in r.tags}
        enabled = enabled | hit if action == "enable" else enabled - hit
    return {r.name for r in rules if r.name in enabled and PRIORITIES.index(r.priority) <= rank}


class Ruleset:
    """Compiled rules plus the options that decide which fire and how many."""

    def __init__(self, rules: Sequence[CompiledRule], min_priority: str = "debug",
                 rule_matching: str = "first", selection: Selection = ()) -> None:
        if rule_matching not in ("first", "all"):
            raise ValueError(f"rule_matching must be 'first' or 'all', not {rule_matching!r}")
        self.rules = sorted(rules, key=lambda r: r.order)
        self.first_only = rule_matching == "first"
        names = select(self.rules, min_priority, selection)
        self.enabled = [r for r in self.rules if r.name in names]
        self._buckets: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        #: Evaluation failures (a rule raised on odd event data); counted, never fatal.
        self.errors = 0

    def __len__(self) -> int:
        """The number of rules, enabled or not."""
        return len(self.rules)

    def rules_for(self, source: str, evt_type: str) -> tuple[CompiledRule, ...]:
        """The enabled rules an event of this source and type can match, in order."""
        key = (source, evt_type)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = tuple(r for r in self.enabled
                           if r.source == source and r.evttypes.contains(evt_type))
            self._buckets[key] = bucket
        return bucket

    def evaluate(self, event: Event) -> list[Alert]:
        """The alerts one event raises (at most one with rule_matching "first")."""
        alerts: list[Alert] = []
        for rule in self.rules_for(event.source, event.type):
            try:
                if not rule.check(event):
                    continue
                alerts.append(self._alert(rule, event))
            except Exception:  # noqa: BLE001 - odd event data must not stop the stream
                self.errors += 1
                continue
            if self.first_only:
                break
        return alerts

    def evaluate_unindexed(self, event: Event) -> list[Alert]:
        """Every enabled rule against the event, ignoring the index (benchmarks, tests)."""
        alerts: list[Alert] = []
        for rule in self.enabled:
            if rule.source == event.source and rule.check(event):
                alerts.append(self._alert(rule, event))
                if self.first_only:
                    break
        return alerts

    @staticmethod
    def _alert(rule: CompiledRule, event: Event) -> Alert:
        """The alert of a rule that matched (its output rendered from the event)."""
        output, fields = rule.render(event)
        return Alert(rule.name, rule.priority, rule.source, event.time_ns, output, fields,
                     list(rule.tags))

    def fields(self, enabled_only: bool = False) -> frozenset[str]:
        """Base names of every field the rules use (`proc.aname` for `proc.aname[2]`),
        in conditions, exceptions and outputs; only enabled rules' if `enabled_only`."""
        rules = self.enabled if enabled_only else self.rules
        return frozenset().union(*(r.fields for r in rules))

    def event_types(self, source: str = "syscall") -> frozenset[str] | None:
        """Event types the enabled rules need; None when some rule can match any type."""
        names: set[str] = set()
        for rule in self.enabled:
            if rule.source != source:
                continue
            if rule.evttypes.is_all_but:
                return None
            names |= rule.evttypes.names
        return frozenset(names)

