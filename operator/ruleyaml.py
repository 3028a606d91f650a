"""Falco rules YAML <-> FalcoRule items, with positions that survive the round trip.

A FalcoRule carries a rules file's items as structured data; the engine reads YAML text.
The operator therefore writes the items back to YAML in one fixed layout (every string
containing a newline, and every condition and output, as a literal `|` block) and keeps a
map from positions in that text to places in the resource (`spec.items[3].condition`,
line and column inside the field). Users then see errors where they wrote them, not in
a text they never saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import yaml

#: Keys whose text is a condition language or output format: always literal blocks, so
#: that the engine's line/column inside them maps exactly back into the field.
_BLOCK_KEYS = frozenset({"condition", "output"})


@dataclass(frozen=True)
class RuleText:
    """A FalcoRule rendered as a rules file: what the engine and the sensors read."""

    name: str  # the FalcoRule's label (operator/tenancy.py; the source name in diagnostics)
    text: str
    tenant: str = ""  # the tenant namespace whose scope it loads in ("": the cluster's)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(self.text.encode()).hexdigest())


class RulesFileError(ValueError):
    """A rules file that is not a YAML sequence of mappings; carries a 1-based position."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{line}:{column}: {message}")
        self.line = line
        self.column = column


class _LiteralStr(str):
    """A string the dumper writes as a literal block."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line and condition strings as `|` blocks."""


def _represent_literal(dumper: yaml.SafeDumper, value: _LiteralStr) -> yaml.ScalarNode:
    """A condition or output: always a literal block (see _BLOCK_KEYS)."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Any other string: a literal block when multi-line, so positions inside map back."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(_LiteralStr, _represent_literal)
_Dumper.add_representer(str, _represent_str)


def _blockable(value: str) -> bool:
    """PyYAML only emits a literal block when no line ends in spaces or starts with tab."""
    return not any(line != line.rstrip(" \t") for line in value.split("\n"))


def _prepare(item: dict[str, Any]) -> dict[str, Any]:
    """The item with its condition/output marked for literal-block output."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key in _BLOCK_KEYS and isinstance(value, str) and _blockable(value):
            value = _LiteralStr(value)
        out[key] = value
    return out


def dump_items(items: list[dict[str, Any]]) -> str:
    """Items as Falco rules YAML in Falconer's fixed layout (deterministic)."""
    if not items:
        return "[]\n"
    return yaml.dump(
        [_prepare(i) for i in items],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
    )


def load_items(text: str) -> list[Any]:
    """The items of a rules file (all YAML documents concatenated, empty ones skipped).

    Raises RulesFileError with a position for YAML syntax errors and for documents that
    are not sequences; items themselves are returned as parsed (validation of their
    shape is the engine's and the CRD schema's job).
    """
    items: list[Any] = []
    try:
        for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if doc is None or doc.tag == "tag:yaml.org,2002:null":
                continue
            if not isinstance(doc, yaml.SequenceNode):
                mark = doc.start_mark
                raise RulesFileError("a rules file is a YAML sequence of items", mark.line + 1, mark.column + 1)
            items.extend(yaml.SafeLoader(text).construct_document(doc) or [])
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RulesFileError(exc.problem or str(exc), line, col) from exc
    return items


@dataclass(frozen=True)
class FieldPosition:
    """Where a position in the dumped text lies in the resource."""

    index: int  # the item's index in spec.items
    key: str | None  # the item's key whose value holds the position, if any
    line: int | None  # 1-based line inside the field's text (string fields only)
    column: int | None  # 1-based column inside the field's text

    def path(self, items_path: str = "spec.items") -> str:
        """The JSON-ish path of the field, e.g. `spec.items[3].condition`."""
        base = f"{items_path}[{self.index}]"
        return f"{base}.{self.key}" if self.key else base


@dataclass(frozen=True)
class _ValueSpan:
    """One key of an item and its value's nodes, for locating positions."""

    key: str
    key_node: yaml.Node
    node: yaml.Node

    def contains(self, line: int, column: int) -> bool:
        """Whether 1-based (line, column) lies between the key's start and the value's end."""
        here = (line - 1, column - 1)
        start, end = self.key_node.start_mark, self.node.end_mark
        return (start.line, start.column) <= here < (end.line, end.column)

    def in_value(self, line: int, column: int) -> bool:
        """Whether 1-based (line, column) lies in the value (not on the key)."""
        start = self.node.start_mark
        return (line - 1, column - 1) >= (start.line, start.column)


class PositionMap:
    """Maps 1-based (line, column) in `dump_items(items)` to FieldPosition."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        self._items: list[tuple[yaml.Node, list[_ValueSpan]]] = []
        if isinstance(root, yaml.SequenceNode):
            for node in root.value:
                spans = []
                if isinstance(node, yaml.MappingNode):
                    spans = [_ValueSpan(str(k.value), k, v) for k, v in node.value]
                self._items.append((node, spans))

    def item_index_at(self, line: int) -> int | None:
        """The index of the item whose text contains 1-based `line`."""
        found = None
        for index, (node, _) in enumerate(self._items):
            if node.start_mark.line + 1 <= line:
                found = index
        return found

    def locate(self, line: int, column: int) -> FieldPosition | None:
        """The item/key/in-field position for a 1-based position in the text."""
        index = self.item_index_at(line)
        if index is None:
            return None
        for span in self._items[index][1]:
            if not span.contains(line, column):
                continue
            is_text = isinstance(span.node, yaml.ScalarNode) and span.node.tag == "tag:yaml.org,2002:str"
            if is_text and span.in_value(line, column):
                return self._in_scalar(index, span, line, column)
            return FieldPosition(index, span.key, None, None)
        return FieldPosition(index, None, None, None)

    def _in_scalar(self, index: int, span: _ValueSpan, line: int, column: int) -> FieldPosition:
        """The in-field line/column where it is exact: literal blocks and single-line
        scalars without escapes; else the field alone."""
        node = span.node
        if not isinstance(node, yaml.ScalarNode):
            return FieldPosition(index, span.key, None, None)
        if node.style == "|":
            field_line = line - 1 - node.start_mark.line
            field_lines = str(node.value).split("\n")
            if 1 <= field_line <= len(field_lines):
                text_line = self._lines[line - 1]
                indent = len(text_line) - len(field_lines[field_line - 1])
                return FieldPosition(index, span.key, field_line, max(1, column - indent))
            return FieldPosition(index, span.key, None, None)
        quote = 1 if node.style in ("'", '"') else 0
        raw_length = node.end_mark.column - node.start_mark.column - 2 * quote
        if node.start_mark.line == node.end_mark.line and raw_length == len(str(node.value)):
            # Single line without escapes: columns map one to one.
            return FieldPosition(index, span.key, 1, max(1, column - node.start_mark.column - quote))
        return FieldPosition(index, span.key, None, None)

    def item_position(self, kind: str | None, name: str | None) -> int | None:
        """The index of the last item defining `kind` `name` (for position-less diagnostics)."""
        found = None
        for index, (_, spans) in enumerate(self._items):
            values = {s.key: s.node for s in spans}
            named = values.get(kind or "")
            if isinstance(named, yaml.ScalarNode) and named.value == name:
                found = index
        return found
