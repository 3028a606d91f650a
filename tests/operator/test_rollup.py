"""Rolling the sensors' own reports up into FalcoInstance and FalcoRule status (pure logic)."""

from __future__ import annotations

import datetime

from falconer.operator import rollup
from falconer.sensorreport import NodeReport, RulesOrigin

NOW = datetime.datetime(2026, 11, 30, 8, 0, 0, tzinfo=datetime.UTC)
FRESH, OLD = "2026-11-30T07:59:58Z", "2026-11-30T07:00:00Z"


def report(hash_: str, error: str = "", at: str = FRESH, gen: int = 3, alerts: dict[str, int] | None = None):
    return NodeReport(hash_, (RulesOrigin("", "sec", "base", gen),), "2026-11-30T07:59:00Z", error, at,
                      sum((alerts or {}).values()), alerts or {}, {"kernel": 0}).to_status()


def test_all_sensors_current_is_true() -> None:
    r = rollup.instance_rollup({"sensors": {"a": report("h1"), "b": report("h1")}}, "h1", NOW)
    assert (r.reporting, r.current, r.verdict.status, r.verdict.reason) == (2, 2, True, "Current")


def test_a_stale_node_makes_it_false_and_is_named() -> None:
    r = rollup.instance_rollup({"sensors": {"a": report("h1"), "b": report("h0")}}, "h1", NOW)
    assert (r.current, r.verdict.status, r.verdict.reason) == (1, False, "StaleRules")
    assert "b" in r.verdict.message and "1 of 2" in r.verdict.message


def test_a_failed_reload_wins_and_shows_the_reason() -> None:
    r = rollup.instance_rollup({"sensors": {"a": report("h0", error="x.yaml:3:1: LOAD_ERR_YAML_PARSE: bad")}},
                               "h1", NOW)
    assert (r.verdict.status, r.verdict.reason) == (False, "ReloadFailed")
    assert "LOAD_ERR_YAML_PARSE" in r.verdict.message


def test_no_reports_is_not_current() -> None:
    r = rollup.instance_rollup({}, "h1", NOW)
    assert (r.reporting, r.verdict.status, r.verdict.reason) == (0, False, "NoReports")


def test_a_gone_sensor_is_not_counted_and_is_removed() -> None:
    r = rollup.instance_rollup({"sensors": {"a": report("h1"), "gone": report("h0", at=OLD)}}, "h1", NOW)
    assert (r.reporting, r.current, r.verdict.status, r.stale_nodes) == (1, 1, True, ("gone",))


def test_rule_rollup_counts_sensors_of_this_generation_and_its_rules_alerts() -> None:
    instances = [{"status": {"sensors": {"a": report("h", gen=3, alerts={"R1": 4, "Other": 9}),
                                         "b": report("h", gen=2, alerts={"R1": 1}),
                                         "c": report("h", gen=3, at=OLD, alerts={"R1": 100})}}}]
    out = rollup.rule_rollup("sec", "base", 3, ["R1", "R2"], instances, NOW)
    assert out == {"sensors": 1, "alerts": {"total": 5, "byRule": {"R1": 5}}}
    assert rollup.rule_rollup("sec", "elsewhere", 3, ["R1"], instances, NOW)["sensors"] == 0
