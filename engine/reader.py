"""Stage 1, "read": rules files as YAML nodes that keep their positions.

PyYAML's composer gives every node a start mark; we keep the nodes (rather than
constructed Python values) so that every later diagnostic can point at the key or
scalar it concerns, and so that a condition scalar can be mapped back character by
character (`located_scalar`). Several YAML documents per file are allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from falconer.engine.diagnostics import Code, LoadError, Position
from falconer.engine.located import LocatedText, Span

#: Item kinds in the order Falco tests for them when an item has several.
ITEM_KINDS: tuple[str, ...] = (
    "required_engine_version", "required_plugin_versions", "list", "macro", "rule",
)

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "y": True,
               "false": False, "no": False, "off": False, "n": False}


def node_position(file: str, node: Node) -> Position:
    """The 1-based position of a node's first character."""
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


def is_null(node: Node) -> bool:
    """A YAML null (`~`, `null` or nothing at all)."""
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


@dataclass
class SourceFile:
    """One rules file's name and text."""

    name: str
    text: str


class Item:
    """One top-level mapping of a rules file, with typed, positioned accessors.

    The accessors raise LoadError with Falco's LOAD_ERR_YAML_VALIDATE messages, at the
    position of the offending value (or of the item when the key is missing).
    """

    def __init__(self, source: SourceFile, node: MappingNode, index: int = 0) -> None:
        self.source = source
        self.node = node
        #: 0-based index among the file's items (all documents, nulls not counted).
        self.index = index
        self.keys: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                self.keys.setdefault(key_node.value, (key_node, value_node))
        self.kind = next((k for k in ITEM_KINDS if k in self.keys), "")
        self.name = ""

    @property
    def label(self) -> str:
        """The item's name as written (a scalar under its kind key), else empty."""
        node = self.keys[self.kind][1] if self.kind in ("list", "macro", "rule") else None
        return str(node.value) if isinstance(node, ScalarNode) else ""

    @property
    def position(self) -> Position:
        """Where the item starts."""
        return node_position(self.source.name, self.node)

    def has(self, key: str) -> bool:
        """Whether the key is present (even with a null value)."""
        return key in self.keys

    def key_position(self, key: str) -> Position:
        """Where a key's value starts, or the item's position when absent."""
        if key in self.keys:
            return node_position(self.source.name, self.keys[key][1])
        return self.position

    def error(self, message: str, position: Position | None = None) -> LoadError:
        """A LOAD_ERR_YAML_VALIDATE error about this item."""
        return LoadError(Code.LOAD_ERR_YAML_VALIDATE, message, position or self.position,
                         self.kind, self.name)

    def value_node(self, key: str) -> Node:
        """The value node of a required key."""
        if key not in self.keys:
            raise self.error(f"Item has no mapping for key '{key}'")
        node = self.keys[key][1]
        if is_null(node):
            raise self.error(f"Mapping for key '{key}' is empty", self.key_position(key))
        return node

    def scalar_node(self, key: str, can_be_empty: bool = False) -> ScalarNode:
        """A required, non-empty scalar."""
        node = self.value_node(key)
        if not isinstance(node, ScalarNode):
            raise self.error("Value is not a scalar value", self.key_position(key))
        if not node.value and not can_be_empty:
            raise self.error("Value must be non-empty", self.key_position(key))
        return node

    def string(self, key: str, can_be_empty: bool = False) -> str:
        """A required string (any scalar decodes to its text, as in yaml-cpp)."""
        value: str = self.scalar_node(key, can_be_empty).value
        return value

    def optional_string(self, key: str, default: str = "") -> str:
        """An optional string; absent means `default`."""
        if key not in self.keys:
            return default
        return self.string(key, can_be_empty=True)

    def boolean(self, key: str) -> bool:
        """A required boolean, decoded as yaml-cpp does: true/yes/on/y and their negations,
        in lower, UPPER or Capitalised spelling, quoted or not."""
        node = self.scalar_node(key)
        text = node.value
        word = text.lower()
        if word not in _BOOL_WORDS or text not in (word, word.upper(), word.capitalize()):
            raise self.error("Can't decode YAML scalar value", self.key_position(key))
        return _BOOL_WORDS[word]

    def optional_boolean(self, key: str, default: bool) -> bool:
        """An optional boolean; absent means `default`."""
        return self.boolean(key) if key in self.keys else default

    def integer(self, key: str) -> int:
        """A required integer scalar."""
        node = self.scalar_node(key)
        try:
            return int(node.value, 0)
        except ValueError:
            raise self.error("Can't decode YAML scalar value", self.key_position(key)) from None

    def string_list(self, key: str) -> list[tuple[str, Position]]:
        """A required sequence of scalars, each with its position."""
        if key not in self.keys:
            raise self.error(f"Item has no mapping for key '{key}'")
        node = self.keys[key][1]
        if not isinstance(node, SequenceNode):
            raise self.error("Value is not a sequence", self.key_position(key))
        out: list[tuple[str, Position]] = []
        for child in node.value:
            pos = node_position(self.source.name, child)
            if not isinstance(child, ScalarNode):
                raise self.error("sequence value is not scalar", pos)
            out.append((child.value, pos))
        return out

    def located(self, key: str) -> LocatedText:
        """A required string with the source position of each character."""
        node = self.scalar_node(key)
        return located_scalar(self.source, node)


