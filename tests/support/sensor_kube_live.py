"""Helpers for tests of a real sensor reporting to a real API server: its config
written as the operator renders it (and replaced the way a ConfigMap volume is), paced
file opens that fire its rule, and reading back its summary, FalcoAlerts and Events.
Used by tests/sensor/test_sensor_kube.py and the kill/outage matrix (tests/faults/).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from falconer.sensor import kube as sensor_kube
from falconer.sensor.sinks.events import NODE_EVENT_NAMESPACE, reason_for
from falconer.sensor.sinks.falcoalerts import alert_name


INSTANCE = "fi"
RULE = "Storm open"


def open_rule(rule: str, prefix: str, output_fields: str = "") -> str:
    """A rules file of one WARNING rule `rule` that fires on opens (open, openat) of files
    whose name starts with `prefix`; its output is "<rule> opened <file>", then
    `output_fields` (Falco output text such as "cmdline=%proc.cmdline") when given."""
    output = " ".join(part for part in (f"{rule} opened %fd.name", output_fields) if part)
    return f"""
- rule: {rule}
  desc: opens of the watched files
  condition: evt.type in (open, openat) and fd.name startswith {prefix}
  output: "{output}"
  priority: WARNING
"""


def write_config(folder: Path, namespace: str, prefix: str, rules_hash: str, rules: str | None = None) -> Path:
    """falconer.yaml and its rules file, replaced atomically like a ConfigMap volume."""
    folder.mkdir(exist_ok=True)
    config = {"rulesHash": rules_hash, "instance": {"namespace": namespace, "name": INSTANCE},
              "rulesFiles": ["rules.yaml"],
              "falcoRules": [{"key": "rules.yaml", "namespace": namespace, "name": "storm", "generation": 1}],
              "outputs": {"stdout": {"format": "json"}, "kubernetesEvents": True, "falcoAlerts": True,
                          "rateLimit": {"perSecond": 10, "burst": 100}}}
    for name, text in (("rules.yaml", rules if rules is not None else open_rule(RULE, prefix)),
                       ("falconer.yaml", yaml.safe_dump(config))):
        (folder / f".{name}").write_text(text)
        os.replace(folder / f".{name}", folder / name)
    return folder / "falconer.yaml"


def open_files(prefix: str, count: int, seconds: float) -> None:
    """Open prefix<n> for n < count, evenly paced over `seconds`."""
    start = time.monotonic()
    for n in range(count):
        delay = start + n * seconds / count - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with open(f"{prefix}{n}", "w"):
            pass


def summary_counts(stderr: str, sink: str) -> dict[str, int]:
    """The sensor's summary line for one sink, as numbers."""
    line = next(line for line in stderr.splitlines() if line.startswith(f"sink {sink}:"))
    return {k.replace(" ", "_"): int(v) for v, k in
            ((m.group(2), m.group(1)) for m in re.finditer(r"(offered|delivered|dropped|API requests|failed attempts) (\d+)",
                                                           line))}


def settled_count(sensor: Any, marker: str, quiet_s: float = 3.0, timeout_s: float = 40.0) -> int:
    """The number of stdout alerts for `marker` once no new one came for `quiet_s`."""
    deadline, last, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(sensor.matching(marker))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.2)
    return last


def memory_kb(pid: int, key: str) -> int:
    """VmRSS or VmHWM of a process, in kB (/proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def node_event(admin: sensor_kube.Kube, node: str, rule: str) -> dict[str, Any] | None:
    for e in admin.list(sensor_kube.events_path(NODE_EVENT_NAMESPACE)):
        if (e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) == ("Node", node, reason_for(rule)):
            return e
    return None


def falcoalert(admin: sensor_kube.Kube, namespace: str, rule: str, node: str) -> dict[str, Any] | None:
    try:
        return admin.get(sensor_kube.falcoalerts_path(namespace, alert_name(rule, "", "", node)))
    except sensor_kube.KubeRejected:
        return None
