"""Path prefixes (pmatch), shell globs (glob) and POSIX regexes (regex) as libsinsp has them."""

from __future__ import annotations

import pytest

from falconer.engine.fnglob import glob_regex
from falconer.engine.pathprefix import PathPrefixes
from falconer.engine.posixregex import RegexError, compile_posix


@pytest.mark.parametrize("paths,path,expected", [
    (["/usr/bin"], "/usr/bin", True),
    (["/usr/bin"], "/usr/bin/ls", True),
    (["/usr/bin"], "/usr/binx", False),
    (["/usr/bin"], "/usr", False),
    (["/usr/bin/"], "/usr//bin/ls", True),
    (["/"], "/anything/at/all", True),
    (["/home/*/.ssh"], "/home/bob/.ssh/id_rsa", True),
    (["/home/*/.ssh"], "/home/bob/x/.ssh", False),
    (["/etc", "/var/lib/[ab]*"], "/var/lib/apt/lists", True),
    (["/etc", "/var/lib/[ab]*"], "/var/lib/dpkg", False),
    ([], "/etc", False),
])
def test_path_prefixes(paths: list[str], path: str, expected: bool) -> None:
    assert PathPrefixes(paths).match(path) is expected


@pytest.mark.parametrize("pattern,value,expected", [
    ("/etc/*", "/etc/a/b", True),  # flags 0: * crosses slashes
    ("*.conf", ".hidden.conf", True),
    (r"a\*", "a*", True),
    (r"a\*", "ab", False),
    ("[^a]x", "bx", True),
    ("[!a]x", "ax", False),
    ("[]]", "]", True),
    ("x[", "x[", True),
])
def test_globs(pattern: str, value: str, expected: bool) -> None:
    assert (glob_regex(pattern).fullmatch(value) is not None) is expected


def test_iglob_ignores_case() -> None:
    assert glob_regex("/ETC/*", ignore_case=True).fullmatch("/etc/passwd")


@pytest.mark.parametrize("pattern,value,expected", [
    ("[[:alpha:]]+[[:digit:]]", "python3", True),
    ("[[:alpha:]]+[[:digit:]]", "python", False),
    ("[[:upper:][:digit:]_]+", "AB_1", True),
    ("a|b", "b", True),
    ("ba.h", "bash", True),
    ("ba", "bash", False),  # the whole value must match
])
def test_posix_regex(pattern: str, value: str, expected: bool) -> None:
    assert (compile_posix(pattern).fullmatch(value) is not None) is expected


@pytest.mark.parametrize("pattern,message", [
    (r"\d+", "invalid escape sequence: \\d"), (r"\bx", "invalid escape sequence: \\b"),
    ("(?i)x", "no argument for repetition operator: ?"), ("[[:nope:]]", "invalid character class range: [:nope:]"),
    ("(a", "missing ): (a"), ("[a", "missing ]: [a"), ("a{1001}", "invalid repetition size: {1001}"),
])
def test_posix_regex_rejects_what_re2_posix_rejects(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as exc:
        compile_posix(pattern)
    assert str(exc.value) == message


def test_posix_mode_stacks_repetitions_and_matches_leftmost_longest() -> None:
    """Without Perl extensions `a*?` is `(a*)?`, not a lazy star (RE2 parse.cc)."""
    assert compile_posix("a*?").fullmatch("aaa") is not None
    assert compile_posix("(a|ab)(c|bcd)").fullmatch("abcd") is not None
