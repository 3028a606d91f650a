"""Load diagnostics: Falco's closed list of error and warning codes, with positions.

A rules author fixes a file from the message alone, so every diagnostic carries the
file, the 1-based line and column, the item it concerns and the source line with a
caret. The codes are Falco's own names, so that tooling written for Falco's
`--validate` output reads ours unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar


class Code(StrEnum):
    """Falco's load result codes (falco's load_result error_code and warning_code names,
    which are also the wire values), plus Falconer's own LOAD_UNANSWERED_FIELD."""

    LOAD_ERR_FILE_READ = "LOAD_ERR_FILE_READ"
    LOAD_ERR_YAML_PARSE = "LOAD_ERR_YAML_PARSE"
    LOAD_ERR_YAML_VALIDATE = "LOAD_ERR_YAML_VALIDATE"
    LOAD_ERR_COMPILE_CONDITION = "LOAD_ERR_COMPILE_CONDITION"
    LOAD_ERR_COMPILE_OUTPUT = "LOAD_ERR_COMPILE_OUTPUT"
    LOAD_ERR_VALIDATE = "LOAD_ERR_VALIDATE"
    # Warnings: reported, but the load succeeds.
    LOAD_UNKNOWN_SOURCE = "LOAD_UNKNOWN_SOURCE"
    LOAD_UNKNOWN_FILTER = "LOAD_UNKNOWN_FILTER"
    LOAD_UNUSED_MACRO = "LOAD_UNUSED_MACRO"
    LOAD_UNUSED_LIST = "LOAD_UNUSED_LIST"
    LOAD_UNKNOWN_ITEM = "LOAD_UNKNOWN_ITEM"
    LOAD_DEPRECATED_ITEM = "LOAD_DEPRECATED_ITEM"
    LOAD_NO_EVTTYPE = "LOAD_NO_EVTTYPE"
    LOAD_APPEND_NO_VALUES = "LOAD_APPEND_NO_VALUES"
    LOAD_EXCEPTION_NAME_NOT_UNIQUE = "LOAD_EXCEPTION_NAME_NOT_UNIQUE"
    LOAD_UNSAFE_NA_CHECK = "LOAD_UNSAFE_NA_CHECK"
    LOAD_UNKNOWN_PLUGIN = "LOAD_UNKNOWN_PLUGIN"
    LOAD_COMPILE_CONDITION = "LOAD_COMPILE_CONDITION"
    LOAD_UNKNOWN_KEY = "LOAD_UNKNOWN_KEY"
    # Falconer's own: a rule uses a field its event source does not answer (see
    # falconer.engine.fieldrefs). Not Falco's LOAD_UNKNOWN_FILTER: that one means the
    # rule was dropped, while this rule loads and reads the field as missing.
    LOAD_UNANSWERED_FIELD = "LOAD_UNANSWERED_FIELD"


#: Errors: any of these makes a load fail (the engine keeps its previous rules).
ERROR_CODES: frozenset[Code] = frozenset(c for c in Code if c.startswith("LOAD_ERR_"))
#: Warnings: reported, but the load succeeds.
WARNING_CODES: frozenset[Code] = frozenset(Code) - ERROR_CODES


@dataclass(frozen=True)
class Position:
    """A place in a rules file: name plus 1-based line and column."""

    file: str
    line: int
    column: int


#: Falco's item type of each item kind (rule_loader.cpp item_type_strings).
ITEM_TYPES: dict[str, str] = {
    "": "rules content item", "rule": "rule", "macro": "macro", "list": "list",
    "required_engine_version": "required_engine_version",
    "required_plugin_versions": "required plugin versions",
}


@dataclass(frozen=True)
class Step:
    """One location below an item in a diagnostic's context (e.g. `rule condition`, then
    `condition expression`); `content` names what the position is in when it is not the
    file (Falco names a condition expression by its first characters, quoted)."""

    item_type: str
    item_name: str
    position: Position
    content: str = ""


