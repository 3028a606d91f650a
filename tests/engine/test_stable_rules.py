"""Replay cases for every rule of Falco's upstream stable ruleset, loaded unchanged.

Why: the stable rules are what a Falco user runs by default; Falconer must detect the
same things. Each rule gets events that fire it and near misses that differ minimally
(`stable_rules/cases.yaml` documents the format), so the test proves both that the rule's
macros and lists are understood and that its exclusions work. The upstream file is
loaded with `rule_matching: all`, and each event checks only whether the named rule is
among the alerts (other rules may legitimately fire too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import upstream
import yaml

from falconer.engine import MappingEvent
from falconer.engine.ruleset import Ruleset

CASES_FILE = Path(__file__).parent / "stable_rules" / "cases.yaml"
#: 2023-11-14T22:13:20Z, an arbitrary fixed time for every replayed event.
EVENT_TIME_NS = 1_700_000_000_000_000_000


def upstream_rule_names() -> list[str]:
    """The names of the rules defined in the upstream stable file, in file order."""
    items = yaml.safe_load(upstream.STABLE.read_text(encoding="utf-8"))
    return [item["rule"] for item in items if isinstance(item, dict) and "rule" in item]


def load_spec() -> dict[str, Any]:
    """The replay cases file: defaults and one entry per rule."""
    return yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))


def event_fields(defaults: dict[str, Any], base: dict[str, Any],
                 fields: dict[str, Any]) -> dict[str, Any]:
    """Merge defaults, the rule's base and the event's fields; None removes a field."""
    merged = {**defaults, **base, **fields}
    return {name: value for name, value in merged.items() if value is not None}


def replay_params() -> list[Any]:
    """One pytest param per (rule, event): the rule, the fields, and whether it fires."""
    spec = load_spec()
    params = []
    for entry in spec["rules"]:
        for kind, fires in (("fires", True), ("near_misses", False)):
            for event in entry.get(kind, []):
                fields = event_fields(spec["defaults"], entry.get("base", {}), event["fields"])
                case_id = f"{entry['rule']}::{'fires' if fires else 'misses'}: {event['name']}"
                params.append(pytest.param(entry["rule"], fields, fires, id=case_id))
    return params


def test_stable_file_loads_every_rule(stable_ruleset: Ruleset) -> None:
    """All 25 rules load from the stable file (none dropped or skipped)."""
    assert len(upstream_rule_names()) == 25
    assert sorted(r.name for r in stable_ruleset.rules) == sorted(upstream_rule_names())


@pytest.mark.parametrize(("rule", "fields", "fires"), replay_params())
def test_stable_rule_replay(stable_ruleset: Ruleset, rule: str, fields: dict[str, Any],
                            fires: bool) -> None:
    """The named rule fires on its firing events and stays silent on its near misses."""
    event = MappingEvent.from_json({"source": "syscall", "time": EVENT_TIME_NS,
                                    "fields": fields})
    fired = [alert.rule for alert in stable_ruleset.evaluate(event)]
    assert (rule in fired) is fires, f"fired: {fired}"


def test_every_stable_rule_has_firing_and_near_miss_cases() -> None:
    """None of the 25 upstream rules can be forgotten, and no case names a stranger."""
    entries = {entry["rule"]: entry for entry in load_spec()["rules"]}
    names = upstream_rule_names()
    assert sorted(entries) == sorted(names)
    for name in names:
        assert entries[name].get("fires"), f"{name}: no firing event"
        assert entries[name].get("near_misses"), f"{name}: no near miss"
        # near misses are small changes of the base event, so the base itself must fire
        assert {} in [event["fields"] for event in entries[name]["fires"]], \
            f"{name}: the unchanged base event must be one of the firing events"
