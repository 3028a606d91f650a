"""Shell globs with glibc `fnmatch(pattern, s, 0)` semantics (the `glob` operator).

Unlike Python's `fnmatch`, a backslash escapes the next character, `[^...]` negates
like `[!...]`, and — flags being 0 — `*` also matches `/` and a leading dot.
"""

from __future__ import annotations

import re


def glob_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """A regex that fully matches what `fnmatch(pattern, ., 0)` (or FNM_CASEFOLD) does."""
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
            out.append(re.escape(pattern[i]))
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
            out.append(re.escape(ch))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(out), flags)
