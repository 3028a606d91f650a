"""Status conditions: what the operator tells `kubectl`, Flux and Argo CD.

Conditions follow metav1.Condition. kstatus (the library behind Flux's and Argo CD's
health of custom resources) reads `status.observedGeneration` and two "abnormal-true"
conditions only: `Reconciling` (in progress) and `Stalled` (failed). So besides the
human-facing `Ready`/`Progressing`/`Degraded` the operator mirrors Progressing into
Reconciling and Degraded into Stalled. A condition's lastTransitionTime changes only
when its status does, so an unchanged verdict writes an unchanged status.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falconer.operator.rules import Compiled

#: Condition messages are cut to this length.
MAX_MESSAGE = 2048
#: An Event to post about the object: (type, reason, message).
EventSpec = tuple[str, str, str]


@dataclass(frozen=True)
class Verdict:
    """One condition as decided, before timestamps."""

    type: str
    status: bool
    reason: str
    message: str


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[dict[str, Any]] | None, verdicts: Sequence[Verdict], generation: int, at: str
) -> list[dict[str, Any]]:
    """The conditions list for `verdicts`, keeping transition times of unchanged statuses."""
    before = _by_type(existing)
    out = []
    for v in verdicts:
        status = "True" if v.status else "False"
        old = before.get(v.type) or {}
        since = old.get("lastTransitionTime", at) if old.get("status") == status else at
        out.append(
            {
                "type": v.type,
                "status": status,
                "reason": v.reason,
                "message": v.message[:MAX_MESSAGE],
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def _summary(compiled: Compiled) -> str:
    """What a valid FalcoRule defines, for its Valid message."""
    c = compiled.counts
    return (
        f"{c.get('rules', 0)} rules, {c.get('macros', 0)} macros, {c.get('lists', 0)} lists; "
        f"{len(compiled.warnings)} warning(s)"
    )


def _first_errors(compiled: Compiled, limit: int = 3) -> str:
    """The first errors for a condition message; the full list stays in status.errors."""
    shown = "; ".join(f.text() for f in compiled.errors[:limit])
    more = len(compiled.errors) - limit
    return shown + (f" (and {more} more, see status.errors)" if more > 0 else "")


def _by_type(conditions: Sequence[dict[str, Any]] | None) -> dict[Any, dict[str, Any]]:
    return {c.get("type"): c for c in conditions or () if isinstance(c, dict)}


def rule_status(
    old: dict[str, Any], compiled: Compiled, digest: str | None, selected_by: int, generation: int,
    applied_in: int,
) -> tuple[dict[str, Any], list[Verdict]]:
    """A FalcoRule's status for a compile result, and the verdicts behind its conditions
    (`applied_in`: how many of the `selected_by` instances' live ConfigMaps hold this
    generation)."""
    verdicts = rule_verdicts(compiled, selected_by, applied_in)
    new = {
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions"), verdicts, generation, now()),
        "counts": compiled.counts,
        "errors": [f.to_status() for f in compiled.errors],
        "warnings": [f.to_status() for f in compiled.warnings],
        "rulesHash": digest[:16] if digest else "",
        "instances": selected_by,
    }
    return new, verdicts


def rule_events(old: Sequence[dict[str, Any]] | None, verdicts: Sequence[Verdict]) -> list[EventSpec]:
    """The Event to post when a FalcoRule's validity or its message changed; none when
    the Valid condition reads as before.

    The message is compared as stored (cut to MAX_MESSAGE), so a long one does not
    repeat the Event on every status write."""
    valid = verdicts[0]
    was = _by_type(old).get("Valid", {})
    if (was.get("status"), was.get("message")) == (str(valid.status), valid.message[:MAX_MESSAGE]):
        return []
    return [("Normal", "Compiled", valid.message) if valid.status else ("Warning", "CompileFailed", valid.message)]


def rule_verdicts(compiled: Compiled, selected_by: int, applied_in: int) -> list[Verdict]:
    """A FalcoRule's conditions: Valid (first), Applied, and Stalled for kstatus. Applied
    is True only when every selecting instance's live ConfigMap holds this generation
    (an apply the API server refused, e.g. an object over its size limit, is not)."""
    if not compiled.valid:
        message = f"{len(compiled.errors)} error(s): {_first_errors(compiled)}"
        return [
            Verdict("Valid", False, "CompileFailed", message),
            Verdict("Applied", False, "CompileFailed",
                    f"selected by {selected_by} FalcoInstance(s); their sensors keep its last valid version, if any"),
            Verdict("Stalled", True, "CompileFailed", "fix the errors in status.errors"),
        ]
    if not selected_by:
        applied = Verdict("Applied", False, "NotSelected", "no FalcoInstance in this namespace selects this FalcoRule")
    elif applied_in < selected_by:
        applied = Verdict("Applied", False, "NotApplied",
                          f"{selected_by - applied_in} of {selected_by} FalcoInstance(s) do not hold this "
                          "generation in their ConfigMap yet (see their Degraded condition)")
    else:
        applied = Verdict("Applied", True, "Rendered", f"applied by {selected_by} FalcoInstance(s)")
    return [
        Verdict("Valid", True, "Compiled", _summary(compiled)),
        applied,
        Verdict("Stalled", False, "Compiled", "the rules compile"),
    ]


@dataclass(frozen=True)
class RolloutState:
    """The parts of a DaemonSet's status that decide progress."""

    generation: int
    observed_generation: int
    desired: int
    updated: int
    ready: int
    available: int

    @classmethod
    def from_daemonset(cls, ds: dict[str, Any]) -> RolloutState:
        """Read a DaemonSet object (missing numbers count as 0)."""
        st = ds.get("status") or {}
        return cls(
            generation=int(ds.get("metadata", {}).get("generation") or 0),
            observed_generation=int(st.get("observedGeneration") or 0),
            desired=int(st.get("desiredNumberScheduled") or 0),
            updated=int(st.get("updatedNumberScheduled") or 0),
            ready=int(st.get("numberReady") or 0),
            available=int(st.get("numberAvailable") or 0),
        )

    @property
    def observed(self) -> bool:
        """Whether the DaemonSet controller has seen the latest DaemonSet spec."""
        return self.generation > 0 and self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """Every scheduled sensor runs the latest template and is ready."""
        return self.observed and self.updated >= self.desired and self.ready >= self.desired


