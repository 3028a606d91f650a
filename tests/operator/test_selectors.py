"""Label selectors as the API server defines them."""

from __future__ import annotations

import pytest

from falconer.operator import selectors

LABELS = {"team": "sec", "tier": "base"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"team": "sec"}}, True),
        ({"matchLabels": {"team": "web"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["base", "x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["base"]}]}, False),
        ({"matchExpressions": [{"key": "nope", "operator": "NotIn", "values": ["base"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, False),
        ({"matchLabels": {"team": "sec"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ],
)
def test_matches(selector: dict | None, expected: bool) -> None:
    assert selectors.matches(selector, LABELS) is expected


def test_unknown_operator_is_an_error() -> None:
    with pytest.raises(selectors.SelectorError, match="Near"):
        selectors.matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, LABELS)


@pytest.mark.parametrize(("op", "values", "message"), [
    ("In", None, "needs values"), ("In", [], "needs values"), ("NotIn", [], "needs values"),
    ("Exists", ["x"], "takes no values"), ("DoesNotExist", ["x"], "takes no values"),
])
def test_values_must_fit_the_operator(op: str, values: list[str] | None, message: str) -> None:
    expr = {"key": "team", "operator": op, **({} if values is None else {"values": values})}
    with pytest.raises(selectors.SelectorError, match=message):
        selectors.matches({"matchExpressions": [expr]}, LABELS)