@dataclass(frozen=True)
class Location:
    """One level of a diagnostic's context chain, from the file down to the token, as
    Falco's rule_loader::context has them: what is there (`item_type`, Falco's words:
    "rules content", "rule", "rule condition", "condition expression", "rule output",
    "rule priority", "exception", "value for", ...), its name, and where it starts
    (`line`/`column` 1-based, 0 for the whole file; `offset` 0-based into the file)."""

    item_type: str
    item_name: str
    name: str
    line: int
    column: int
    offset: int


@dataclass(frozen=True)
class ItemRef:
    """Where a rules-file item starts and its 0-based index among its file's items."""

    kind: str
    name: str
    position: Position
    index: int


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning found while loading rules.

    `locations` is the context chain (rules content, item, value, token); `item_index`
    the 0-based index of the item in its file (-1 when the diagnostic concerns no item).
    """

    code: Code
    message: str
    file: str
    line: int
    column: int
    item_kind: str = ""
    item_name: str = ""
    snippet: str = ""
    locations: tuple[Location, ...] = ()
    item_index: int = -1

    @property
    def is_error(self) -> bool:
        """Errors fail the load; everything else is a warning."""
        return self.code in ERROR_CODES

    def to_dict(self) -> dict[str, object]:
        """The JSON shape printed by `falconer validate --json` and kept in CR status."""
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "item": self.item_name,
            "kind": self.item_kind,
            "item_index": self.item_index,
            "snippet": self.snippet,
            "locations": [dataclasses.asdict(loc) for loc in self.locations],
        }

    def human(self) -> str:
        """`file:line:col: error|warning CODE: message (kind 'name')` plus the snippet."""
        severity = "error" if self.is_error else "warning"
        head = f"{self.file}:{self.line}:{self.column}: {severity} {self.code}: {self.message}"
        if self.item_kind:
            head += f" ({self.item_kind} '{self.item_name}')"
        return head + ("\n" + self.snippet if self.snippet else "")


class LoadError(Exception):
    """A positioned problem found while loading; becomes a Diagnostic.

    Raised inside the loader stages and caught at item granularity, so that one bad
    item never hides the diagnostics of the others. `steps` are the context below the
    item (see Step); without them a position inside an item is a "value for" it.
    """

    def __init__(self, code: Code, message: str, position: Position | None,
                 item_kind: str = "", item_name: str = "",
                 steps: tuple[Step, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.position = position
        self.item_kind = item_kind
        self.item_name = item_name
        self.steps = steps


def line_starts(text: str) -> list[int]:
    """The offset at which each line of `text` starts (line 1 at index 0)."""
    starts = [0]
    find = text.find
    nl = find("\n")
    while nl >= 0:
        starts.append(nl + 1)
        nl = find("\n", nl + 1)
    return starts


_D = TypeVar("_D")


def _derived(text: str | None, file: str, cache: dict[str, _D], derive: Callable[[str], _D]) -> _D | None:
    """`derive(text)` for a file, made once and kept in `cache` (None: no or empty text)."""
    if not text:
        return None
    found = cache.get(file)
    if found is None:
        found = cache[file] = derive(text)
    return found


def snippet_for(text: str | None, line: int, column: int,
                lines: list[str] | None = None) -> str:
    """The source line at `line` with a caret under `column` (empty when unknown);
    `lines` (the text's `splitlines()`) spares splitting the text again."""
    if not text or line < 1:
        return ""
    lines = lines if lines is not None else text.splitlines()
    if line > len(lines):
        return ""
    src = lines[line - 1].rstrip("\r").expandtabs(1)
    caret = " " * max(column - 1, 0) + "^"
    return f"{src}\n{caret}"


@dataclass
class LoadResult:
    """What a load produced: errors, warnings and the counts of loaded items."""

    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"rules": 0, "macros": 0, "lists": 0})

    @property
    def ok(self) -> bool:
        """True when the load had no errors."""
        return not self.errors

    def to_dict(self) -> dict[str, object]:
        """The `validate --json` object: counts plus every diagnostic."""
        return {
            **self.counts,
            "errors": [d.to_dict() for d in self.errors],
            "warnings": [d.to_dict() for d in self.warnings],
        }


