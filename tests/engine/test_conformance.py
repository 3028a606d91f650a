"""Falco rule-language conformance: every case in `conformance/*.yaml` is one pytest case.

Why data and not code: each case pins one fact of Falco's language (an operator, a
loader rule, a diagnostic and its position) in a form that reads like a rules file, so
that a reviewer can check it against Falco's sources, and the engine can never pass by
accident. The test id is `<file stem>::<case name>`.

Case format (each file is a YAML sequence of cases; unknown keys are an error):

    - name: startswith matches a prefix      # unique within the file
      why: libs filter_compare.cpp CO_STARTSWITH   # optional: source of truth
      condition: evt.type = openat and fd.name startswith /etc/
      # `condition:` is shorthand for this rules text (so condition errors sit on
      # line 3 and the condition starts at column 14):
      #   - rule: R
      #     desc: d
      #     condition: <condition>
      #     output: <output, default "fired", as a double-quoted YAML scalar>
      #     priority: <priority, default WARNING>
      # Otherwise give the whole text with `rules: |` (one file named rules.yaml), or
      # several files with `files: [{name: a.yaml, text: ...}, ...]` (loaded in order
      # as one set).
      options: {rule_matching: all}          # optional EngineOptions fields; selection
                                             # is a list of [action, kind, pattern]
      reload: {rules: "...", errors: [...]}  # optional second load (errors expected:
                                             # the first ruleset must survive it)
      events:                                # replay lines, evaluated in order after
        - fields: {evt.type: openat, fd.name: /etc/passwd}   # loading; a mapping
        - {evt.type: openat, fd.name: /tmp/x}                 # without `fields` is
                                                              # shorthand for its fields
      expect:
        matches: [true, false]       # per event: did rule R (and only R) fire
        alerts:                      # or, per event, the alerts in order: a rule name,
          - [R]                      # or a mapping {rule, output, priority, tags,
          - []                       #   source, json (subset of to_json("testhost"),
                                     #   whose "output" must equal text_line()),
                                     #   text_endswith (suffix of text_line())}
        errors: [{code: LOAD_ERR_COMPILE_CONDITION, line: 3, column: 36}]
        warnings: [{code: LOAD_UNUSED_MACRO, item_name: m}]
        exact_diagnostics: true      # no other error or warning than those listed
        absent_warnings: [{code: LOAD_UNUSED_LIST}]   # no warning matches any of these
        counts: {rules: 1, macros: 0, lists: 0}
        event_types: [open, openat]  # ruleset.event_types("syscall"); null = any type

Diagnostics are matched by the keys given (code, message, line, column, file,
item_kind, item_name); each expected entry must match a distinct reported one. Without `errors`
the load must succeed. Events need a loaded ruleset, so they only go with a good load
(or a failed reload after a good load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from falconer.engine import (
    Diagnostic,
    Engine,
    EngineOptions,
    LoadResult,
    MappingEvent,
    RulesSource,
)

CASE_DIR = Path(__file__).parent / "conformance"
#: 2023-11-14T22:13:20Z; event i of a case happens i ns later, so times are easy to write.
BASE_TIME_NS = 1_700_000_000_000_000_000
HOSTNAME = "testhost"

CASE_KEYS = {"name", "why", "condition", "output", "priority", "rules", "files",
             "options", "reload", "events", "expect"}
EXPECT_KEYS = {"matches", "alerts", "errors", "warnings", "absent_warnings", "counts",
               "event_types", "exact_diagnostics"}
DIAG_KEYS = {"code", "message", "line", "column", "file", "item_kind", "item_name"}
ALERT_KEYS = {"rule", "output", "priority", "tags", "source", "json", "text_endswith"}
OPTION_KEYS = {"min_priority", "rule_matching", "selection"}
SHORTHAND_RULE = ("- rule: R\n"
                  "  desc: d\n"
                  "  condition: {condition}\n"
                  "  output: {output}\n"
                  "  priority: {priority}\n")


@dataclass(frozen=True)
class Case:
    """One conformance case read from a YAML file."""

    file: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        """The pytest id: file stem and case name."""
        return f"{self.file}::{self.data['name']}"


def _check_keys(where: str, mapping: dict[str, Any], allowed: set[str]) -> None:
    """Reject unknown keys, so a typo cannot silently turn an assertion off."""
    unknown = set(mapping) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")


def _validate(case: Case) -> None:
    """Check a case's shape when collecting, so a malformed case fails loudly."""
    data = case.data
    _check_keys(case.id, data, CASE_KEYS)
    sources = [k for k in ("condition", "rules", "files") if k in data]
    if len(sources) != 1:
        raise ValueError(f"{case.id}: give exactly one of condition, rules, files")
    expect = data.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise ValueError(f"{case.id}: `expect` must be a non-empty mapping")
    _check_keys(case.id, expect, EXPECT_KEYS)
    _check_keys(case.id, data.get("options", {}), OPTION_KEYS)
    if "reload" in data:
        reload = data["reload"]
        _check_keys(f"{case.id} reload", reload, {"condition", "rules", "files", "errors"})
        if not reload.get("errors"):
            raise ValueError(f"{case.id}: a reload is there to fail; give its errors")
    events = data.get("events", [])
    for key in ("matches", "alerts"):
        if key in expect and len(expect[key]) != len(events):
            raise ValueError(f"{case.id}: expect.{key} needs one entry per event")
    if events and "matches" not in expect and "alerts" not in expect:
        raise ValueError(f"{case.id}: events without expect.matches or expect.alerts")
    if "matches" in expect and "condition" not in data and "rules" not in data:
        raise ValueError(f"{case.id}: expect.matches needs a rule named R")
    for key in ("errors", "warnings", "absent_warnings"):
        for diag in expect.get(key, []):
            _check_keys(f"{case.id} {key}", diag, DIAG_KEYS)
            if "code" not in diag:
                raise ValueError(f"{case.id}: every {key} entry needs a code")
    for per_event in expect.get("alerts", []):
        for alert in per_event:
            if isinstance(alert, dict):
                _check_keys(f"{case.id} alerts", alert, ALERT_KEYS)


