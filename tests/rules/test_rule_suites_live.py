"""`falconer test` for real: the default suites pass on this kernel, a custom rule's
suite passes, and wrong expectations fail with exit 1, the table and JUnit XML.

Each run starts its own eBPF sensor (root); the default suites take a few minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import prereq
import pytest

from falconer import paths
from falconer.ruletest import suite

EXAMPLES = paths.RULES_DIR / "examples"
DEFAULT_SUITES = sorted((paths.RULES_DIR / "tests").glob("*.yaml"))


def falconer_test(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    prereq.require_ebpf()
    env = dict(os.environ, PYTHONSAFEPATH="1")
    return subprocess.run([sys.executable, "-m", "falconer", "test", *args], text=True,
                          capture_output=True, timeout=timeout, env=env, cwd=paths.ROOT)


def junit_cases(path: Path) -> dict[str, str]:
    """test name -> "pass" | "failure" | "error"."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        bad = [c.tag for c in case if c.tag in ("failure", "error")]
        out[case.get("name", "")] = bad[0] if bad else "pass"
    return out


@pytest.mark.ebpf
@pytest.mark.timeout(1500)
def test_default_suites_pass_for_real(tmp_path: Path) -> None:
    # The benign workload (compilers, git, package queries) floods the sensor with events:
    # it gets a sensor of its own, so a backlog it leaves cannot cost a rule test its events.
    benign = [p for p in DEFAULT_SUITES if p.name.startswith("benign")]
    rules_suites = [p for p in DEFAULT_SUITES if p not in benign]
    cases: dict[str, str] = {}
    for n, suites in enumerate((rules_suites, benign)):
        junit = tmp_path / f"rules-{n}.xml"
        done = falconer_test(*map(str, suites), "--junit", str(junit))
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert "passed, 0 failed, 0 errors" in done.stdout
        cases.update(junit_cases(junit))
    tests = suite.load(DEFAULT_SUITES)
    assert len(cases) == len(tests) >= 80
    assert set(cases.values()) == {"pass"}
    for rule in {t.rule for t in tests if t.rule}:
        mine = [t for t in tests if t.rule == rule]
        assert any(t.expect.alert for t in mine) and any(not t.expect.alert for t in mine)
    assert any(t.rule is None for t in tests), "the benign workload runs in CI"


@pytest.mark.ebpf
def test_a_custom_rule_suite_passes_and_wrong_expectations_fail(tmp_path: Path) -> None:
    rules = str(EXAMPLES / "payments_rules.yaml")
    done = falconer_test(str(EXAMPLES / "payments_rules.test.yaml"), "--rules", rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 tests: 2 passed, 0 failed, 0 errors" in done.stdout

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("""
- name: expects an alert for the near miss
  rule: Payments configuration read by another program
  context: {process: payments-api, tmpfs: [/srv]}
  steps:
    - run: mkdir -p /srv/payments/config && echo x > /srv/payments/config/a
    - open: {path: /srv/payments/config/a}
  expect: {alert: true}
- name: a benign step that is not
  context: {tmpfs: [/srv]}
  steps:
    - run: mkdir -p /srv/payments/config && echo x > /srv/payments/config/a && cat /srv/payments/config/a
  expect: {alert: false}
- name: names a rule that is not loaded
  rule: No such rule
  steps: [{run: "true"}]
  expect: {alert: false}
- name: in a pod
  rule: Payments configuration read by another program
  context: {pod: {image: busybox}}
  steps: [{run: "true"}]
  expect: {alert: false}
""")
    junit = tmp_path / "wrong.xml"
    done = falconer_test(str(wrong), "--rules", rules, "--junit", str(junit))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 tests: 0 passed, 2 failed, 2 errors" in done.stdout
    assert junit_cases(junit) == {
        "expects an alert for the near miss": "failure", "a benign step that is not": "failure",
        "names a rule that is not loaded": "error", "in a pod": "error"}
    assert "near miss raised: Payments configuration read by another program" in done.stdout
    assert "[4/4]" in done.stderr


def test_a_suite_with_errors_runs_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: a, rule: R, steps: [{fly: x}], expect: {alert: false}}\n")
    env = dict(os.environ, PYTHONSAFEPATH="1")
    done = subprocess.run([sys.executable, "-m", "falconer", "test", str(bad)], text=True,
                          capture_output=True, env=env, cwd=paths.ROOT, timeout=60)
    assert done.returncode == 2
    assert f"{bad}: a: step 1: expected exactly one of" in done.stderr
