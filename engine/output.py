"""Rule output formats: `%field` and `%field[arg]` tokens compiled once per rule.

As in libsinsp's formatter, a token is the longest field name at the `%` that the
registry knows (so `%proc.name.` ends before the dot), may carry a bracketed argument,
and may be preceded by a pad width (`%20proc.name`). A missing value prints `<NA>`.
The compiled format renders the text line and the typed `output_fields` map.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from falconer.engine import ast
from falconer.engine.transformers import CheckError, Getter, operand
from falconer.engine.fieldrefs import fields_of
from falconer.engine.fields import FieldInfo, FieldType
from falconer.engine.lexer import ConditionSyntaxError
from falconer.engine.located import OffsetError
from falconer.engine.parser import parse_field_or_transformer

NOT_AVAILABLE = "<NA>"
_SURROGATE = re.compile("[\ud800-\udfff]")
_PAD = re.compile(r"[0-9]+")
#: The widest `%<width>field` accepted: a width is materialised in every alert line, so
#: an enormous one (`%6666666666proc.name`) would cost gigabytes per alert. Falconer's
#: own bound; a wider one is an output error at the number.
MAX_PAD = 4096


class OutputFormatError(OffsetError):
    """A format that does not compile; `offset` is the `%` of the bad token."""


@dataclass(frozen=True)
class OutputField:
    """One plain field whose value goes into `output_fields` (libsinsp's resolution
    token): a `%field` token, or a field inside a `%transformer(...)` token."""

    key: str  # e.g. "proc.aname[2]", as the field was written
    info: FieldInfo
    get: Getter


@dataclass(frozen=True)
class Token:
    """One `%field` or `%transformer(...)` of a format."""

    node: ast.Field | ast.Transformer  # positions are offsets into the format text
    info: FieldInfo
    pad: int
    get: Getter
    #: The plain fields of the token, in text order: libsinsp's formatter puts these,
    #: never the transformed value, into output_fields (eventformatter.cpp
    #: formatter_visitor; transformer tokens are skipped unless resolve_transformed_fields).
    fields: tuple[OutputField, ...]


def _render(value: object) -> str:
    """A value as text in the output line (`<NA>` when missing, lists space-separated)."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_render(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _typed(info: FieldInfo, value: object) -> object:
    """The JSON value of a field: numbers and booleans stay typed, the rest is text."""
    if value is None:
        return None
    if info.numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if info.type == FieldType.BOOL and isinstance(value, bool):
        return value
    return _render(value)


class OutputFormat:
    """A compiled output format."""

    def __init__(self, parts: list[str | Token]) -> None:
        self._parts = parts
        self.tokens = [p for p in parts if isinstance(p, Token)]

    def render(self, event: object) -> tuple[str, dict[str, object]]:
        """The output line and the output_fields map of an event."""
        out: list[str] = []
        fields: dict[str, object] = {}
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            text = _render(part.get(event))
            out.append(text.ljust(part.pad)[:part.pad] if part.pad else text)
            for field in part.fields:
                fields[field.key] = _typed(field.info, field.get(event))
        return "".join(out), fields


def _token_at(fmt: str, start: int) -> tuple[ast.Field | ast.Transformer, Getter, FieldInfo,
                                              int]:
    """The token at `start`: as in libsinsp, the longest prefix that parses and compiles
    (`%proc.namex` is `%proc.name` followed by the text `x`)."""
    rest = fmt[start:]
    size = len(rest)
    last_error = "expected a field or a transformer"
    while size > 0:
        try:
            node, end = parse_field_or_transformer(rest[:size])
            get, info, _ = operand(node)
            if info.filter_only:
                raise OutputFormatError(f"{info.name} is filter only and cannot be used as a "
                                        "display field", start - 1)
            return node, get, info, start + end
        except ConditionSyntaxError as exc:
            last_error = exc.message
            size -= 1
        except CheckError as exc:
            last_error = exc.message
            size = min(size, end) - 1
    raise OutputFormatError(f"unknown filter: {last_error}", start - 1)


def field_key(node: ast.Field) -> str:
    """The output_fields key of a field: its name, plus `[arg]` when it has one."""
    return f"{node.name}[{node.arg}]" if node.arg is not None else node.name


def _output_fields(node: ast.Field | ast.Transformer) -> tuple[OutputField, ...]:
    """The plain fields of a token, each with its getter and registry entry."""
    out: list[OutputField] = []
    for field in fields_of(node):
        get, info, _ = operand(field)
        out.append(OutputField(field_key(field), info, get))
    return tuple(out)


def escape_text(line: str) -> str:
    """A line safe for a text output, as Falco 0.44 writes it (formats.cpp: the line is
    JSON-encoded and the quotes dropped): `"` and `\\` get a backslash, control
    characters become `\\n`, `\\t`, `\\u001b`..., undecodable bytes U+FFFD."""
    return json.dumps(_SURROGATE.sub("\ufffd", line), ensure_ascii=False)[1:-1]


def compile_output(fmt: str) -> OutputFormat:
    """Compile a rule's output; raises OutputFormatError."""
    if fmt.startswith("*"):
        fmt = fmt[1:]
    parts: list[str | Token] = []
    literal_start = 0
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            i += 1
            continue
        if i > literal_start:
            parts.append(fmt[literal_start:i])
        if i == len(fmt) - 1:
            raise OutputFormatError("invalid formatting syntax: formatting cannot end with a %", i)
        pad = 0
        j = i + 1
        pm = _PAD.match(fmt, j)
        if pm:
            pad, j = int(pm.group(0)), pm.end()
            if pad > MAX_PAD:
                raise OutputFormatError(
                    f"invalid formatting syntax: a field width is at most {MAX_PAD}, not {pad}", i + 1)
            if j >= len(fmt):
                raise OutputFormatError(
                    "invalid formatting syntax: formatting cannot end with a number", i)
        node, get, info, end = _token_at(fmt, j)
        node = ast.shifted(node, j)  # type: ignore[assignment]
        parts.append(Token(node, info, pad, get, _output_fields(node)))
        i = literal_start = end
    if literal_start < len(fmt):
        parts.append(fmt[literal_start:])
    return OutputFormat(parts)
