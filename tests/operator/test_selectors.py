"""Label selectors as the API server defines them."""

from __future__ import annotations

import pytest

from falconer.operator import selectors
from falconer.operator.spec import LabelSelector
from falconer.shapes import ShapeError, decode

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
    parsed = None if selector is None else decode(LabelSelector, selector)
    assert selectors.matches(parsed, LABELS) is expected


def test_unknown_operator_is_an_error() -> None:
    with pytest.raises(ShapeError, match=r"matchExpressions\[0\].operator: expected one of .*, got 'Near'"):
        decode(LabelSelector, {"matchExpressions": [{"key": "a", "operator": "Near"}]})


@pytest.mark.parametrize(("op", "values", "message"), [
    ("In", None, "needs values"), ("In", [], "needs values"), ("NotIn", [], "needs values"),
    ("Exists", ["x"], "takes no values"), ("DoesNotExist", ["x"], "takes no values"),
])
def test_values_must_fit_the_operator(op: str, values: list[str] | None, message: str) -> None:
    expr = {"key": "team", "operator": op, **({} if values is None else {"values": values})}
    with pytest.raises(ShapeError, match=r"matchExpressions\[0\].values: .*" + message):
        decode(LabelSelector, {"matchExpressions": [expr]})
