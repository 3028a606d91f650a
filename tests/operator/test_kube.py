"""compare-then-apply: what counts as "already right" (no write, no watch event)."""

from __future__ import annotations

from typing import Any

import pytest

from falconer.operator.kube import contains


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        ({"a": 1, "b": {"c": [1, 2], "d": "x"}, "server": "default"}, {"b": {"c": [1, 2]}, "a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"l": [{"x": 1, "extra": 0}]}, {"l": [{"x": 1}]}, True),
        ({"l": [1, 2, 3]}, {"l": [1, 2]}, False),
        ({"f": True}, {"f": 1}, False),
        ({"f": 1}, {"f": True}, False),
        ({"n": 5060}, {"n": 5060.0}, True),
        ({"q": "512Mi"}, {"q": "512Mi"}, True),
        ({"v": None}, {"v": "None"}, False),
        ({}, {}, True),
    ],
)
def test_contains(live: Any, desired: Any, expected: bool) -> None:
    assert contains(live, desired) is expected
