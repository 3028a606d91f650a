"""Which FalcoRules and ClusterFalcoRules a FalcoInstance loads, in which scope and order.

The rule (also in the CRD descriptions and README "Tenant rules"):

- **cluster rules** (every pod and the host): the ClusterFalcoRules the instance's
  `spec.ruleSelector` takes, then the selected FalcoRules of the instance's own namespace
  and of `spec.tenants.clusterWideNamespaces` — today's meaning of a FalcoRule beside
  its instance, so existing installations are unchanged;
- **tenant rules** (only their namespace's pods): with `spec.tenants.enabled`, the
  selected FalcoRules of every other namespace, each namespace in its own scope
  (falconer.engine.scope), under `spec.tenants.maxPriority`.

Cluster rules load first, by (`spec.order`, ClusterFalcoRules before FalcoRules,
namespace, name); then each tenant namespace (in name order) by (`spec.order`, name).

A FalcoRule is named in diagnostics, ConfigMap keys and status by its *label*: its name
when it is in the instance's namespace (as before tenants existed), `<namespace>/<name>`
for another namespace's, `ClusterFalcoRule/<name>` for a ClusterFalcoRule (namespaces are
lowercase, so no label of one kind can be another's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from falconer.engine import EngineOptions
from falconer.engine.scope import DEFAULT_TENANT_MAX_PRIORITY
from falconer.operator import rules, selectors
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import FalcoInstanceSpec, FalcoRuleSpec, LabelSelector, parse_rule
from falconer.shapes import ShapeError

FALCO_RULE = "FalcoRule"
CLUSTER_FALCO_RULE = "ClusterFalcoRule"


@dataclass(frozen=True, order=True)
class RuleRef:
    """A FalcoRule (namespace, name) or a ClusterFalcoRule (namespace "", name)."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> RuleRef:
        """The reference of a FalcoRule or ClusterFalcoRule object."""
        meta = body["metadata"]
        kind = body.get("kind") or (FALCO_RULE if meta.get("namespace") else CLUSTER_FALCO_RULE)
        return cls(kind, "" if kind == CLUSTER_FALCO_RULE else meta.get("namespace") or "", meta["name"])

    def label(self, instance_namespace: str) -> str:
        """Its name as an instance of `instance_namespace` shows it (see the module doc)."""
        if self.kind == CLUSTER_FALCO_RULE:
            return f"{CLUSTER_FALCO_RULE}/{self.name}"
        return self.name if self.namespace == instance_namespace else f"{self.namespace}/{self.name}"

    @classmethod
    def from_label(cls, label: str, instance_namespace: str) -> RuleRef:
        """The reference a label stands for (the inverse of `label`)."""
        head, sep, tail = label.partition("/")
        if not sep:
            return cls(FALCO_RULE, instance_namespace, label)
        if head == CLUSTER_FALCO_RULE:
            return cls(CLUSTER_FALCO_RULE, "", tail)
        return cls(FALCO_RULE, head, tail)


@dataclass(frozen=True)
class Tenancy:
    """An instance's `spec.tenants`, with its namespace: who is cluster-wide, who a tenant."""

    namespace: str
    enabled: bool = False
    cluster_wide: frozenset[str] = frozenset()
    max_priority: str = DEFAULT_TENANT_MAX_PRIORITY

    @classmethod
    def of(cls, instance_namespace: str, spec: FalcoInstanceSpec) -> Tenancy:
        """From an instance's spec (default `tenants`: none, as before they existed)."""
        tenants = spec.tenants
        return cls(instance_namespace, tenants.enabled, frozenset(tenants.cluster_wide_namespaces),
                   tenants.max_priority)

    def scope(self, ref: RuleRef) -> str | None:
        """The tenant namespace the rule loads in, "" for the cluster scope, None when
        this instance does not load rules of its namespace."""
        if ref.kind == CLUSTER_FALCO_RULE or ref.namespace == self.namespace \
                or ref.namespace in self.cluster_wide:
            return ""
        return ref.namespace if self.enabled else None

    def namespaces(self) -> frozenset[str] | None:
        """The namespaces whose FalcoRules this instance may load; None: every one."""
        return None if self.enabled else self.cluster_wide | {self.namespace}


@dataclass(frozen=True)
class Candidate:
    """One selected FalcoRule or ClusterFalcoRule in load order, with its scope."""

    ref: RuleRef
    scope: str
    body: Mapping[str, Any]
    spec: FalcoRuleSpec | ShapeError  # the parsed spec, or why it does not parse (a finding)

    @property
    def order(self) -> int:
        """`spec.order` (0 for a spec that does not parse)."""
        return self.spec.order if isinstance(self.spec, FalcoRuleSpec) else 0


def rule_spec(body: Mapping[str, Any]) -> FalcoRuleSpec | ShapeError:
    """The FalcoRule's or ClusterFalcoRule's parsed spec, or why it does not parse."""
    try:
        return parse_rule(body.get("spec"))
    except ShapeError as exc:
        return exc


def load_order(tenancy: Tenancy, selector: LabelSelector | None,
               objects: Iterable[Mapping[str, Any]]) -> list[Candidate]:
    """The objects the instance loads (selected, not being deleted, in a scope), cluster
    scope first, then each tenant."""
    chosen: list[Candidate] = []
    for body in objects:
        meta = body["metadata"]
        if meta.get("deletionTimestamp") or not selectors.matches(selector, meta.get("labels")):
            continue
        ref = RuleRef.of(body)
        scope = tenancy.scope(ref)
        if scope is not None:
            chosen.append(Candidate(ref, scope, body, rule_spec(body)))

    def key(c: Candidate) -> tuple[Any, ...]:
        if c.scope:
            return (1, c.scope, c.order, c.ref.name)
        return (0, "", c.order, c.ref.kind != CLUSTER_FALCO_RULE, c.ref.namespace, c.ref.name)
    return sorted(chosen, key=key)


@dataclass(frozen=True)
class Loaded:
    """A candidate compiled where it loads: `text` is what ships (its current text when
    valid, else what `fallback` gives: the operator's last valid text, or None)."""

    candidate: Candidate
    label: str
    text: RuleText | None
    compiled: rules.Compiled


def compile_in_order(candidates: Sequence[Candidate], instance_namespace: str, options: EngineOptions,
                     fallback: Callable[[str, str], RuleText | None] = lambda label, tenant: None,
                     before: Sequence[RuleText] = ()) -> list[Loaded]:
    """Compile each candidate after what loads before it in its scope (`before`, cluster
    texts loaded first, e.g. plain rules files; the cluster's candidates; then its
    tenant's earlier ones), as the sensors will load them: what the operator, its
    admission webhook and `falconer validate` all report from."""
    out: list[Loaded] = []
    for cand in candidates:
        label = cand.ref.label(instance_namespace)
        earlier = [*before, *(done.text for done in out
                              if done.text is not None and done.candidate.scope in ("", cand.scope))]
        text, compiled = rules.compile_falcorule(label, cand.spec, earlier, options, cand.scope)
        if not compiled.valid or text is None:
            text = fallback(label, cand.scope)
        out.append(Loaded(cand, label, text, compiled))
    return out

