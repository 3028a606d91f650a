"""Shell globs with glibc `fnmatch(pattern, s, 0)` semantics (the `glob` operator).

Unlike Python's `fnmatch`, a backslash escapes the next character, `[^...]` negates
like `[!...]`, and — flags being 0 — `*` also matches `/` and a leading dot. The glob
is translated to an RE2 pattern, so matching runs in time linear in the value (a
backtracking engine is polynomial or worse in the number of `*` on hostile values).
"""

from __future__ import annotations

import string

from falconer.engine.posixregex import Pattern, compile_re2

_SPECIAL = frozenset(string.punctuation)


def _literal(ch: str) -> str:
    """One character matched literally (ASCII punctuation escaped, as RE2 allows)."""
    return "\\" + ch if ch in _SPECIAL else ch


def glob_pattern(pattern: str) -> str:
    """The RE2 pattern that fully matches what `fnmatch(pattern, ., 0)` does."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i < n:
            out.append(_literal(pattern[i]))
            i += 1
        elif ch == "[":
            j = i
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")  # no closing bracket: a literal '['
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(_literal(ch))
    return "".join(out)


def glob_regex(pattern: str, ignore_case: bool = False) -> Pattern:
    """A compiled matcher: `.fullmatch(value)` is `fnmatch(pattern, value, 0) == 0`
    (or with FNM_CASEFOLD); a class RE2 cannot read never matches anything."""
    try:
        return compile_re2(glob_pattern(pattern), dot_nl=True, case_sensitive=not ignore_case)
    except ValueError:
        return compile_re2("[^\\x00-\\x{10FFFF}]")  # an empty set: matches nothing
