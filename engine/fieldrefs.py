"""Which fields a rule uses, and the contract between the engine and an event source.

Falco binds a rule's fields to its source when it compiles the rule (libsinsp's filter
factory of that source). Falconer's sources (the eBPF sensor, a replay file) answer a
subset of the registry; `EngineOptions.answered_fields` names that subset, and a rule
that uses a field the engine knows but the source does not answer loads with a
positioned `LOAD_UNANSWERED_FIELD` warning (the field would always read as missing).

Fields are named by their base name, the registry entry: `proc.aname[2]` is
`proc.aname`, `container.mount.dest[/etc]` is `container.mount.dest`, `evt.arg.flags`
is `evt.arg`.
"""

from __future__ import annotations

from falconer.engine import ast
from falconer.engine.fields import UnknownField, resolve
from falconer.engine.timefields import TIME_FIELDS

#: Fields the engine computes itself from every event (the time fields): they need no
#: answer from the source.
ENGINE_COMPUTED_FIELDS: frozenset[str] = frozenset(TIME_FIELDS)


def base_name(node: ast.Field) -> str | None:
    """The registry name of a field node (`evt.arg.flags` -> `evt.arg`); None if unknown."""
    try:
        return resolve(node.name, node.arg).name
    except UnknownField:
        return None


def fields_of(node: ast.Expr) -> list[ast.Field]:
    """Every field node of a condition tree or an output token, in text order: check
    operands, transformer arguments (nested) and `val(...)` on the right side."""
    if isinstance(node, ast.Field):
        return [node]
    if isinstance(node, ast.BOOLEAN):
        return [f for child in ast.operands(node) for f in fields_of(child)]
    if isinstance(node, ast.Transformer):
        return [f for arg in node.args for f in fields_of(arg)]
    if isinstance(node, ast.TransformerList):
        return [f for child in node.children for f in fields_of(child)]
    if isinstance(node, ast.UnaryCheck):
        return fields_of(node.left)
    if isinstance(node, ast.BinaryCheck):
        return fields_of(node.left) + fields_of(node.right)
    return []


def unanswered(nodes: list[ast.Field], answered: frozenset[str]) -> list[ast.Field]:
    """The field nodes (first use of each base name) a source with `answered` fields
    cannot give a value for; engine-computed and unknown fields are never listed (an
    unknown field is a compile error of its own)."""
    out: list[ast.Field] = []
    seen: set[str] = set()
    for node in nodes:
        name = base_name(node)
        if name is None or name in seen or name in answered or name in ENGINE_COMPUTED_FIELDS:
            continue
        seen.add(name)
        out.append(node)
    return out