def offset_of(text: str | None, line: int, column: int,
              starts: list[int] | None = None) -> int:
    """The 0-based character offset of a 1-based line and column (-1 when unknown);
    `starts` (the text's `line_starts`) spares a scan of the text."""
    if not text or line < 1:
        return -1 if line >= 1 else 0
    starts = starts if starts is not None else line_starts(text)
    if line > len(starts):
        return -1
    return starts[line - 1] + max(column - 1, 0)


class Reporter:
    """Collects diagnostics during one load, attaching snippets and context chains.

    The loader tells it which item is being read (`current`) and every item's first
    definition (`note_item`), so that a diagnostic about an item carries the item's
    location and index without each call site passing them.
    """

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts
        #: line_starts and lines of each text, made when a diagnostic first points into
        #: it (a ruleset of thousands of rules may warn thousands of times).
        self._starts: dict[str, list[int]] = {}
        self._lines: dict[str, list[str]] = {}
        self.result = LoadResult()
        self.current: ItemRef | None = None
        self._items: dict[tuple[str, str], ItemRef] = {}

    def note_item(self, ref: ItemRef) -> None:
        """An item was read: it is the current one, and the reference for its name."""
        self.current = ref
        self._items.setdefault((ref.kind, ref.name), ref)

    def new_scope(self) -> None:
        """Items read from now on are looked up apart from earlier ones (a tenant's
        scope, where names may repeat another scope's)."""
        self._items = {}

    def _item(self, kind: str, name: str, file: str) -> ItemRef | None:
        """The item a diagnostic concerns: the current one if it matches, else the first
        definition of that kind and name."""
        cur = self.current
        if cur is not None and cur.kind == kind and cur.name == name and \
                cur.position.file == file:
            return cur
        return self._items.get((kind, name)) if kind else None

    def _location(self, item_type: str, item_name: str, pos: Position,
                  content: str = "") -> Location:
        return Location(item_type, item_name, content or pos.file, pos.line, pos.column,
                        offset_of(self._texts.get(pos.file), pos.line, pos.column,
                                  self._line_starts(pos.file)))

    def _line_starts(self, file: str) -> list[int] | None:
        """The cached `line_starts` of a file's text (None: no such text)."""
        return _derived(self._texts.get(file), file, self._starts, line_starts)

    def _split(self, file: str) -> list[str] | None:
        """The cached `splitlines()` of a file's text (None: no such text)."""
        return _derived(self._texts.get(file), file, self._lines, str.splitlines)

    def _chain(self, pos: Position, ref: ItemRef | None, steps: tuple[Step, ...]) -> \
            tuple[Location, ...]:
        """rules content, then the item, then the steps (or a "value for" at `pos`)."""
        locations = [Location("rules content", "", pos.file, 0, 0, 0)]
        if ref is not None:
            locations.append(self._location(ITEM_TYPES.get(ref.kind, ref.kind), ref.name,
                                            ref.position))
        for step in steps:
            locations.append(self._location(step.item_type, step.item_name, step.position,
                                            step.content))
        if not steps and pos.line and (ref is None or ref.position != pos):
            locations.append(self._location("value for", "", pos))
        return tuple(locations)

    def add(self, code: Code, message: str, position: Position | None,
            item_kind: str = "", item_name: str = "", steps: tuple[Step, ...] = ()) -> None:
        """Record one diagnostic; its severity follows from its code."""
        pos = position or Position("", 0, 0)
        ref = self._item(item_kind, item_name, pos.file)
        diag = Diagnostic(code, message, pos.file, pos.line, pos.column, item_kind, item_name,
                          snippet_for(self._texts.get(pos.file), pos.line, pos.column,
                                      self._split(pos.file)),
                          self._chain(pos, ref, steps), ref.index if ref else -1)
        if diag.is_error:
            self.result.errors.append(diag)
        else:
            self.result.warnings.append(diag)

    def add_error(self, err: LoadError) -> None:
        """Record a caught LoadError."""
        self.add(err.code, err.message, err.position, err.item_kind, err.item_name, err.steps)
