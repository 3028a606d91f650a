"""An alert that cannot be written (closed or broken stdout) is counted, never lost
silently, and the sensor keeps going."""

from __future__ import annotations

import io
from pathlib import Path

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource
from falconer.sensor.config import RulesInput
from falconer.sensor.runner import Sensor, SensorOptions

RULE = """
- rule: Shadow read
  desc: d
  condition: evt.type = openat and fd.name = /etc/shadow
  output: "read %fd.name"
  priority: WARNING
"""


def _alert():
    engine = Engine(EngineOptions())
    assert engine.load([RulesSource(name="r.yaml", text=RULE)]).ok
    event = MappingEvent.from_json({"source": "syscall", "time": 1,
                                    "fields": {"evt.type": "openat", "fd.name": "/etc/shadow"}})
    (alert,) = engine.ruleset.evaluate(event)
    return alert


def test_unwritable_stdout_counts_lost_alerts(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    sensor = Sensor(SensorOptions(rules=RulesInput(rules=[tmp_path / "unused.yaml"])), out=out, err=err)
    out.close()
    sensor.emit(_alert())
    sensor.emit(_alert())
    assert sensor.stdout.stats().dropped == 2
    assert sensor.stats.alerts["Shadow read"] == 2
    assert "alerts not written (stdout failed): 2" in sensor.summary()
    assert err.getvalue().count("alert not written to stdout") == 1
