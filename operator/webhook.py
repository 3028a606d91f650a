"""The validating admission webhook's decision: a FalcoRule or ClusterFalcoRule is
compiled with what it will be loaded with, and refused with Falco's code, the item and
line:column when it would not load.

For every FalcoInstance that would load the object (its selector and scopes, see
operator/tenancy.py), the instance's whole load order is compiled with the object in
place of its stored version (`compile_in_order`, as the operator and `falconer validate`
do); an object no instance loads is compiled alone. The message names each error as the
FalcoRule's status does (`spec.items[3].condition:2:14: LOAD_ERR_COMPILE_CONDITION: ...`).
Warnings are returned as admission warnings (kubectl prints them).

The admission path never replaces the status path: what admission cannot see (a later
change elsewhere that breaks this rule) still ends in the rule's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from falconer.operator import rules
from falconer.operator.catalog import Catalog
from falconer.operator.spec import parse_instance
from falconer.operator.tenancy import RuleRef, Tenancy, compile_in_order, load_order, rule_spec
from falconer.shapes import ShapeError

#: At most this many errors are named in a refusal, and warnings returned.
MAX_NAMED = 5
#: AdmissionReview's apiVersion (admission.k8s.io/v1).
REVIEW_API_VERSION = "admission.k8s.io/v1"


def findings_for(obj: Mapping[str, Any], catalog: Catalog) -> rules.Compiled:
    """The object compiled where each instance that loads it would load it (every
    distinct finding of any of them), else alone."""
    ref = RuleRef.of(obj)
    results: list[rules.Compiled] = []
    for inst in catalog.instances():
        namespace = inst["metadata"]["namespace"]
        try:
            spec = parse_instance(inst.get("spec"))
        except ShapeError:  # an instance the schema should have refused: its status says so
            continue
        tenancy = Tenancy.of(namespace, spec)
        if tenancy.scope(ref) is None:
            continue
        stored = [o for o in catalog.rules(tenancy.namespaces()) if RuleRef.of(o) != ref]
        candidates = load_order(tenancy, spec.rule_selector, [*stored, obj])
        if not any(c.ref == ref for c in candidates):
            continue
        loaded = compile_in_order(candidates, namespace, rules.engine_options(tenant_max_priority=tenancy.max_priority))
        results += [done.compiled for done in loaded if done.candidate.ref == ref]
    if results:
        return rules.merge_contexts(results)
    return rules.compile_falcorule(ref.name, rule_spec(obj))[1]


def refusal(ref: RuleRef, compiled: rules.Compiled) -> str:
    """The refusal message: the object, then each error (item, path:line:column, code)."""
    named = [_finding_text(f) for f in compiled.errors[:MAX_NAMED]]
    more = len(compiled.errors) - len(named)
    head = f"{ref.kind} {ref.namespace + '/' if ref.namespace else ''}{ref.name} does not load: "
    return head + "; ".join(named) + (f"; and {more} more" if more > 0 else "")


def _finding_text(finding: rules.Finding) -> str:
    """`<kind> '<name>' at <path>:<line>:<col>: <code>: <message>` (Falco's code)."""
    where = finding.path
    if finding.line is not None:
        where += f":{finding.line}:{finding.column or 1}"
    item = f"{finding.item_kind} '{finding.item_name}' at " if finding.item_kind else ""
    return f"{item}{where}: {finding.code}: {finding.message}"


def review(body: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The AdmissionReview response to an AdmissionReview request (admission.k8s.io/v1).
    A request for anything but a FalcoRule/ClusterFalcoRule object is allowed."""
    request = body.get("request") or {}
    uid = request.get("uid", "")
    obj = request.get("object")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if isinstance(obj, dict) and obj.get("kind") in ("FalcoRule", "ClusterFalcoRule") and obj.get("metadata"):
        compiled = findings_for(obj, catalog)
        if compiled.errors:
            response["allowed"] = False
            response["status"] = {"code": 422, "reason": "Invalid", "message": refusal(RuleRef.of(obj), compiled)}
        if compiled.warnings:
            response["warnings"] = [_finding_text(f)[:512] for f in compiled.warnings[:MAX_NAMED]]
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}
