"""What a sensor tells its FalcoInstance, and where its rules came from: the typed
contract between the operator (which renders falconer.yaml and rolls the reports up)
and the sensor (which reads falconer.yaml and writes the reports).

Two shapes live here, each with its keys defined once:

- `RulesOrigin`: one rules file key of the ConfigMap and the FalcoRule (namespace,
  name, generation) its text came from. The operator writes the list into falconer.yaml
  under `falcoRules`, next to `rulesHash` (the ConfigMap's `falconer.io/rules-hash`).
- `NodeReport`: what one node's sensor has actually loaded and seen, written by the
  sensor as a JSON merge patch to `FalcoInstance.status.sensors.<node>` (so each node
  touches only its own entry) and read back by the operator's roll-up.

This module imports nothing beyond the standard library, so both sides can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: falconer.yaml keys (rendered by operator/render.py, read by sensor/config.py).
RULES_HASH_KEY = "rulesHash"
FALCO_RULES_KEY = "falcoRules"
#: The FalcoInstance status key holding one NodeReport per node name.
SENSORS_KEY = "sensors"
#: At most this many rules are listed in a report's `alerts.byRule` (the most frequent).
MAX_RULES_REPORTED = 50


@dataclass(frozen=True)
class RulesOrigin:
    """A rules file of the ConfigMap (`key`) and the FalcoRule generation it holds."""

    key: str
    namespace: str
    name: str
    generation: int

    def to_config(self) -> dict[str, Any]:
        """The falconer.yaml entry: {key, namespace, name, generation}."""
        return {"key": self.key, "namespace": self.namespace, "name": self.name,
                "generation": self.generation}

    def to_status(self) -> dict[str, Any]:
        """The report's entry: {namespace, name, generation} (the key is internal)."""
        return {"namespace": self.namespace, "name": self.name, "generation": self.generation}

    @classmethod
    def from_config(cls, raw: Any, where: str) -> RulesOrigin:
        """Parse one falconer.yaml entry; ValueError naming `where` when malformed."""
        ok = (isinstance(raw, dict) and all(isinstance(raw.get(k), str) for k in ("key", "namespace", "name"))
              and isinstance(raw.get("generation"), int) and not isinstance(raw.get("generation"), bool))
        if not ok:
            raise ValueError(f"{where}: expected {{key, namespace, name: string, generation: integer}}, "
                             f"got {raw!r}")
        return cls(raw["key"], raw["namespace"], raw["name"], raw["generation"])


@dataclass(frozen=True)
class NodeReport:
    """One node's sensor, as it reports itself (`status.sensors.<node>`).

    `rules_hash` and `falco_rules` describe the rules the sensor has *loaded* (never the
    ones it was merely given); `loaded_at` is when (RFC 3339, UTC); `last_reload_error`
    is the last failed reload's reason ("" when the last attempt succeeded).
    `alerts_by_rule` holds at most MAX_RULES_REPORTED entries (the most frequent);
    `alerts_total` counts them all. `drops` counts losses: "kernel" (ring buffer and
    in-flight records) and one entry per sink name.
    """

    rules_hash: str
    falco_rules: tuple[RulesOrigin, ...]
    loaded_at: str
    last_reload_error: str = ""
    reported_at: str = ""
    alerts_total: int = 0
    alerts_by_rule: Mapping[str, int] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        """The status entry (JSON-compatible)."""
        return {
            "rulesHash": self.rules_hash,
            "falcoRules": [o.to_status() for o in self.falco_rules],
            "loadedAt": self.loaded_at,
            "lastReloadError": self.last_reload_error,
            "reportedAt": self.reported_at,
            "alerts": {"total": self.alerts_total, "byRule": dict(self.alerts_by_rule)},
            "drops": dict(self.drops),
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> NodeReport:
        """Read an entry back (the operator's side); missing parts read as empty."""
        alerts = raw.get("alerts") or {}
        return cls(
            rules_hash=str(raw.get("rulesHash") or ""),
            falco_rules=tuple(RulesOrigin("", str(o.get("namespace", "")), str(o.get("name", "")),
                                          int(o.get("generation") or 0))
                              for o in raw.get("falcoRules") or () if isinstance(o, dict)),
            loaded_at=str(raw.get("loadedAt") or ""),
            last_reload_error=str(raw.get("lastReloadError") or ""),
            reported_at=str(raw.get("reportedAt") or ""),
            alerts_total=int(alerts.get("total") or 0),
            alerts_by_rule={str(k): int(v) for k, v in (alerts.get("byRule") or {}).items()},
            drops={str(k): int(v) for k, v in (raw.get("drops") or {}).items()},
        )


def status_patch(node: str, report: NodeReport) -> dict[str, Any]:
    """The JSON merge patch body that sets only this node's entry."""
    return {"status": {SENSORS_KEY: {node: report.to_status()}}}
