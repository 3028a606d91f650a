"""The specs of FalcoInstance and FalcoRule as typed models, with their defaults.

The reconciler parses each object's spec once, where it reads the object (`parse_instance`,
`parse_rule`), and passes the model on; nothing below reads spec dicts. The CRDs
(crds/*.yaml) say the same in OpenAPI: tests/operator/test_spec.py walks every model
field and the CRD's properties and checks they agree (names, types, defaults, enums,
bounds), both ways. What the CRD cannot reject (an object stored before a rule of the
schema existed, validation off) fails here with a `ShapeError` naming the field, which the
reconciler turns into a status condition.

The engine settings and the outputs are the sensor configuration's own types
(`falconer.sensorconfig`): the spec holds them at its top level and under `outputs`,
falconer.yaml under `engine` and `outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from falconer.sensorconfig import (
    DEFAULT_BUFFER_BYTES,
    MAX_BUFFER_BYTES,
    MIN_BUFFER_BYTES,
    PRIORITY_PATTERN,
    EngineSettings,
    Metrics,
    Outputs,
)
from falconer.engine.scope import DEFAULT_TENANT_MAX_PRIORITY
from falconer.shapes import Bounds, ShapeError, decode, field

#: A resource quantity (Kubernetes' resource.Quantity serialisation: 500m, 512Mi, 1e3).
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
#: A FalcoRule holds at most this many items (5,000 rules beside the defaults already
#: overflow a ConfigMap; the operator checks the rendered size too).
MAX_ITEMS = 5000


# ---- label selectors (metav1.LabelSelector) ----------------------------------------


@dataclass(frozen=True)
class LabelSelectorRequirement:
    """One `matchExpressions` entry."""

    key: str = field("key")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = field("operator")
    values: tuple[str, ...] | None = field("values", None)

    def __post_init__(self) -> None:
        # Kubernetes' LabelSelectorRequirement validation (the CRD's CEL rule says it too).
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ShapeError(("values",), f"operator {self.operator} for key {self.key!r} "
                             + ("needs values" if self.operator in ("In", "NotIn") else "takes no values"))


@dataclass(frozen=True)
class LabelSelector:
    """Selects objects by label; an empty selector selects everything."""

    match_labels: dict[str, str] | None = field("matchLabels", None)
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = field("matchExpressions", None)


# ---- where and how the sensor runs -------------------------------------------------


@dataclass(frozen=True)
class Toleration:
    """A core/v1 Toleration of the sensor's pods."""

    key: str | None = field("key", None)
    operator: Literal["Exists", "Equal"] | None = field("operator", None)
    value: str | None = field("value", None)
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = field("effect", None)
    toleration_seconds: int | None = field("tolerationSeconds", None)


@dataclass(frozen=True)
class Resources:
    """The sensor container's resource requests and limits (quantities by resource name)."""

    requests: dict[str, int | str] | None = field("requests", None, each=Bounds(pattern=QUANTITY_PATTERN))
    limits: dict[str, int | str] | None = field("limits", None, each=Bounds(pattern=QUANTITY_PATTERN))


@dataclass(frozen=True)
class Tenants:
    """FalcoInstance.spec.tenants: which namespaces' FalcoRules are tenant rules, which
    are cluster rules, and the tenants' priority ceiling (operator/tenancy.py)."""

    enabled: bool = field("enabled", False)
    cluster_wide_namespaces: tuple[str, ...] = field(
        "clusterWideNamespaces", (), max_items=64,
        each=Bounds(pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63))
    max_priority: str = field("maxPriority", DEFAULT_TENANT_MAX_PRIORITY, pattern=PRIORITY_PATTERN)


@dataclass(frozen=True)
class FalcoInstanceSpec:
    """FalcoInstance.spec: where the sensor runs, what rules it takes, how it reports."""

    rule_selector: LabelSelector | None = field("ruleSelector", None)
    image: str = field("image", "ghcr.io/falconer/falconer:0.1.0", min_length=1)
    cri_socket: str = field("criSocket", "/run/containerd/containerd.sock", max_length=4096, pattern="^(/.*)?$")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = field("imagePullPolicy", "IfNotPresent")
    node_selector: dict[str, str] | None = field("nodeSelector", None)
    tolerations: tuple[Toleration, ...] | None = field("tolerations", None)
    resources: Resources | None = field("resources", None)
    engine: EngineSettings = field("engine", EngineSettings(), inline=True)
    tenants: Tenants = field("tenants", Tenants())
    outputs: Outputs = field("outputs", Outputs())
    buffer_size_bytes: int = field("bufferSizeBytes", DEFAULT_BUFFER_BYTES, minimum=MIN_BUFFER_BYTES,
                                   maximum=MAX_BUFFER_BYTES)
    metrics: Metrics = field("metrics", Metrics())


# ---- FalcoRule ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FalcoRuleSpec:
    """FalcoRule.spec: a rules file's items, unchanged (the rule engine reads and checks
    each item's own keys), and its place among the FalcoRules an instance combines."""

    order: int = field("order", 0)
    items: tuple[dict[str, Any], ...] = field("items", max_items=MAX_ITEMS)


def parse_instance(spec: Any) -> FalcoInstanceSpec:
    """A FalcoInstance's spec (None reads as {}); ShapeError with a `spec.`-rooted path."""
    return decode(FalcoInstanceSpec, {} if spec is None else spec, ("spec",))


def parse_rule(spec: Any) -> FalcoRuleSpec:
    """A FalcoRule's spec; ShapeError with a `spec.`-rooted path."""
    return decode(FalcoRuleSpec, spec, ("spec",))