def located_scalar(source: SourceFile, node: ScalarNode) -> LocatedText:
    """Map a scalar's value back onto the file lines it was written on.

    Works for every scalar style: each physical line's content is looked up, in
    order, in the (possibly folded or unescaped) value; what cannot be found keeps
    the position of the previous line.
    """
    value = node.value
    start, end = node.start_mark, node.end_mark
    raw = source.text[start.index:end.index]
    if node.style in ("'", '"') and start.line == end.line:
        return LocatedText(value, _quoted_spans(source.name, raw, start.line + 1,
                                                start.column + 1))
    lines = raw.split("\n")
    spans: list[Span] = []
    cursor = 0
    style = node.style or ""
    for i, line in enumerate(lines):
        if i == 0 and style in ("|", ">"):
            continue
        base_col = start.column if i == 0 else 0
        content = line.lstrip(" \t")
        indent = len(line) - len(content)
        if i == 0 and style in ("'", '"'):
            content = content[1:]
            indent += 1
        if i == len(lines) - 1 and style in ("'", '"') and content.endswith(style):
            content = content[:-1]
        content = content.rstrip(" \t")
        if not content:
            continue
        found = value.find(content, cursor)
        file_line = start.line + i + 1
        if found < 0:
            spans.append(Span(cursor, cursor, source.name, file_line, base_col + indent + 1, False))
            continue
        spans.append(Span(found, found + len(content), source.name, file_line,
                          base_col + indent + 1))
        cursor = found + len(content)
    if not spans:
        spans.append(Span(0, len(value), source.name, start.line + 1, start.column + 1, False))
    return LocatedText(value, tuple(spans))


_ESCAPE_LENGTHS = {"x": 4, "u": 6, "U": 10}


def _quoted_spans(file: str, raw: str, line: int, column: int) -> tuple[Span, ...]:
    """Exact positions for a one-line quoted scalar, escapes included: one span per run
    of characters written literally, so offsets after `\\"` or `''` still line up."""
    quote = raw[0]
    spans: list[Span] = []
    out = 0  # offset in the value
    i = 1  # offset in the raw text, after the opening quote
    run_start, run_col = 0, column + 1
    while i < len(raw) - 1:
        if quote == '"' and raw[i] == "\\":
            width = _ESCAPE_LENGTHS.get(raw[i + 1:i + 2], 2)
        elif quote == "'" and raw[i:i + 2] == "''":
            width = 2
        else:
            i += 1
            out += 1
            continue
        if out > run_start:
            spans.append(Span(run_start, out, file, line, run_col))
        spans.append(Span(out, out + 1, file, line, column + i))
        i += width
        out += 1
        run_start, run_col = out, column + i
    spans.append(Span(run_start, max(out, run_start), file, line, run_col))
    return tuple(spans)


def read_items(source: SourceFile) -> Iterator[Item | LoadError]:
    """The items of one file, in order; a document-level problem is yielded as an error.

    Bad YAML is a LOAD_ERR_YAML_PARSE at the parser's mark. A non-mapping item is a
    LOAD_ERR_YAML_VALIDATE error for that item; reading goes on with the next one.
    """
    try:
        documents = list(yaml.compose_all(source.text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(source.name, mark.line + 1, mark.column + 1) if mark else \
            Position(source.name, 1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        yield LoadError(Code.LOAD_ERR_YAML_PARSE, message, pos)
        return
    except yaml.YAMLError as exc:
        yield LoadError(Code.LOAD_ERR_YAML_PARSE, str(exc), Position(source.name, 1, 1))
        return
    index = 0
    for doc in documents:
        if doc is None or is_null(doc):
            continue
        if not isinstance(doc, SequenceNode):
            message = ("Rules content is not yaml array of objects"
                       if isinstance(doc, MappingNode) else "Rules content is not yaml")
            yield LoadError(Code.LOAD_ERR_YAML_VALIDATE, message, node_position(source.name, doc))
            continue
        for child in doc.value:
            if is_null(child):
                continue
            index += 1
            if not isinstance(child, MappingNode):
                yield LoadError(Code.LOAD_ERR_YAML_VALIDATE,
                                "Unexpected element type. Each element should be a yaml "
                                "associative array.", node_position(source.name, child))
                continue
            yield Item(source, child, index - 1)
