"""The condition parser raises nothing but its positioned syntax error, on any input."""

from __future__ import annotations

from functools import cache

import upstream
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falconer.engine import ast
from falconer.engine.lexer import ConditionSyntaxError
from falconer.engine.parser import parse_condition


@cache
def _upstream_conditions() -> list[str]:
    out = []
    for path in upstream.upstream_files():
        for item in yaml.safe_load(path.read_text()):
            if isinstance(item, dict) and isinstance(item.get("condition"), str):
                out.append(item["condition"])
    return out


_ALPHABET = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz._[]()'\" \\,=!<>0123456789\n\tx/*-")
                            + ["and ", "or ", "not ", "in ", "proc.name", "evt.type", " = ",
                               "(", ")", "contains ", "exists", "val(", "tolower(", "pmatch ",
                               "startswith oneof ", "\\x4", "\\'", '\\"'])


def _parse_or_positioned_error(text: str) -> None:
    try:
        tree = parse_condition(text)
    except ConditionSyntaxError as exc:
        assert 0 <= exc.offset <= len(text)
        assert exc.message
        return
    assert isinstance(tree, (ast.And, ast.Or, ast.Not, ast.Identifier, ast.BinaryCheck,
                             ast.UnaryCheck))


@given(st.lists(_ALPHABET, max_size=40).map("".join))
@settings(max_examples=600, deadline=None)
def test_random_conditions(text: str) -> None:
    _parse_or_positioned_error(text)


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_arbitrary_unicode(text: str) -> None:
    _parse_or_positioned_error(text)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_upstream_conditions()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        piece = draw(st.lists(_ALPHABET, max_size=3).map("".join))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + piece + text[i:]
        elif kind == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:i]
    return text


@given(_mutated())
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_upstream_conditions(text: str) -> None:
    _parse_or_positioned_error(text)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "(" * 5000 + "a" + ")" * 5000
    try:
        parse_condition(text)
    except ConditionSyntaxError as exc:
        assert "depth" in exc.message
    else:
        raise AssertionError("5000 nested parentheses must exceed the depth limit")


def test_every_upstream_condition_parses() -> None:
    for cond in _upstream_conditions():
        parse_condition(cond)