def load_cases() -> list[Case]:
    """Every case of every conformance file, in file then case order."""
    cases: list[Case] = []
    for path in sorted(CASE_DIR.glob("*.yaml")):
        try:
            items = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path.name}: not valid YAML: {exc}") from exc
        if not isinstance(items, list):
            raise ValueError(f"{path.name}: a conformance file is a YAML sequence of cases")
        names: set[str] = set()
        for item in items:
            case = Case(path.stem, item)
            _validate(case)
            if item["name"] in names:
                raise ValueError(f"{case.id}: duplicate case name")
            names.add(item["name"])
            cases.append(case)
    return cases


def shorthand_rules(data: dict[str, Any]) -> str:
    """Expand `condition:` into its one-rule file, checking YAML keeps it verbatim.

    The condition stays a plain scalar so that positions in it are exact; the output is
    written as a JSON string, which is a valid double-quoted YAML scalar for any text.
    """
    text = SHORTHAND_RULE.format(condition=data["condition"],
                                 output=json.dumps(data.get("output", "fired")),
                                 priority=data.get("priority", "WARNING"))
    parsed = yaml.safe_load(text)
    if parsed[0]["condition"] != data["condition"]:
        raise ValueError(f"condition {data['condition']!r} is not a plain YAML scalar; "
                         "use `rules:` instead")
    return text


def sources_of(data: dict[str, Any]) -> list[RulesSource]:
    """The rules files a case (or its reload) loads, in order."""
    if "condition" in data:
        return [RulesSource(name="rules.yaml", text=shorthand_rules(data))]
    if "rules" in data:
        return [RulesSource(name="rules.yaml", text=data["rules"])]
    return [RulesSource(name=f["name"], text=f["text"]) for f in data["files"]]


def engine_options(options: dict[str, Any]) -> EngineOptions:
    """EngineOptions from a case's `options`, with Falco's defaults for the rest."""
    return EngineOptions(
        min_priority=options.get("min_priority", "debug"),
        rule_matching=options.get("rule_matching", "first"),
        selection=tuple(tuple(action) for action in options.get("selection", ())),
    )


def describe(diags: list[Diagnostic]) -> str:
    """A readable list of diagnostics for assertion messages."""
    return "\n".join(
        f"  {d.code} {d.file}:{d.line}:{d.column} {d.item_kind} {d.item_name!r}: {d.message}"
        for d in diags) or "  (none)"


def diag_matches(diag: Diagnostic, expected: dict[str, Any]) -> bool:
    """Whether a reported diagnostic has every key-value an expectation names."""
    return all(getattr(diag, key) == value for key, value in expected.items())


