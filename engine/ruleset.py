"""The evaluable ruleset: rules indexed by event type, selection, alerts.

Each rule lands only in the buckets of the event types its condition can match
(`evttypes`), so an `openat` event meets the handful of open rules and not the
execve ones. Rules that can match (almost) any type sit in every bucket except the
types they exclude. Buckets are built lazily per event class, source and type, bound
to that class's field accessors with event-type checks folded, shared macros
evaluated once per event and a literal index over `fd.name`-like fields
(`falconer.engine.binding`); they keep definition order, which `rule_matching:
first` relies on. A ruleset evaluates one event at a time (it is not thread-safe).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from falconer.engine.binding import Bucket, Memo, Resolve, bind_bucket
from falconer.engine.collector import PRIORITIES, Priority, parse_priority
from falconer.engine.compiler import CompiledRule
from falconer.engine.eventnames import EVENT_NAMES
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
    #: The tenant namespace of the rule (falconer.engine.scope): its alerts belong to
    #: that namespace only. "" for a cluster rule.
    namespace: str = ""

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


RuleKey = tuple[str, str]


def _key(rule: CompiledRule) -> RuleKey:
    """What tells rules apart: two tenants may each have a rule of the same name."""
    return (rule.namespace, rule.name)


def select(rules: Sequence[CompiledRule], min_priority: str,
           selection: Selection) -> set[RuleKey]:
    """(namespace, name) of the enabled rules after the ordered enable/disable actions
    (by name or tag, across namespaces) and priority."""
    floor = parse_priority(min_priority)
    if floor is None:
        raise ValueError(f"invalid minimum priority '{min_priority}'")
    rank = PRIORITIES.index(floor)
    enabled = {_key(r) for r in rules if r.enabled}
    for action, kind, value in selection:
        if action not in ("enable", "disable") or kind not in ("rule", "tag"):
            raise ValueError(f"invalid selection action {(action, kind, value)!r}")
        if kind == "rule":
            rx = _name_matcher(value)
            hit = {_key(r) for r in rules if rx.fullmatch(r.name)}
        else:
            hit = {_key(r) for r in rules if value in r.tags}
        enabled = enabled | hit if action == "enable" else enabled - hit
    return {_key(r) for r in rules if _key(r) in enabled and PRIORITIES.index(r.priority) <= rank}


class Ruleset:
    """Compiled rules plus the options that decide which fire and how many."""

    def __init__(self, rules: Sequence[CompiledRule], min_priority: str = "debug",
                 rule_matching: str = "first", selection: Selection = ()) -> None:
        if rule_matching not in ("first", "all"):
            raise ValueError(f"rule_matching must be 'first' or 'all', not {rule_matching!r}")
        self.rules = sorted(rules, key=lambda r: r.order)
        self.first_only = rule_matching == "first"
        names = select(self.rules, min_priority, selection)
        self.enabled = [r for r in self.rules if _key(r) in names]
        self._buckets: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        self._bound: dict[tuple[type, str, str], Bucket] = {}
        self._memo = Memo()
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

    def bucket(self, event: Event) -> Bucket:
        """The rules of the event's class, source and type, bound (made on first use)."""
        cls, source, evt_type = event.__class__, event.source, event.type
        key = (cls, source, evt_type)
        found = self._bound.get(key)
        if found is None:
            resolve: Resolve | None = getattr(cls, "accessor", None)
            found = bind_bucket(self.rules_for(source, evt_type), resolve,
                                evt_type if evt_type in EVENT_NAMES else None, self._memo)
            self._bound[key] = found
        return found

    def evaluate(self, event: Event) -> list[Alert]:
        """The alerts one event raises (at most one with rule_matching "first")."""
        alerts: list[Alert] = []
        bucket = self._bound.get((event.__class__, event.source, event.type))
        if bucket is None:
            bucket = self.bucket(event)
        if not bucket.entries:
            return alerts
        self._memo.vals = {}
        try:
            candidates = bucket.candidates(event)
        except Exception:  # noqa: BLE001 - an index read failed: evaluate them all
            self.errors += 1
            candidates = bucket.entries
        for rule, check in candidates:
            try:
                if not check(event):
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
                     list(rule.tags), rule.namespace)

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

