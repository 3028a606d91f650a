"""Roll the sensors' own reports up into FalcoInstance and FalcoRule status.

Each sensor writes `FalcoInstance.status.sensors.<node>` (`report.NodeReport`): the rules
hash and FalcoRule generations it has *loaded*, when, its last reload error, alert
counts by rule (since the sensor started) and losses. From those, and only those (status
never claims rules a sensor has not reported loading):

- the instance: how many sensors report, how many run the current rules hash, and the
  condition `RulesLoaded`, False while any reporting sensor runs other rules or failed
  its last reload (and while none has reported yet);
- each FalcoRule: how many sensors run its current generation, and the alerts of the
  rules it defines, by rule, summed over the sensors that run it.

A sensor re-reports at least every `status.HEARTBEAT_S` seconds; a report older than
`STALE_AFTER_S` is a sensor that is gone (its node removed, its pod deleted) and is
neither counted nor kept.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from falconer.operator.spec import FalcoRuleSpec
from falconer.operator.status import Verdict
from falconer.sensorreport import SENSORS_KEY, NodeReport, rule_key
from falconer.shapes import ShapeError

#: A report older than this (seconds) is from a sensor that is gone.
STALE_AFTER_S = 300.0
#: Nodes named in a condition message, at most.
MAX_NAMED = 5


@dataclass(frozen=True)
class InstanceRollup:
    """What the instance's sensors report, summed."""

    reporting: int
    current: int
    verdict: Verdict
    stale_nodes: tuple[str, ...]        # reports to remove (sensors that are gone)


def fresh_reports(status: Mapping[str, Any] | None, now: datetime.datetime) -> dict[str, NodeReport]:
    """The live sensors' reports of an instance status, by node."""
    out = {}
    for node, raw in ((status or {}).get(SENSORS_KEY) or {}).items():
        if isinstance(raw, dict):
            report = NodeReport.from_status(raw)
            if _age_s(report.reported_at, now) <= STALE_AFTER_S:
                out[node] = report
    return out


def _age_s(stamp: str, now: datetime.datetime) -> float:
    try:
        when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return float("inf")
    return (now - when).total_seconds()


def instance_rollup(status: Mapping[str, Any] | None, rules_hash: str, now: datetime.datetime) -> InstanceRollup:
    """Count the reporting and current sensors; decide `RulesLoaded`."""
    all_nodes = set(((status or {}).get(SENSORS_KEY) or {}))
    reports = fresh_reports(status, now)
    failed = {n: r.last_reload_error for n, r in reports.items() if r.last_reload_error}
    stale = sorted(n for n, r in reports.items() if r.rules_hash != rules_hash)
    current = len(reports) - len(stale)
    if failed:
        verdict = Verdict("RulesLoaded", False, "ReloadFailed",
                          "the last rules change failed to load on " + _named(failed)
                          + "; those sensors keep their previous rules: "
                          + "; ".join(f"{n}: {e.splitlines()[0] if e else ''}" for n, e in sorted(failed.items())[:MAX_NAMED]))
    elif stale:
        verdict = Verdict("RulesLoaded", False, "StaleRules",
                          f"{len(stale)} of {len(reports)} sensors do not run rules hash {rules_hash or '(none)'} yet: "
                          + _named(stale))
    elif not reports:
        verdict = Verdict("RulesLoaded", False, "NoReports", "no sensor has reported the rules it loaded yet")
    else:
        verdict = Verdict("RulesLoaded", True, "Current", f"{current}/{len(reports)} sensors run rules hash {rules_hash}")
    return InstanceRollup(len(reports), current, verdict, tuple(sorted(all_nodes - set(reports))))


def _named(nodes: Iterable[str]) -> str:
    names = sorted(nodes)
    more = len(names) - MAX_NAMED
    return ", ".join(names[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")


def rule_rollup(namespace: str, name: str, generation: int, rule_names: Sequence[str],
                instances: Sequence[Mapping[str, Any]], now: datetime.datetime) -> dict[str, Any]:
    """A FalcoRule's `sensors` (sensors running its current generation) and `alerts`
    (its rules' alert counts from the sensors that run any generation of it; a tenant's
    rules are counted as `<namespace>/<rule>` by the sensors, see report.rule_key)."""
    running = 0
    by_rule: collections.Counter[str] = collections.Counter()
    for inst in instances:
        for report in fresh_reports(inst.get("status"), now).values():
            mine = [o for o in report.falco_rules if (o.namespace, o.name) == (namespace, name)]
            if not mine:
                continue
            if any(o.generation == generation for o in mine):
                running += 1
            wanted = {rule_key(mine[0].tenant or "", rule): rule for rule in rule_names}
            for key, n in report.alerts_by_rule.items():
                if key in wanted:
                    by_rule[wanted[key]] += n
    return {"sensors": running, "alerts": {"total": sum(by_rule.values()), "byRule": dict(sorted(by_rule.items()))}}


def defined_rules(spec: FalcoRuleSpec | ShapeError) -> list[str]:
    """The rule names a FalcoRule's items define (or append to); none for a spec that
    did not parse."""
    if isinstance(spec, ShapeError):
        return []
    return [str(i["rule"]) for i in spec.items if i.get("rule")]
