"""Load diagnostics: Falco's closed list of error and warning codes, with positions.

A rules author fixes a file from the message alone, so every diagnostic carries the
file, the 1-based line and column, the item it concerns and the source line with a
caret. The codes are Falco's own names, so that tooling written for Falco's
`--validate` output reads ours unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Errors: any of these makes a load fail (the engine keeps its previous rules).
ERROR_CODES: frozenset[str] = frozenset({
    "LOAD_ERR_FILE_READ",
    "LOAD_ERR_YAML_PARSE",
    "LOAD_ERR_YAML_VALIDATE",
    "LOAD_ERR_COMPILE_CONDITION",
    "LOAD_ERR_COMPILE_OUTPUT",
    "LOAD_ERR_VALIDATE",
})

#: Warnings: reported, but the load succeeds.
WARNING_CODES: frozenset[str] = frozenset({
    "LOAD_UNKNOWN_SOURCE",
    "LOAD_UNKNOWN_FILTER",
    "LOAD_UNUSED_MACRO",
    "LOAD_UNUSED_LIST",
    "LOAD_UNKNOWN_ITEM",
    "LOAD_DEPRECATED_ITEM",
    "LOAD_NO_EVTTYPE",
    "LOAD_APPEND_NO_VALUES",
    "LOAD_EXCEPTION_NAME_NOT_UNIQUE",
    "LOAD_UNSAFE_NA_CHECK",
    "LOAD_UNKNOWN_PLUGIN",
    "LOAD_COMPILE_CONDITION",
    "LOAD_UNKNOWN_KEY",
    # Falconer's own: a rule uses a field its event source does not answer (see
    # falconer.engine.fieldrefs). Not Falco's LOAD_UNKNOWN_FILTER: that one means the
    # rule was dropped, while this rule loads and reads the field as missing.
    "LOAD_UNANSWERED_FIELD",
})


@dataclass(frozen=True)
class Position:
    """A place in a rules file: name plus 1-based line and column."""

    file: str
    line: int
    column: int


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning found while loading rules."""

    code: str
    message: str
    file: str
    line: int
    column: int
    item_kind: str = ""
    item_name: str = ""
    snippet: str = ""

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
            "snippet": self.snippet,
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
    item never hides the diagnostics of the others.
    """

    def __init__(self, code: str, message: str, position: Position | None,
                 item_kind: str = "", item_name: str = "") -> None:
        super().__init__(message)
        if code not in ERROR_CODES and code not in WARNING_CODES:
            raise ValueError(f"unknown diagnostic code {code}")
        self.code = code
        self.message = message
        self.position = position
        self.item_kind = item_kind
        self.item_name = item_name


def snippet_for(text: str | None, line: int, column: int) -> str:
    """The source line at `line` with a caret under `column` (empty when unknown)."""
    if not text or line < 1:
        return ""
    lines = text.splitlines()
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


class Reporter:
    """Collects diagnostics during one load, attaching snippets from the source texts."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts
        self.result = LoadResult()

    def add(self, code: str, message: str, position: Position | None,
            item_kind: str = "", item_name: str = "") -> None:
        """Record one diagnostic; its severity follows from its code."""
        pos = position or Position("", 0, 0)
        diag = Diagnostic(code, message, pos.file, pos.line, pos.column, item_kind, item_name,
                          snippet_for(self._texts.get(pos.file), pos.line, pos.column))
        if diag.is_error:
            self.result.errors.append(diag)
        else:
            self.result.warnings.append(diag)

    def add_error(self, err: LoadError) -> None:
        """Record a caught LoadError."""
        self.add(err.code, err.message, err.position, err.item_kind, err.item_name)
