"""A bucket's rules as generated Python functions: the and/or/not of a condition inlined.

`Binder.bind` makes a closure per composite node, so an event meets one Python call per
`and`, `or`, `not` and remembered macro on its way to the checks. Here each rule of a
bucket becomes one function whose body is its condition as a Python expression over the
bound leaf checks: `c7(ev) and (c9(ev) or not c12(ev))`. A node shared by several rules
of the bucket (`Binder.shared`) is remembered in the per-event memo inline:
`(_v if (_v := m.get(uid)) is not None else m.setdefault(uid, <node>))`, so it is still
evaluated at most once per event. Folding is `Binder.bind`'s (event-type constants, a
decisive constant ending an `and`/`or`), so a rule's function and its closure agree on
every event (tests/engine/test_index_property.py compares the bucket path with the
generic one). A condition Python cannot compile as one expression (nesting beyond the
parser's limits) keeps its closure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from falconer.engine.checks import Check, string_matches
from falconer.engine.plan import AnyOf, Leaf, Negation, Plan

if TYPE_CHECKING:
    from falconer.engine.binding import Binder, Bound

#: What compiling a generated expression may raise when a condition nests too deeply.
_TOO_DEEP = (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError)


class _Writer:
    """Expressions of plan nodes for one binder, with the leaf closures they call."""

    def __init__(self, binder: Binder) -> None:
        self.binder = binder
        #: Generated name -> what it calls: a leaf's closure (c<uid>), predicate (p<uid>)
        #: or field accessor (g<uid>); the generated code's globals.
        self.names: dict[str, Callable[[Any], object]] = {}
        #: A leaf's call expression -> its closure (a rule that is one check uses it).
        self.leaves: dict[str, Check] = {}
        self._exprs: dict[int, str | bool] = {}

    def expr(self, node: Plan) -> str | bool:
        """The node as an expression over `ev` and the memo `m`, or a constant."""
        found = self._exprs.get(node.uid)
        if found is None:
            found = self._expr(node)
            memo = self.binder.memo is not None and node.uid in self.binder.shared
            if isinstance(found, str) and memo:
                found = f"(_v if (_v := m.get({node.uid})) is not None else m.setdefault({node.uid}, {found}))"
            self._exprs[node.uid] = found
        return found

    def _expr(self, node: Plan) -> str | bool:
        if isinstance(node, Leaf):
            bound = self.binder.bind(node)
            if isinstance(bound, bool):
                return bound
            name = f"c{node.uid}"
            self.names[name] = bound
            self.leaves[f"{name}(ev)"] = bound
            return self._string_leaf(node) or f"{name}(ev)"
        if isinstance(node, Negation):
            inner = self.expr(node.child)
            return (not inner) if isinstance(inner, bool) else f"(not {inner})"
        decisive = isinstance(node, AnyOf)   # the value that ends the chain
        parts: list[str] = []
        for child in node.children:
            sub = self.expr(child)
            if sub is decisive:
                return decisive
            if isinstance(sub, str):
                parts.append(sub)
        if not parts:
            return not decisive
        if len(parts) == 1:
            return parts[0]
        return "(" + (" or " if decisive else " and ").join(parts) + ")"

    def _string_leaf(self, node: Leaf) -> str | None:
        """A string check read through the event class's accessor, inline (what
        `checks._lift_string` does, without its call): None for any other check."""
        pred = node.check.string_pred
        read = self.binder.accessor(node) if pred is not None else None
        if pred is None or read is None:
            return None
        uid = node.uid
        self.names[f"p{uid}"], self.names[f"g{uid}"] = pred, read
        return (f"(p{uid}(_s) if (_s := g{uid}(ev)).__class__ is str "
                f"else (_s is not None and string_matches(_s, p{uid})))")


def _function(name: str, expr: str) -> str:
    """The source of one rule's function."""
    memo = "    m = memo.vals\n" if "m.get(" in expr else ""
    return f"def {name}(ev):\n{memo}    return {expr}\n"


def rule_functions(binder: Binder, plans: Sequence[Plan]) -> list[Bound]:
    """Each plan as a check (a generated function, or the leaf closure itself when the
    condition is one check) or a constant; one compiled module per bucket."""
    writer = _Writer(binder)
    exprs = [writer.expr(plan) for plan in plans]
    leaves = writer.leaves
    sources = {f"r{i}": _function(f"r{i}", e) for i, e in enumerate(exprs)
               if isinstance(e, str) and e not in leaves}
    made = _compiled(sources, {**writer.names, "memo": binder.memo, "string_matches": string_matches})
    out: list[Bound] = []
    for i, (plan, e) in enumerate(zip(plans, exprs, strict=True)):
        if isinstance(e, bool):
            out.append(e)
        elif e in leaves:
            out.append(leaves[e])
        else:
            out.append(made.get(f"r{i}") or binder.bind(plan))
    return out


def _compiled(sources: dict[str, str], scope: dict[str, object]) -> dict[str, Check]:
    """The functions of `sources` (name -> source) that compile: all in one module, or one
    by one when the module does not (the others keep their closures)."""
    try:
        exec(compile("".join(sources.values()), "<falconer rules>", "exec"), scope)  # noqa: S102
    except _TOO_DEEP:
        for text in sources.values():
            try:
                exec(compile(text, "<falconer rule>", "exec"), scope)  # noqa: S102
            except _TOO_DEEP:
                continue
    return {name: cast("Check", scope[name]) for name in sources if name in scope}