def assert_diagnostics(kind: str, actual: list[Diagnostic],
                       expected: list[dict[str, Any]]) -> None:
    """Each expected diagnostic must match a distinct reported one."""
    unused = list(actual)
    for exp in expected:
        hit = next((d for d in unused if diag_matches(d, exp)), None)
        assert hit is not None, f"no {kind} matching {exp}; reported:\n{describe(actual)}"
        unused.remove(hit)


def assert_load(result: LoadResult, expect: dict[str, Any]) -> None:
    """Check errors, warnings and counts of one load against a case's expectations."""
    expected_errors = expect.get("errors", [])
    if expected_errors:
        assert not result.ok, "load succeeded but errors were expected"
        assert_diagnostics("error", result.errors, expected_errors)
    else:
        assert result.ok, f"unexpected load errors:\n{describe(result.errors)}"
    assert_diagnostics("warning", result.warnings, expect.get("warnings", []))
    for absent in expect.get("absent_warnings", []):
        hits = [d for d in result.warnings if diag_matches(d, absent)]
        assert not hits, f"unexpected warning matching {absent}:\n{describe(hits)}"
    if expect.get("exact_diagnostics"):
        assert len(result.errors) == len(expected_errors), describe(result.errors)
        assert len(result.warnings) == len(expect.get("warnings", [])), describe(result.warnings)
    if "counts" in expect:
        assert result.counts == expect["counts"]


def replay_line(event: dict[str, Any], index: int) -> dict[str, Any]:
    """A full replay line from a case event (shorthand: a bare mapping of fields)."""
    line = dict(event) if "fields" in event else {"fields": dict(event)}
    line.setdefault("source", "syscall")
    line.setdefault("time", BASE_TIME_NS + index)
    return line


def assert_alert(alert: Any, expected: str | dict[str, Any], where: str) -> None:
    """Compare one fired alert with its expectation (a rule name or a mapping)."""
    if isinstance(expected, str):
        expected = {"rule": expected}
    assert alert.rule == expected["rule"], where
    for key in ("output", "priority", "source"):
        if key in expected:
            assert getattr(alert, key) == expected[key], f"{where}: {key}"
    if "tags" in expected:
        # Falco keeps tags in a std::set: compare as sets, order is not part of the contract
        assert sorted(alert.tags) == sorted(expected["tags"]), where
    if "text_endswith" in expected:
        assert alert.text_line().endswith(expected["text_endswith"]), where
    if "json" in expected:
        doc = alert.to_json(HOSTNAME)
        # Falco's JSON "output" is the whole text line (time, priority, message):
        # falco userspace/engine/formats.cpp format_event, output = prefix + " " + message
        assert doc["output"] == alert.line(), f"{where}: json output vs alert line"
        for key, value in expected["json"].items():
            got = sorted(doc[key]) if key == "tags" else doc[key]
            want = sorted(value) if key == "tags" else value
            assert got == want, f"{where}: json[{key!r}]"


def assert_events(engine: Engine, case: Case) -> None:
    """Replay the case's events and compare the alerts of each."""
    expect = case.data["expect"]
    events = case.data.get("events", [])
    if not events:
        return
    assert engine.ruleset is not None, "events given but no ruleset is loaded"
    for index, event in enumerate(events):
        alerts = engine.ruleset.evaluate(MappingEvent.from_json(replay_line(event, index)))
        fired = [a.rule for a in alerts]
        where = f"event #{index} {event}: fired {fired}"
        if "matches" in expect:
            assert fired == (["R"] if expect["matches"][index] else []), where
        if "alerts" in expect:
            wanted = expect["alerts"][index]
            assert len(alerts) == len(wanted), where
            for alert, exp in zip(alerts, wanted):
                assert_alert(alert, exp, where)


CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conformance(case: Case) -> None:
    """Load the case's rules, check diagnostics, replay its events."""
    data = case.data
    expect = data["expect"]
    engine = Engine(engine_options(data.get("options", {})))
    assert_load(engine.load(sources_of(data)), expect)
    if "reload" in data:
        reload = data["reload"]
        before = engine.ruleset
        result = engine.load(sources_of(reload))
        assert_load(result, {"errors": reload["errors"]})
        assert engine.ruleset is before, "a failed load must keep the last good ruleset"
    if "event_types" in expect:
        assert engine.ruleset is not None
        got = engine.ruleset.event_types(source="syscall")
        want = expect["event_types"]
        assert got == (None if want is None else frozenset(want))
    assert_events(engine, case)


def test_enough_cases() -> None:
    """The suite is meant to be broad: at least 150 cases across the topic files."""
    assert len(CASES) >= 150
