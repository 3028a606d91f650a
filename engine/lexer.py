"""Token recognisers for Falco conditions, driven by the parser at the cursor.

Falco's grammar is scanned on demand (what a token is depends on where the parser
stands: `a=b` is a field, an operator and a bare word; inside brackets `]` ends an
argument), so this is a cursor with one recogniser per token class rather than a
separate token stream. Each recogniser either consumes its token (setting `last`)
or leaves the cursor untouched. The token classes and the string escape set follow
libsinsp's filter parser, so the same conditions parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from falconer.engine.located import OffsetError

_SPACE = " \t\n\v\f\r"
_BLANK = " \t\b\r\n"

NOT_BLANK = re.compile(rf"not[{_SPACE}]+")
IDENTIFIER = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
FIELD_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
FIELD_ARG_BARE = re.compile(rf"[^\]\[\"'{_SPACE}]+")
HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+")
NUMBER = re.compile(r"[+\-]?[0-9]+\.?[0-9]*(?:[eE][+\-][0-9]+)?")
BARE_STRING = re.compile(rf"[^()\"'{_SPACE}=,]+")

UNARY_OPS: tuple[str, ...] = ("exists",)
NUM_OPS: tuple[str, ...] = ("<=", "<", ">=", ">")
#: A trailing space means "must be followed by a blank", as in libsinsp.
STR_OPS: tuple[str, ...] = ("==", "=", "!=", "glob ", "iglob ", "contains ", "icontains ",
                            "bcontains ", "startswith ", "bstartswith ", "endswith ", "regex ")
STR_OP_MODIFIERS: tuple[str, ...] = ("oneof ", "anyof ", "allof ")
LIST_OPS: tuple[str, ...] = ("intersects", "in", "pmatch")
TRANSFORMERS: tuple[str, ...] = ("tolower(", "toupper(", "b64(", "basename(", "len(",
                                 "join(", "concat(", "getopt(")
VAL_TRANSFORMER = "val("

_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   " ": "\\", "\\": "\\", "/": "/"}


class ConditionSyntaxError(OffsetError):
    """A condition that does not parse; `offset` is where the parser stopped."""


def unescape(token: str, offset: int) -> str:
    """The value of a quoted token (quotes included), with exactly the escapes of the
    libsinsp Falco 0.44.1 ships (libs 0.25.4 filter/escaping.cpp unescape_str):
    \\b \\f \\n \\r \\t \\\\ \\/, the token's own quote, and the legacy `\\ ` (a backslash;
    the blank is dropped). Anything else, `\\x` included, is Falco's "unsupported string
    escape sequence" error, positioned at the backslash (`offset` is the token's).
    """
    quote = token[0]
    out: list[str] = []
    i, end = 1, len(token) - 1
    while i < end:
        ch = token[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = token[i + 1] if i + 1 < end else ""
        if esc in _SIMPLE_ESCAPES and esc:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc and esc in "\"'":
            if esc != quote:
                raise ConditionSyntaxError(f"invalid \\{esc} escape in {quote}-quoted string",
                                           offset + i)
            out.append(esc)
        else:
            raise ConditionSyntaxError(f"unsupported string escape sequence: \\{esc}", offset + i)
        i += 2
    return "".join(out)


class Cursor:
    """The scanning state: text, offset and the last token recognised."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.last = ""

    def at_end(self) -> bool:
        """Whether everything was consumed."""
        return self.pos >= len(self.text)

    def peek(self, n: int = 1) -> str:
        """The next `n` characters (fewer at the end)."""
        return self.text[self.pos:self.pos + n]

    def blank(self) -> bool:
        """Skip blanks (space, tab, backspace, CR, LF); True if any were skipped."""
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] in _BLANK:
            self.pos += 1
        return self.pos > start

    def literal(self, word: str) -> bool:
        """Consume `word` exactly."""
        if self.text.startswith(word, self.pos):
            self.last = word
            self.pos += len(word)
            return True
        return False

    def one_of(self, words: Sequence[str]) -> bool:
        """Consume the first of `words` present at the cursor."""
        return any(self.literal(w) for w in words)

    def pattern(self, rx: re.Pattern[str]) -> bool:
        """Consume a match of `rx` anchored at the cursor."""
        m = rx.match(self.text, self.pos)
        if not m or not m.group(0):
            return False
        self.last = m.group(0)
        self.pos = m.end()
        return True

    def operator(self, ops: Sequence[str]) -> bool:
        """Consume an operator; those written with a trailing space need a blank after."""
        for op in ops:
            if not op.endswith(" "):
                if self.literal(op):
                    return True
                continue
            saved = self.pos, self.last
            if self.literal(op.strip()):
                if self.blank():
                    return True
                self.pos, self.last = saved
        return False

    def quoted(self) -> bool:
        """Consume a single- or double-quoted string; `last` holds its unescaped value.

        As in libsinsp, a quote preceded by a backslash never closes the string.
        """
        if self.pos >= len(self.text) or self.text[self.pos] not in "'\"":
            return False
        quote = self.text[self.pos]
        start = self.pos
        prev = "\\"
        i = self.pos
        while i < len(self.text):
            ch = self.text[i]
            if ch == quote and prev != "\\":
                token = self.text[start:i + 1]
                self.pos = i + 1
                self.last = unescape(token, start)
                return True
            prev = ch
            i += 1
        return False
