"""The filter compiler's warnings about the constant values of checks.

libsinsp's filter compiler (filter.cpp check_value_and_add_warnings) looks at every
constant on the right of a comparison, those that come from lists and exceptions
included, and Falco reports each finding as a LOAD_COMPILE_CONDITION warning at the
right-hand side of the check:

- a `regex` pattern with no regex character between its optional anchors and leading or
  trailing `.*`/`.+`/`.?` could be `=`, `contains`, `startswith` or `endswith`;
- a value that, without blanks, is a field name (a forgotten `val()`);
- a value that, without blanks, looks like a transformer call (`toupper(proc.name)`).
"""

from __future__ import annotations

from falconer.engine.fields import UnknownField, resolve
from falconer.engine.lexer import FIELD_NAME, TRANSFORMERS, VAL_TRANSFORMER

_REGEX_SPECIAL = frozenset(".+*?^$()[]{}|\\")
_OCCURRENCE = frozenset("+*?")
_SUGGESTED = "'=', 'contains', 'startswith', 'endswith'"
#: Transformer names, `val` included (parser::supported_field_transformers(true)).
_TRANSFORMER_NAMES = tuple(t[:-1] for t in (VAL_TRANSFORMER, *TRANSFORMERS))


def _regex_is_plain(pattern: str) -> bool:
    """Whether a regex has no special character once the anchors and the leading or
    trailing any-char repetition are set aside (libsinsp's heuristic, as written)."""
    n = len(pattern)
    i = 0
    while i < n:
        ch = pattern[i]
        if (i == 0 and ch == "^") or (i == n - 1 and ch == "$"):
            i += 1
            continue
        if (((i == 0 and n > 1) or i == n - 2) and ch == "."
                and i + 1 < n and pattern[i + 1] in _OCCURRENCE):
            i += 2
            continue
        if ch in _REGEX_SPECIAL:
            return False
        i += 1
    return True


def _is_field(text: str) -> bool:
    """Whether `text` names a field exactly (`proc.name`, `proc.aname[2]`)."""
    m = FIELD_NAME.match(text)
    if m is None:
        return False
    name, rest = m.group(0), text[m.end():]
    arg: str | None = None
    if rest:
        if not (rest.startswith("[") and rest.endswith("]")):
            return False
        arg = rest[1:-1]
    try:
        resolve(name, arg)
    except UnknownField:
        return False
    return True


def value_warnings(op: str, value: str) -> list[str]:
    """The messages libsinsp's compiler gives for one constant of a check with `op`."""
    out: list[str] = []
    stripped = "".join(value.split())
    if op.split(" ", 1)[0] == "regex" and _regex_is_plain(value):
        out.append(f"regex check with '{value}' may be optimized with simpler operators "
                   f"such as {_SUGGESTED}")
    if _is_field(stripped):
        out.append(f"'{value}' may be a valid field misused as a const string value")
    for name in _TRANSFORMER_NAMES:
        if (len(stripped) >= len(name) + 2 and stripped.startswith(name + "(")
                and stripped.endswith(")")):
            out.append(f"'{value}' may be a valid field transformer misused as a const "
                       "string value")
    return out
