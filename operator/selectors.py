"""Label selectors (metav1.LabelSelector) evaluated in the operator.

A FalcoInstance selects FalcoRules by label; the operator evaluates the selector itself
so it can also answer the reverse question (which instances select this FalcoRule?)
without another API call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector the API server's schema would not have let through."""


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether `labels` satisfy `selector`; an empty or absent selector selects everything."""
    labels = labels or {}
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression(expr, labels) for expr in selector.get("matchExpressions") or ())


def _expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = str(expr.get("key")), expr.get("operator")
    values = set(expr.get("values") or ())
    if (op in ("In", "NotIn")) != bool(values):
        # Kubernetes' LabelSelectorRequirement: values must be non-empty for In/NotIn and
        # empty for Exists/DoesNotExist (the CRD's CEL rule refuses it at apply time).
        raise SelectorError(f"selector operator {op!r} for key {key!r} "
                            + ("needs values" if op in ("In", "NotIn") else "takes no values"))
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise SelectorError(f"unknown selector operator {op!r} for key {key!r}")
