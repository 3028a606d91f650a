"""`regex`: RE2 in POSIX mode, exactly as libsinsp compiles and matches it.

libsinsp builds each pattern with `re2::RE2(pattern, RE2::POSIX)` (POSIX syntax,
leftmost-longest matching) and matches the whole value (`ANCHOR_BOTH`)
(sinsp_filtercheck.cpp). The `google-re2` package binds the same library, so the
accepted patterns, their meaning and RE2's error messages are Falco's, and matching
runs in time linear in the value: an attacker-controlled command line cannot stall the
engine with a backtracking pattern.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]


class Pattern(Protocol):
    """A compiled RE2 pattern (the part of google-re2's `_Regexp` the engine uses)."""

    def fullmatch(self, text: str) -> object | None: ...


class RegexError(ValueError):
    """A pattern RE2's POSIX mode does not compile; the message is RE2's."""


def _options(posix: bool, dot_nl: bool, case_sensitive: bool) -> object:
    """RE2 options; `log_errors` off (errors are reported as diagnostics)."""
    options = re2.Options()
    options.posix_syntax = posix
    options.longest_match = posix
    options.dot_nl = dot_nl
    options.case_sensitive = case_sensitive
    options.log_errors = False
    return options


def compile_re2(pattern: str, posix: bool = False, dot_nl: bool = False,
                case_sensitive: bool = True) -> Pattern:
    """Compile with RE2 (linear-time matching); raises RegexError with RE2's message."""
    try:
        compiled: Pattern = re2.compile(pattern, _options(posix, dot_nl, case_sensitive))
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise RegexError(text) from None
    return compiled


def compile_posix(pattern: str) -> Pattern:
    """A `regex` operand as libsinsp compiles it (`RE2::POSIX`)."""
    return compile_re2(pattern, posix=True)
