"""Conditions: the human view and what kstatus (Flux, Argo CD) computes from it."""

from __future__ import annotations

from typing import Any

import pytest

from falconer.operator import status
from falconer.operator.rules import Compiled, Finding
from falconer.operator.status import InstanceState, RolloutState


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' generic rules (cli-utils pkg/kstatus/status/generic.go), restated."""
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    observed = obj.get("status", {}).get("observedGeneration")
    if observed is not None and observed != obj["metadata"]["generation"]:
        return "InProgress"
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == "Reconciling" and c["status"] == "True":
            return "InProgress"
        if c["type"] == "Stalled" and c["status"] == "True":
            return "Failed"
    return "Current"


def rollout(desired: int = 2, ready: int = 2, updated: int | None = None, observed: int = 3) -> RolloutState:
    return RolloutState(generation=3, observed_generation=observed, desired=desired,
                        updated=desired if updated is None else updated, ready=ready, available=ready)


def as_object(state: InstanceState, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    conditions = status.merge_conditions([], status.instance_verdicts(state), observed, "2026-11-25T00:00:00Z")
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "conditions": conditions}}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("state", "ready_reason", "health"),
    [
        (InstanceState(selected=2, rollout=rollout()), "Ready", "Current"),
        (InstanceState(selected=2, rollout=rollout(ready=1)), "RollingOut", "InProgress"),
        (InstanceState(selected=2, rollout=rollout(observed=2)), "RollingOut", "InProgress"),
        (InstanceState(selected=2, rollout=None), "Creating", "InProgress"),
        (InstanceState(selected=0, rollout=rollout()), "NoRulesSelected", "Failed"),
        (InstanceState(selected=1, rollout=rollout(desired=0, ready=0)), "NoMatchingNodes", "Failed"),
        (InstanceState(selected=1, invalid_rules=("a",), rollout=rollout()), "FalcoRuleInvalid", "Failed"),
        (InstanceState(selected=1, compile_errors=("x",), rollout=rollout()), "RulesInvalid", "Failed"),
        (InstanceState(selected=1, apply_error="422", rollout=rollout()), "ApplyFailed", "Failed"),
    ],
)
def test_instance_conditions_and_kstatus(state: InstanceState, ready_reason: str, health: str) -> None:
    obj = as_object(state)
    ready = condition(obj, "Ready")
    assert ready["reason"] == ready_reason
    assert (ready["status"] == "True") is (health == "Current")
    assert condition(obj, "Reconciling")["status"] == condition(obj, "Progressing")["status"]
    assert condition(obj, "Stalled")["status"] == condition(obj, "Degraded")["status"]
    assert kstatus(obj) == health


def test_stale_generation_is_in_progress_for_kstatus() -> None:
    assert kstatus(as_object(InstanceState(selected=1, rollout=rollout()), generation=2, observed=1)) == "InProgress"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = status.merge_conditions([], [status.Verdict("Ready", False, "RollingOut", "0/1")], 1, "T1")
    same = status.merge_conditions(first, [status.Verdict("Ready", False, "RollingOut", "1/2")], 2, "T2")
    flipped = status.merge_conditions(same, [status.Verdict("Ready", True, "Ready", "2/2")], 2, "T3")
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["message"] == "1/2"
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_rule_redefinition_is_its_own_condition() -> None:
    obj = as_object(InstanceState(selected=2, redefined=("rule 'X' ...",), rollout=rollout()))
    assert condition(obj, "RulesRedefined")["status"] == "True"
    assert kstatus(obj) == "Current"


def test_rollout_from_daemonset() -> None:
    ds = {"metadata": {"generation": 4}, "status": {"observedGeneration": 4, "desiredNumberScheduled": 3,
                                                   "updatedNumberScheduled": 3, "numberReady": 2}}
    r = RolloutState.from_daemonset(ds)
    assert (r.observed, r.rolled_out, r.desired, r.ready) == (True, False, 3, 2)
    assert not RolloutState.from_daemonset({"metadata": {"generation": 1}}).observed


def rule_object(compiled: Compiled, selected_by: int, applied_in: int | None = None) -> dict[str, Any]:
    applied = selected_by if applied_in is None else applied_in
    conditions = status.merge_conditions([], status.rule_verdicts(compiled, selected_by, applied), 1, "T")
    return {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": conditions}}


def test_rule_conditions() -> None:
    ok = Compiled(counts={"rules": 2, "macros": 1, "lists": 0}, errors=(), warnings=())
    bad = Compiled(counts={"rules": 0, "macros": 0, "lists": 0}, warnings=(), errors=tuple(
        Finding("LOAD_ERR_COMPILE_CONDITION", f"problem {n}", "fr", f"spec.items[{n}].condition", 1, 5)
        for n in range(5)))
    used = rule_object(ok, 2)
    assert condition(used, "Valid")["message"] == "2 rules, 1 macros, 0 lists; 0 warning(s)"
    assert (condition(used, "Applied")["status"], kstatus(used)) == ("True", "Current")
    assert condition(rule_object(ok, 0), "Applied")["reason"] == "NotSelected"
    half = rule_object(ok, 2, applied_in=1)   # one instance's apply was refused
    assert (condition(half, "Applied")["status"], condition(half, "Applied")["reason"]) == ("False", "NotApplied")
    broken = rule_object(bad, 1)
    assert (condition(broken, "Valid")["status"], kstatus(broken)) == ("False", "Failed")
    message = condition(broken, "Valid")["message"]
    assert message.startswith("5 error(s): fr spec.items[0].condition:1:5: LOAD_ERR_COMPILE_CONDITION: problem 0")
    assert message.endswith("(and 2 more, see status.errors)")


def test_rule_events_only_when_the_valid_condition_changes() -> None:
    long = Compiled(counts={"rules": 0, "macros": 0, "lists": 0}, warnings=(), errors=(
        Finding("LOAD_ERR_COMPILE_CONDITION", "x" * 3000, "fr", "spec.items[0].condition", 1, 1),))
    new, verdicts = status.rule_status({}, long, None, 0, 1, 0)
    assert status.rule_events(None, verdicts) == [("Warning", "CompileFailed", verdicts[0].message)]
    # The stored message is cut to MAX_MESSAGE: reading it back must not count as a change.
    assert len(new["conditions"][0]["message"]) == status.MAX_MESSAGE
    assert status.rule_events(new["conditions"], verdicts) == []
    ok = Compiled(counts={"rules": 1, "macros": 0, "lists": 0}, errors=(), warnings=())
    _, fixed = status.rule_status(new, ok, "abc", 0, 2, 0)
    assert status.rule_events(new["conditions"], fixed) == [("Normal", "Compiled", fixed[0].message)]


def test_instance_events_for_new_problems_and_readiness_only() -> None:
    stuck = status.instance_verdicts(InstanceState(selected=0, rollout=rollout()))
    (event,) = status.instance_events(None, stuck)
    assert event[:2] == ("Warning", "NoRulesSelected")
    before = status.merge_conditions([], stuck, 1, "T")
    assert status.instance_events(before, stuck) == []
    ready = status.instance_verdicts(InstanceState(selected=1, rollout=rollout()))
    assert [e[:2] for e in status.instance_events(before, ready)] == [("Normal", "Ready")]
