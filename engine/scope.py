"""Tenant scopes: rules a namespace owns, isolated from the cluster's and each other's.

A load has one cluster scope (rules files, ClusterFalcoRules, FalcoRules of cluster-wide
namespaces) and one scope per tenant namespace (that namespace's FalcoRules). The
cluster scope is collected and compiled first, as Falco loads files; each tenant is then
collected and compiled on its own, layered on the compiled cluster scope
(`Compiler.layered`):

- a tenant sees the cluster's lists and macros, its own items, and nothing of another
  tenant (two tenants may each define `my_list` or a rule `X`);
- a tenant item naming a cluster rule, or a cluster list or macro (of either kind), is
  refused, whatever its form (definition, `append`, `override`, `enabled`): a tenant can
  neither redefine, extend, disable nor shadow what the cluster defined, and the cluster's
  macros keep the meaning they were compiled with (they are not recompiled per tenant);
- every tenant rule's compiled condition is `k8s.ns.name = "<namespace>" and (<rule>)`,
  built as a tree (`guarded`), not as text the tenant could unbalance; host events have
  no namespace, so a tenant rule never matches them;
- a tenant rule's priority may not be above the ceiling (`EngineOptions.
  tenant_max_priority`, Warning unless the FalcoInstance says otherwise);
- tenant rules are ordered after every cluster rule, so with `rule_matching: first` a
  tenant rule never hides a cluster rule's alert; `CompiledRule.namespace` and
  `Alert.namespace` carry the tenant, so its alerts are routed to its namespace only.

Every refusal is a LOAD_ERR_VALIDATE diagnostic at the offending item's name (at its
priority for the ceiling).
"""

from __future__ import annotations

import dataclasses
import re

from falconer.engine import ast
from falconer.engine.binding import bind_generic
from falconer.engine.collector import PRIORITIES, Collector, parse_priority
from falconer.engine.compiler import Compiled, CompiledRule, Compiler
from falconer.engine.diagnostics import Code, LoadError
from falconer.engine.plan import Planner
from falconer.engine.reader import Item

#: The scope of cluster rules (`RulesSource.namespace`, `CompiledRule.namespace`).
CLUSTER = ""
#: The highest priority a tenant rule may have unless the instance sets another.
DEFAULT_TENANT_MAX_PRIORITY = "Warning"
#: The field the scope guard compares (Falco's k8s.ns.name: the pod's namespace).
NAMESPACE_FIELD = "k8s.ns.name"
#: A Kubernetes namespace name (RFC 1123 label).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_namespace(namespace: str) -> str:
    """The namespace if it is a valid Kubernetes namespace name; ValueError otherwise."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"invalid tenant namespace {namespace!r}")
    return namespace


def check_max_priority(priority: str) -> str:
    """The canonical priority name of a ceiling; ValueError for an unknown one."""
    canonical = parse_priority(priority)
    if canonical is None:
        raise ValueError(f"invalid tenant priority ceiling {priority!r}")
    return canonical


class TenantCollector(Collector):
    """Collects one tenant's items over the collected cluster scope, refusing any item
    that would touch a cluster name and any rule above the priority ceiling."""

    def __init__(self, cluster: Collector, namespace: str, max_priority: str) -> None:
        super().__init__(cluster.reporter)
        self.namespace = check_namespace(namespace)
        self.max_priority = check_max_priority(max_priority)
        self.cluster = cluster
        self.lists = dict(cluster.lists)
        self.macros = dict(cluster.macros)
        # Tenant items come after every cluster item: rules are evaluated after the
        # cluster's, and cluster macros are visible to every tenant macro.
        self._index = cluster.next_index

    def collect(self, item: Item) -> None:
        """Refuse an item that touches a cluster name, collect it, then check the
        ceiling on the rule it defined or changed."""
        if item.kind in ("list", "macro", "rule"):
            item.name = item.string(item.kind)
            self._refuse_cluster_name(item)
        super().collect(item)
        if item.kind == "rule" and item.name in self.rules:
            self._check_ceiling(item)

    def _refuse_cluster_name(self, item: Item) -> None:
        """Raise when the item names a cluster rule, list or macro."""
        if item.kind == "rule":
            taken = "rule" if item.name in self.cluster.rules else ""
        else:
            taken = next((kind for kind, table in (("list", self.cluster.lists),
                                                   ("macro", self.cluster.macros))
                          if item.name in table), "")
        if not taken:
            return
        raise LoadError(Code.LOAD_ERR_VALIDATE,
                        f"{taken.capitalize()} '{item.name}' is defined by the cluster: rules "
                        f"of namespace '{self.namespace}' cannot {_verb(item, taken)} it",
                        item.key_position(item.kind), item.kind, item.name)

    def _check_ceiling(self, item: Item) -> None:
        """Raise when the tenant's rule is above the ceiling after this item."""
        priority = self.rules[item.name].priority
        if PRIORITIES.index(priority) < PRIORITIES.index(self.max_priority):
            raise LoadError(Code.LOAD_ERR_VALIDATE,
                            f"Priority '{priority}' is above '{self.max_priority}', the "
                            f"highest priority rules of namespace '{self.namespace}' may have",
                            item.key_position("priority"), item.kind, item.name)


def _verb(item: Item, taken: str) -> str:
    """What the item tries to do to the cluster's item, in the refusal's words."""
    if taken != item.kind:
        return "shadow"
    if item.has("override") or item.optional_boolean("append", False):
        return "append to or override"
    if item.kind == "rule" and item.has("enabled") and not any(
            item.has(k) for k in ("condition", "output", "desc", "priority")):
        return "enable or disable"
    return "redefine"


def guard(namespace: str) -> ast.BinaryCheck:
    """The scope guard `k8s.ns.name = "<namespace>"` as a tree."""
    return ast.BinaryCheck(ast.Field(NAMESPACE_FIELD, None, 0), "=",
                           ast.Value(check_namespace(namespace), True, 0), 0)


def guarded(rule: CompiledRule, namespace: str, planner: Planner) -> CompiledRule:
    """The rule restricted to events of pods in `namespace`: the guard is the first
    check of its plan (planned by `planner`, so it is shared by the namespace's rules),
    and the rule carries its namespace."""
    tree = ast.And((guard(namespace), rule.condition), 0)
    plan = planner.plan(tree)
    return dataclasses.replace(rule, plan=plan, check=bind_generic(plan), condition=tree,
                               fields=rule.fields | {NAMESPACE_FIELD}, namespace=namespace)


def compile_tenant(cluster: Compiler, collector: TenantCollector) -> Compiled:
    """Compile a tenant's collection on the compiled cluster scope; its rules guarded,
    its counts its own items only."""
    compiled = cluster.layered(collector).run()
    return Compiled([guarded(rule, collector.namespace, cluster.planner) for rule in compiled.rules],
                    len(collector.macros) - len(collector.cluster.macros),
                    len(collector.lists) - len(collector.cluster.lists))
