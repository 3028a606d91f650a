"""What a sensor tells its FalcoInstance, and where its rules came from: the typed
contract between the operator (which renders falconer.yaml and rolls the reports up)
and the sensor (which reads falconer.yaml and writes the reports).

- `RulesOrigin` (defined with falconer.yaml in `falconer.sensorconfig`): one rules file
  key of the ConfigMap and the FalcoRule (namespace, name, generation) its text came
  from; the report lists the ones loaded.
- `NodeReport`: what one node's sensor has actually loaded and seen, written by the
  sensor as a JSON merge patch to `FalcoInstance.status.sensors.<node>` (so each node
  touches only its own entry) and read back by the operator's roll-up.

This module imports nothing beyond the standard library and `falconer.sensorconfig`
(which sits below the sensor and the operator), so both sides can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from falconer.sensorconfig import RulesOrigin

#: The FalcoInstance status key holding one NodeReport per node name.
SENSORS_KEY = "sensors"
#: At most this many rules are listed in a report's `alerts.byRule` (the most frequent).
MAX_RULES_REPORTED = 50


def rule_key(tenant: str, rule: str) -> str:
    """How a rule is counted in `alerts.byRule`: its name, `<namespace>/<name>` for a
    tenant's rule (two tenants may each have a rule of the same name)."""
    return f"{tenant}/{rule}" if tenant else rule


@dataclass(frozen=True)
class NodeReport:
    """One node's sensor, as it reports itself (`status.sensors.<node>`).

    `rules_hash` and `falco_rules` describe the rules the sensor has *loaded* (never the
    ones it was merely given); `loaded_at` is when (RFC 3339, UTC); `started_at` is when
    this sensor process started (a restart shows as a newer `started_at`: the node was not
    watched between the previous `reported_at` and it); `last_reload_error`
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
    started_at: str = ""

    def to_status(self) -> dict[str, Any]:
        """The status entry (JSON-compatible)."""
        return {
            "rulesHash": self.rules_hash,
            "falcoRules": [o.to_status() for o in self.falco_rules],
            "loadedAt": self.loaded_at,
            "lastReloadError": self.last_reload_error,
            "reportedAt": self.reported_at,
            "startedAt": self.started_at,
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
            started_at=str(raw.get("startedAt") or ""),
            alerts_total=int(alerts.get("total") or 0),
            alerts_by_rule={str(k): int(v) for k, v in (alerts.get("byRule") or {}).items()},
            drops={str(k): int(v) for k, v in (raw.get("drops") or {}).items()},
        )


def status_patch(node: str, report: NodeReport) -> dict[str, Any]:
    """The JSON merge patch body that sets only this node's entry."""
    return {"status": {SENSORS_KEY: {node: report.to_status()}}}
