"""Strings that remember where each character came from in a rules file.

Conditions are built from pieces: a YAML scalar (plain, quoted, literal or folded), a
macro appended to another, the text synthesised from a rule's exceptions. A parse or
compile error has an offset into the combined string; `LocatedText.position` turns it
into the file, line and column of the offending token so the author sees the right
spot even in a multi-line `|` block.
"""

from __future__ import annotations

from dataclasses import dataclass

from falconer.engine.diagnostics import Position


class OffsetError(Exception):
    """A problem at a character offset of a condition or output text, raised where only
    the text is known; the loader turns `offset` into a file position (`LocatedText`)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Span:
    """Characters `start..end` of the text sit on one file line from `column` on.

    `exact` spans advance the column with the offset; inexact ones (synthesised text,
    escaped quoted scalars) report their start column for every offset.
    """

    start: int
    end: int
    file: str
    line: int
    column: int
    exact: bool = True


class LocatedText:
    """An immutable string plus the spans that map its offsets to file positions."""

    __slots__ = ("text", "spans")

    def __init__(self, text: str, spans: tuple[Span, ...] = ()) -> None:
        self.text = text
        self.spans = spans

    @classmethod
    def synthetic(cls, text: str, where: Position | None) -> LocatedText:
        """Text with no source of its own, reported at `where` (e.g. an exception)."""
        if where is None:
            return cls(text)
        return cls(text, (Span(0, len(text), where.file, where.line, where.column, False),))

    def __add__(self, other: LocatedText | str) -> LocatedText:
        """Concatenation; a plain str adds characters with no position of their own."""
        if isinstance(other, str):
            return LocatedText(self.text + other, self.spans)
        shift = len(self.text)
        moved = tuple(Span(s.start + shift, s.end + shift, s.file, s.line, s.column, s.exact)
                      for s in other.spans)
        return LocatedText(self.text + other.text, self.spans + moved)

    def __radd__(self, other: str) -> LocatedText:
        return LocatedText(other) + self

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"LocatedText({self.text!r})"

    def strip(self) -> LocatedText:
        """Without leading and trailing whitespace, positions kept."""
        start = len(self.text) - len(self.text.lstrip())
        end = len(self.text.rstrip())
        if start >= end:
            return LocatedText("", self.spans[:1])
        spans = []
        for s in self.spans:
            lo, hi = max(s.start, start), min(s.end, end)
            if s.start >= end or (s.end <= start and s.end != s.start):
                continue
            spans.append(Span(max(lo - start, 0), max(hi - start, 0), s.file, s.line,
                              s.column + (lo - s.start if s.exact else 0), s.exact))
        return LocatedText(self.text[start:end], tuple(spans) or self.spans[:1])

    def position(self, offset: int) -> Position | None:
        """The file position of character `offset` (clamped into the text)."""
        if not self.spans:
            return None
        best = self.spans[0]
        for span in self.spans:
            if span.start <= offset:
                best = span
            else:
                break
        if not best.exact:
            return Position(best.file, best.line, best.column)
        delta = min(max(offset - best.start, 0), max(best.end - best.start, 0))
        return Position(best.file, best.line, best.column + delta)
