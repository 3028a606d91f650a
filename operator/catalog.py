"""Where the reconciler reads the FalcoRules, ClusterFalcoRules and FalcoInstances it
decides on: kopf's in-memory indexes in the operator (no API request per reconcile, so
the operator's API load stays flat as tenants add rules), or plain lists for a one-off
use of the reconciler outside kopf.

Both give plain dicts (the objects as last seen by the watch, or as listed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

#: One kopf index: key -> the values indexed under it (kopf.Index is such a mapping).
Index = Mapping[Any, Iterable[dict[str, Any]]]


class Catalog(Protocol):
    """The objects a reconcile decides on."""

    def instances(self) -> list[dict[str, Any]]:
        """Every FalcoInstance (of the namespaces the operator serves)."""

    def rules(self, namespaces: frozenset[str] | None) -> list[dict[str, Any]]:
        """Every ClusterFalcoRule, and the FalcoRules of `namespaces` (None: of all)."""


class ListedCatalog:
    """Lists through `list_objects(kind, namespace or None for all)` on every call."""

    def __init__(self, list_objects: Callable[[str, str | None], list[dict[str, Any]]]) -> None:
        self._list = list_objects

    def instances(self) -> list[dict[str, Any]]:
        """Every FalcoInstance, listed now."""
        return self._list("FalcoInstance", None)

    def rules(self, namespaces: frozenset[str] | None) -> list[dict[str, Any]]:
        """ClusterFalcoRules and FalcoRules, listed now (one list per namespace)."""
        found = self._list("ClusterFalcoRule", None)
        if namespaces is None:
            return found + self._list("FalcoRule", None)
        for namespace in sorted(namespaces):
            found += self._list("FalcoRule", namespace)
        return found


class IndexedCatalog:
    """kopf indexes keyed by namespace (None for the cluster-scoped ClusterFalcoRules):
    see handlers.py `falcorule_index`, `clusterfalcorule_index`, `falcoinstance_index`."""

    def __init__(self, falcorules: Index, clusterfalcorules: Index, falcoinstances: Index) -> None:
        self._falcorules = falcorules
        self._clusterfalcorules = clusterfalcorules
        self._falcoinstances = falcoinstances

    def instances(self) -> list[dict[str, Any]]:
        """Every indexed FalcoInstance."""
        return _all(self._falcoinstances)

    def rules(self, namespaces: frozenset[str] | None) -> list[dict[str, Any]]:
        """Every indexed ClusterFalcoRule and the indexed FalcoRules of `namespaces`."""
        found = _all(self._clusterfalcorules)
        if namespaces is None:
            return found + _all(self._falcorules)
        for namespace in sorted(namespaces):
            found += list(self._falcorules.get(namespace, ()))
        return found


def _all(index: Index) -> list[dict[str, Any]]:
    return [body for key in list(index) for body in index.get(key, ())]
