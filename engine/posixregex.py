"""`regex`: RE2 in POSIX mode, as libsinsp compiles it, mapped onto Python's `re`.

libsinsp builds the regex with `RE2::POSIX` and matches the whole value. POSIX mode
accepts bracket classes such as `[[:digit:]]` and rejects Perl extensions (`\\d`, `\\w`,
`\\b`, `(?...)`, lazy quantifiers), so a rule that Falco rejects is rejected here too,
and a rule it accepts means the same thing.
"""

from __future__ import annotations

import re

_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_PERL_ESCAPES = set("dDsSwWbBAzZCQEpPGKR")


class RegexError(ValueError):
    """A pattern RE2's POSIX mode would not compile."""


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """Translate a bracket expression starting at `[`; return it and the index after."""
    out = ["["]
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end < 0:
                raise RegexError("missing closing :]")
            name = pattern[i + 2:end]
            negated = name.startswith("^")
            cls = _CLASSES.get(name.lstrip("^"))
            if cls is None:
                raise RegexError(f"invalid character class range: [:{name}:]")
            if negated:
                raise RegexError("negated POSIX classes need a separate bracket expression")
            out.append(cls)
            i = end + 2
            continue
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise RegexError("trailing \\")
            if pattern[i + 1] in _PERL_ESCAPES:
                raise RegexError(f"invalid escape sequence: \\{pattern[i + 1]}")
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[":
            out.append("\\[")
        else:
            out.append(ch)
        i += 1
    raise RegexError("missing ]")


def compile_posix(pattern: str) -> re.Pattern[str]:
    """Compile an RE2-POSIX pattern; raises RegexError with RE2's complaint."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise RegexError("trailing \\")
            nxt = pattern[i + 1]
            if nxt in _PERL_ESCAPES:
                raise RegexError(f"invalid escape sequence: \\{nxt}")
            out.append(pattern[i:i + 2])
            i += 2
        elif ch == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
        elif ch == "(" and pattern.startswith("(?", i):
            raise RegexError("missing argument to repetition operator: ?")
        elif ch in "*+?}" and pattern.startswith("?", i + 1):
            raise RegexError(f"bad repetition operator: {ch}?")
        else:
            out.append(ch)
            i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise RegexError(str(exc)) from None
