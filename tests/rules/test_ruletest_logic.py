"""The rule-test runner's pure parts: reading suites, judging alerts, reporting."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from falconer import paths
from falconer.engine import Engine, RulesSource
from falconer.ruletest import report, runner, suite

GOOD = """
- name: reads shadow
  rule: R
  context: {user: nobody, process: cat, parents: [nginx, systemd], container: true,
            network: [169.254.169.254], tmpfs: [/etc/cron.d]}
  steps:
    - run: cat /etc/shadow
      check: false
    - open: {path: "{workdir}/f", mode: write}
    - setns: {namespace: net}
    - sleep: {seconds: 1}
    - bpf_prog_load: {}
  expect: {alert: true, priority: warning, output_fields: {fd.name: /etc/shadow}}
- name: benign
  steps: [{run: "true"}]
  expect: {alert: false}
"""


def _load(tmp_path: Path, text: str) -> list[suite.RuleTest]:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return suite.load([f])


def test_a_suite_reads_into_typed_tests(tmp_path: Path) -> None:
    first, second = _load(tmp_path, GOOD)
    assert first.context.chain == ["systemd", "nginx", "cat"]
    assert first.context.uid == 65534 and first.context.container
    assert first.steps[0] == {"kind": "run", "args": {"command": "cat /etc/shadow", "check": False}}
    assert first.steps[3]["args"] == {"seconds": 1.0}
    assert first.expect.priority == "WARNING"
    assert second.rule is None and second.context.chain == [suite.DEFAULT_PROCESS]


@pytest.mark.parametrize("text,message", [
    ("- {name: a, steps: [{run: x}], expect: {alert: true}}", "without `rule`"),
    ("- {name: a, rule: R, steps: [{run: x}], expect: {alert: maybe}}", "true or false"),
    ("- {name: a, rule: R, steps: [{fly: x}], expect: {alert: false}}", "exactly one of"),
    ("- {name: a, rule: R, steps: [{open: {path: /x, mode: rw}}], expect: {alert: false}}",
     "'rw' is not one of"),
    ("- {name: a, rule: R, steps: [{connect: {address: x}}], expect: {alert: false}}",
     "missing argument port"),
    ("- {name: a, rule: R, steps: [{run: x}], expect: {alert: true, priority: LOUD}}",
     "is not one of EMERGENCY"),
    ("- {name: a, rule: R, steps: [{run: x}], expect: {alert: false, priority: INFO}}",
     "only apply when alert is true"),
    ("- {name: a, rule: R, context: {process: a-name-far-too-long}, steps: [{run: x}], "
     "expect: {alert: false}}", "1..15 bytes"),
    ("- {name: a, rule: R, context: {user: no-such-user-here}, steps: [{run: x}], "
     "expect: {alert: false}}", "no such user"),
    ("- {name: a, rule: R, context: {pod: {image: busybox}, container: true}, "
     "steps: [{run: x}], expect: {alert: false}}", "cannot be combined"),
    ("- {name: a, rule: R, steps: [], expect: {alert: false}}", "non-empty list"),
    ("- {name: a, rule: R, context: {pod: {image: busybox}}, steps: [{open: {path: /x}}], "
     "expect: {alert: false}}", "in a pod, steps are run and exec"),
    ("- {name: a, rule: R, context: {pod: {image: busybox, privileged: yes please}}, "
     "steps: [{run: x}], expect: {alert: false}}", "privileged: expected true or false"),
    ("- {name: a, rule: R, steps: [{run: x}], expect: {alert: false}, when: now}",
     "unknown key(s) when"),
    ("- {name: a, rule: R, steps: [{run: x}], expect: {alert: false}}\n"
     "- {name: a, rule: R, steps: [{run: x}], expect: {alert: false}}", "used twice"),
    ("{name: a}", "a YAML list of tests"),
])
def test_bad_suites_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(suite.SuiteError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert str(tmp_path / "s.yaml") in str(info.value)


def test_placeholders_are_replaced_everywhere() -> None:
    got = suite.substitute({"a": ["{workdir}/x", "{nonce}"], "n": 3}, "/w", "rt1")
    assert got == {"a": ["/w/x", "rt1"], "n": 3}


def test_the_overlay_loads_on_top_of_the_default_rules() -> None:
    engine = Engine()
    base = paths.default_rules_files()
    _, names = runner.load_rules(base)
    result = engine.load([*base, RulesSource("overlay.yaml", runner.overlay_text(names, "/b"))])
    assert result.errors == [] and result.warnings == []
    assert engine.ruleset is not None
    assert len(engine.ruleset.rules) == len(names) + 1


def _test(alert: bool, **expect: object) -> suite.RuleTest:
    return suite.RuleTest(name="t", rule="R", context=suite.Context(), steps=(),
                          expect=suite.Expect(alert, **expect), file="f.yaml")  # type: ignore[arg-type]


def _alert(rule: str = "R", priority: str = "Warning", **fields: object) -> dict[str, object]:
    return {"rule": rule, "priority": priority, "output": "o", "output_fields": fields}


def test_verdicts() -> None:
    fire = _test(True, priority="WARNING", output_fields={"fd.name": "{workdir}/*"})
    assert runner._verdict(fire, [_alert(**{"fd.name": "/w/a"})], "/w", "n").status == "pass"
    assert "expected '/w/*'" in runner._verdict(
        fire, [_alert(**{"fd.name": "/x"})], "/w", "n").reason
    assert "priority" in runner._verdict(
        fire, [_alert(priority="Notice", **{"fd.name": "/w/a"})], "/w", "n").reason
    assert runner._verdict(fire, [_alert("Other")], "/w", "n").reason == "no alert (other rules: Other)"
    miss = _test(False)
    assert runner._verdict(miss, [_alert("Other")], "/w", "n").status == "pass"
    assert runner._verdict(miss, [_alert()], "/w", "n").status == "fail"
    anything = suite.RuleTest(name="b", rule=None, context=suite.Context(), steps=(),
                              expect=suite.Expect(False), file="f")
    assert runner._verdict(anything, [_alert("Other")], "/w", "n").status == "fail"


def test_coverage_names_what_each_rule_lacks() -> None:
    def case(rule: str | None, alert: bool) -> suite.RuleTest:
        return suite.RuleTest(name=f"{rule}{alert}", rule=rule, context=suite.Context(),
                              steps=(), expect=suite.Expect(alert), file="f")
    tests = [case("A", True), case("A", False), case("B", True), case("C", False),
             case(None, False), case("Gone", True)]
    assert suite.coverage(["A", "B", "C", "D"], tests) == {
        "B": [suite.NEAR_MISS], "C": [suite.FIRING], "D": [suite.FIRING, suite.NEAR_MISS],
        "Gone": ["not a loaded rule"]}
    assert suite.coverage(["A"], tests[:2]) == {}


def test_alerts_are_attributed_by_ancestry() -> None:
    assert runner._pids(_alert(**{"proc.pid": 7, "proc.apid": "5 3 1"})) == {7, 5, 3, 1}
    assert runner._pids({"rule": "x"}) == set()


def test_table_and_junit(tmp_path: Path) -> None:
    results = [runner.Result(_test(True), "pass", seconds=0.5),
               runner.Result(_test(False), "fail", "near miss raised: R", alerts=[_alert()]),
               runner.Result(_test(True), "error", "context: no cgroup")]
    out = tmp_path / "table.txt"
    with out.open("w") as f:
        report.table(f, results)
    text = out.read_text()
    assert text.splitlines()[0].split() == ["STATUS", "RULE", "TEST", "REASON"]
    assert "3 tests: 1 passed, 1 failed, 1 errors" in text
    junit = tmp_path / "j.xml"
    report.junit(junit, results)
    root = ET.parse(junit).getroot()
    suite_el = root.find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "1" and suite_el.get("errors") == "1"
    cases = suite_el.findall("testcase")
    assert [c.get("classname") for c in cases] == ["R", "R", "R"]
    assert cases[1].find("failure") is not None and cases[2].find("error") is not None
