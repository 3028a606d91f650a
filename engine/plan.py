"""A rule's condition compiled once: a tree of prepared checks, shared between rules.

`Planner` turns an expanded condition (macros and lists in) into `Plan` nodes:
`AllOf` (`and`), `AnyOf` (`or`), `Negation` (`not`) and `Leaf` (one
`checks.PreparedCheck`). Nodes are interned by their structure, positions aside: the
`open_read` macro expanded into twenty rules is one node whose checks were prepared
once, and rules that spell the same check the same way share it. Each node has a `uid`
(unique per planner) that binding uses to remember a shared node's result per event
(`falconer.engine.binding`).

In an `or`, same-field string equalities and prefixes are merged into one check
(`f = a or f = b` is `f in (a, b)`): same truth, one field read instead of many. Each
alternative is prepared on its own first, so an error is reported as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from falconer.engine import ast
from falconer.engine.checks import PreparedCheck, prepare_check
from falconer.engine.fields import FIELDS
from falconer.engine.transformers import CheckError


@dataclass(frozen=True, eq=False, slots=True)
class Leaf:
    """One check."""

    check: PreparedCheck
    uid: int


@dataclass(frozen=True, eq=False, slots=True)
class AllOf:
    """Every child holds (`and`), tested in order."""

    children: tuple[Plan, ...]
    uid: int


@dataclass(frozen=True, eq=False, slots=True)
class AnyOf:
    """Some child holds (`or`), tested in order."""

    children: tuple[Plan, ...]
    uid: int


@dataclass(frozen=True, eq=False, slots=True)
class Negation:
    """The child does not hold."""

    child: Plan
    uid: int


Plan = Leaf | AllOf | AnyOf | Negation
Shape = tuple[object, ...]

#: `f = a or f = b` is `f in (a, b)`; `f startswith a or f startswith b` is one
#: `str.startswith((a, b))`.
_MERGED_OPS = {"=": "in", "==": "in", "startswith": "startswith anyof"}


def shape(node: ast.Expr) -> Shape:
    """The structure of a condition node without its positions (equal shapes: same
    truth on every event)."""
    kind = type(node).__name__
    if isinstance(node, (ast.And, ast.Or, ast.TransformerList)):
        return (kind, *(shape(c) for c in node.children))
    if isinstance(node, ast.Not):
        return (kind, shape(node.child))
    if isinstance(node, ast.Field):
        return (kind, node.name, node.arg)
    if isinstance(node, ast.Value):
        return (kind, node.text, node.quoted)
    if isinstance(node, ast.ListValue):
        return (kind, *(shape(v) for v in node.values))
    if isinstance(node, ast.Transformer):
        return (kind, node.name, node.arg, *(shape(a) for a in node.args))
    if isinstance(node, ast.UnaryCheck):
        return (kind, shape(node.left), node.op)
    if isinstance(node, ast.BinaryCheck):
        return (kind, shape(node.left), node.op, shape(node.right))
    return (kind, node.name)


def children(node: Plan) -> tuple[Plan, ...]:
    """The operands of a node (none for a leaf)."""
    if isinstance(node, Leaf):
        return ()
    if isinstance(node, Negation):
        return (node.child,)
    return node.children


class Planner:
    """Builds interned plan nodes; one planner serves every rule of a compile."""

    def __init__(self) -> None:
        self._nodes: dict[Shape, Plan] = {}

    def plan(self, node: ast.Expr) -> Plan:
        """The plan of an expanded condition; raises CheckError (positioned at the
        offending node) when a check cannot compile or a node is no condition."""
        if isinstance(node, ast.And):
            kids = tuple(self.plan(c) for c in node.children)
            return self._intern(("and", *(k.uid for k in kids)),
                                lambda uid: AllOf(kids, uid))
        if isinstance(node, ast.Or):
            kids = tuple(self.plan(c) for c in node.children)
            merged = self._merge_alternatives(node.children, kids)
            return self._intern(("or", *(k.uid for k in merged)),
                                lambda uid: AnyOf(merged, uid))
        if isinstance(node, ast.Not):
            kid = self.plan(node.child)
            return self._intern(("not", kid.uid), lambda uid: Negation(kid, uid))
        if isinstance(node, (ast.BinaryCheck, ast.UnaryCheck)):
            return self.leaf(node)
        raise CheckError("unexpected expression", getattr(node, "pos", 0))

    def leaf(self, node: ast.BinaryCheck | ast.UnaryCheck) -> Leaf:
        """The (shared) leaf of one check."""
        key = shape(node)
        found = self._nodes.get(key)
        if found is None:
            found = Leaf(prepare_check(node), len(self._nodes))
            self._nodes[key] = found
        assert isinstance(found, Leaf)
        return found

    def _intern(self, key: Shape, make: Callable[[int], Plan]) -> Plan:
        found = self._nodes.get(key)
        if found is None:
            found = make(len(self._nodes))
            self._nodes[key] = found
        return found

    def _merge_alternatives(self, nodes: tuple[ast.Expr, ...],
                            kids: tuple[Plan, ...]) -> tuple[Plan, ...]:
        """The `or` alternatives with same-field string equalities/prefixes merged."""
        groups: dict[tuple[str, str | None, str], list[tuple[int, ast.Field, ast.Value]]] = {}
        for i, child in enumerate(nodes):
            if (isinstance(child, ast.BinaryCheck) and child.op in _MERGED_OPS
                    and isinstance(child.left, ast.Field) and isinstance(child.right, ast.Value)):
                info = FIELDS.get(child.left.name)
                if info is not None and info.type == "string" and not info.is_list:
                    key = (child.left.name, child.left.arg, _MERGED_OPS[child.op])
                    groups.setdefault(key, []).append((i, child.left, child.right))
        merged: list[Plan | None] = list(kids)
        for (_, _, op), members in groups.items():
            if len(members) < 2:
                continue
            first, left, _ = members[0]
            values = ast.ListValue(tuple(v for _, _, v in members), left.pos)
            merged[first] = self.leaf(ast.BinaryCheck(left, op, values, left.pos))
            for i, _, _ in members[1:]:
                merged[i] = None
        return tuple(c for c in merged if c is not None)