@dataclass(frozen=True)
class InstanceState:
    """What a reconcile of a FalcoInstance found; the conditions follow from it."""

    spec_error: str | None = None       # the spec does not parse (spec.FalcoInstanceSpec)
    selected: int = 0
    invalid_rules: tuple[str, ...] = ()
    compile_errors: tuple[str, ...] = ()
    apply_error: str | None = None
    redefined: tuple[str, ...] = ()
    rollout: RolloutState | None = None


def _degraded(state: InstanceState) -> Verdict:
    """The most pressing problem, first match wins: what blocks the sensors (a refused
    object, rules that do not compile) before what only limits them."""
    if state.spec_error:
        return Verdict("Degraded", True, "InvalidSpec", state.spec_error)
    if state.apply_error:
        return Verdict("Degraded", True, "ApplyFailed", state.apply_error)
    if state.compile_errors:
        return Verdict(
            "Degraded", True, "RulesInvalid",
            "the selected FalcoRules do not compile together; sensors keep the last valid rules: "
            + "; ".join(state.compile_errors[:3]),
        )
    if state.invalid_rules:
        return Verdict(
            "Degraded", True, "FalcoRuleInvalid",
            "invalid FalcoRule(s) " + ", ".join(state.invalid_rules)
            + ": their last valid content (if any) is kept; see each FalcoRule's status",
        )
    if state.selected == 0:
        return Verdict("Degraded", True, "NoRulesSelected", "spec.ruleSelector matches no FalcoRule in this namespace")
    if state.rollout is not None and state.rollout.observed and state.rollout.desired == 0:
        return Verdict("Degraded", True, "NoMatchingNodes", "no node matches spec.nodeSelector and spec.tolerations")
    return Verdict("Degraded", False, "AsExpected", "the sensor deployment matches the spec")


def _progressing(state: InstanceState) -> Verdict:
    """Whether the DaemonSet still rolls out (a missing one is being created)."""
    r = state.rollout
    if r is None:
        return Verdict("Progressing", True, "Creating", "the DaemonSet is being created")
    if not r.observed:
        return Verdict("Progressing", True, "RollingOut", "the DaemonSet controller has not seen the latest spec yet")
    if not r.rolled_out:
        return Verdict(
            "Progressing", True, "RollingOut",
            f"{r.ready}/{r.desired} sensors ready, {r.updated}/{r.desired} updated",
        )
    return Verdict("Progressing", False, "RolledOut", f"{r.ready}/{r.desired} sensors ready")


def instance_verdicts(state: InstanceState) -> list[Verdict]:
    """Ready, Progressing, Degraded, the kstatus mirrors and RulesRedefined."""
    degraded = _degraded(state)
    progressing = _progressing(state)
    if degraded.status:
        ready = Verdict("Ready", False, degraded.reason, degraded.message)
    elif progressing.status:
        ready = Verdict("Ready", False, progressing.reason, progressing.message)
    else:
        ready = Verdict("Ready", True, "Ready", progressing.message)
    redefined = (
        Verdict("RulesRedefined", True, "RuleRedefined", "; ".join(state.redefined))
        if state.redefined
        else Verdict("RulesRedefined", False, "NoOverlap", "no rule is defined by two FalcoRules")
    )
    return [
        ready,
        progressing,
        degraded,
        Verdict("Reconciling", progressing.status, progressing.reason, progressing.message),
        Verdict("Stalled", degraded.status, degraded.reason, degraded.message),
        redefined,
    ]


#: The instance conditions that post an Event when they turn True (or change reason).
_EVENTFUL = ("Degraded", "RulesRedefined", "Ready")


def instance_events(old: Sequence[dict[str, Any]] | None, verdicts: Sequence[Verdict]) -> list[EventSpec]:
    """Events (type, reason, message) for problems that are new and for becoming Ready,
    so that a steady state posts nothing."""
    before = _by_type(old)
    events = []
    for v in verdicts:
        if v.type not in _EVENTFUL or not v.status:
            continue
        was = before.get(v.type, {})
        if was.get("status") == "True" and was.get("reason") == v.reason:
            continue
        events.append(("Normal", "Ready", v.message) if v.type == "Ready" else ("Warning", v.reason, v.message))
    return events
