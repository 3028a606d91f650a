"""Label selectors (metav1.LabelSelector) evaluated in the operator.

A FalcoInstance selects FalcoRules by label; the operator evaluates the selector itself
so it can also answer the reverse question (which instances select this FalcoRule?)
without another API call. The selector arrives parsed (`spec.LabelSelector`), so its
shape (operators, values) is already checked.
"""

from __future__ import annotations

from collections.abc import Mapping

from falconer.operator.spec import LabelSelector, LabelSelectorRequirement


def matches(selector: LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    """Whether `labels` satisfy `selector`; an empty or absent selector selects everything."""
    labels = labels or {}
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    return all(_expression(expr, labels) for expr in selector.match_expressions or ())


def _expression(expr: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    values = set(expr.values or ())
    if expr.operator == "In":
        return expr.key in labels and labels[expr.key] in values
    if expr.operator == "NotIn":
        return expr.key not in labels or labels[expr.key] not in values
    if expr.operator == "Exists":
        return expr.key in labels
    return expr.key not in labels   # DoesNotExist
