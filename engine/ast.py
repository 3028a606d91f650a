"""The syntax tree of a Falco condition.

Nodes are small immutable records; `pos` is the character offset into the condition
text (a `LocatedText` turns it into a file position). Macro expansion and list
substitution build new trees rather than mutate, so a macro's tree is shared safely.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class And:
    """All children must hold (`a and b and c`)."""

    children: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Or:
    """Any child must hold."""

    children: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    """Negation."""

    child: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Identifier:
    """A bare word standing as a check: a macro reference."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Field:
    """A field, with its optional bracketed (or dotted, for evt.arg.x) argument."""

    name: str
    arg: str | None
    pos: int


@dataclass(frozen=True, slots=True)
class Transformer:
    """`tolower(field)`, `len(...)`, ... and `val(field)` on a check's right side."""

    name: str
    args: tuple[Expr, ...]
    arg: str | None
    pos: int


@dataclass(frozen=True, slots=True)
class TransformerList:
    """A parenthesised list given as a transformer argument."""

    children: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Value:
    """A literal; `quoted` tells a quoted string from a bare word (list names are bare)."""

    text: str
    quoted: bool
    pos: int


@dataclass(frozen=True, slots=True)
class ListValue:
    """`(a, b, "c d")` on the right of a list operator."""

    values: tuple[Value, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class UnaryCheck:
    """`field exists`."""

    left: Field | Transformer
    op: str
    pos: int


@dataclass(frozen=True, slots=True)
class BinaryCheck:
    """`field op value`, `field in (list)`, `field = val(other.field)`."""

    left: Field | Transformer
    op: str
    right: Value | ListValue | Transformer
    pos: int


Expr = (And | Or | Not | Identifier | Field | Transformer | TransformerList | Value | ListValue
        | UnaryCheck | BinaryCheck)

#: The boolean nodes: their operands are conditions, not values.
BOOLEAN = (And, Or, Not)


def operands(node: And | Or | Not) -> tuple[Expr, ...]:
    """The operands of a boolean node: the children of `and`/`or`, the child of `not`."""
    return (node.child,) if isinstance(node, Not) else node.children


def with_operands(node: And | Or | Not, new: list[Expr]) -> Expr:
    """The same boolean node over new operands (trees are rebuilt, never mutated)."""
    if isinstance(node, Not):
        (child,) = new
        return Not(child, node.pos)
    return type(node)(tuple(new), node.pos)


def shifted(node: Expr, delta: int) -> Expr:
    """The same tree with every position moved by `delta`."""
    if delta == 0:
        return node
    changes: dict[str, object] = {"pos": node.pos + delta}
    for attr in ("children", "args", "values"):
        if hasattr(node, attr):
            changes[attr] = tuple(shifted(c, delta) for c in getattr(node, attr))
    for attr in ("child", "left", "right"):
        if hasattr(node, attr):
            changes[attr] = shifted(getattr(node, attr), delta)
    return dataclasses.replace(node, **changes)  # type: ignore[arg-type]
