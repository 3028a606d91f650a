"""Which event types can a condition match? (drives the rule index and the kernel filter)

Falco computes, per rule, the set of event types for which the condition can be true:
`and` intersects, `or` unites, `not` is pushed down to the leaves (De Morgan), a check
on `evt.type` (`=`, `!=`, `in`) names types, `evt.num = 0` (the `never_true` idiom)
matches nothing, and any other check matches every type. Sets are represented
symbolically as "these names" or "all but these names", so no table of every event
type is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from falconer.engine import ast

_EVTTYPE_FIELDS = frozenset({"evt.type", "syscall.type"})
_EVTTYPE_OPS = frozenset({"=", "==", "!=", "in"})


@dataclass(frozen=True)
class EvtSet:
    """A set of event type names; `negated` means "every type except `names`"."""

    names: frozenset[str]
    negated: bool

    @property
    def is_all_but(self) -> bool:
        """True when the set is unbounded (some event types not named match)."""
        return self.negated

    def complement(self) -> EvtSet:
        """The types this set does not contain (how `not` and `!=` act)."""
        return EvtSet(self.names, not self.negated)

    def __and__(self, other: EvtSet) -> EvtSet:
        """Intersection (`and`), on names and "all but names" alike."""
        if not self.negated and not other.negated:
            return EvtSet(self.names & other.names, False)
        if self.negated and other.negated:
            return EvtSet(self.names | other.names, True)
        pos, neg = (self, other) if not self.negated else (other, self)
        return EvtSet(pos.names - neg.names, False)

    def __or__(self, other: EvtSet) -> EvtSet:
        """Union (`or`)."""
        if not self.negated and not other.negated:
            return EvtSet(self.names | other.names, False)
        if self.negated and other.negated:
            return EvtSet(self.names & other.names, True)
        pos, neg = (self, other) if not self.negated else (other, self)
        return EvtSet(neg.names - pos.names, True)

    def contains(self, name: str) -> bool:
        """Whether an event of this type may match."""
        return (name in self.names) != self.negated


ALL = EvtSet(frozenset(), True)
NONE = EvtSet(frozenset(), False)


def _evt_num_invariant(node: ast.BinaryCheck) -> EvtSet | None:
    """`evt.num` starts at 1: `evt.num = 0` is never true, `evt.num > 0` always."""
    left, right, op = node.left, node.right, node.op
    if not isinstance(left, ast.Field) or left.name != "evt.num" or left.arg is not None:
        return None
    if op == "in" and isinstance(right, ast.ListValue):
        ok = all(v.text.isdigit() and int(v.text) == 0 for v in right.values)
        return NONE if ok else None
    if not isinstance(right, ast.Value) or not right.text.isdigit():
        return None
    n = int(right.text)
    table = {"=": NONE if n == 0 else None, "==": NONE if n == 0 else None,
             "!=": ALL if n == 0 else None, "<": NONE if n <= 1 else None,
             "<=": NONE if n == 0 else None, ">": ALL if n == 0 else None,
             ">=": ALL if n <= 1 else None}
    return table.get(op)


def _check_types(node: ast.BinaryCheck, negated: bool) -> EvtSet:
    """The types one check (negated when under an odd number of `not`) can match."""
    invariant = _evt_num_invariant(node)
    if invariant is not None:
        return invariant.complement() if negated else invariant
    left = node.left
    if (isinstance(left, ast.Field) and left.name in _EVTTYPE_FIELDS and left.arg is None
            and node.op in _EVTTYPE_OPS):
        right = node.right
        if isinstance(right, ast.ListValue):
            names = frozenset(v.text for v in right.values)
        elif isinstance(right, ast.Value):
            names = frozenset({right.text})
        else:
            return ALL
        result = EvtSet(names, False)
        if node.op == "!=":
            result = result.complement()
        return result.complement() if negated else result
    return ALL


def event_types(node: ast.Expr, negated: bool = False) -> EvtSet:
    """The event types a (macro-expanded) condition can match."""
    if isinstance(node, (ast.And, ast.Or)):
        conjunction = isinstance(node, ast.And) != negated
        result = ALL if conjunction else NONE
        for child in node.children:
            sub = event_types(child, negated)
            result = (result & sub) if conjunction else (result | sub)
        return result
    if isinstance(node, ast.Not):
        return event_types(node.child, not negated)
    if isinstance(node, ast.BinaryCheck):
        return _check_types(node, negated)
    return ALL
