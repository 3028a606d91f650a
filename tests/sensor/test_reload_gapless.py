"""Hot reload, proved gapless on a real sensor: a steady stream of numbered actions runs
across a rules change that also changes the kernel-side syscall set, and every action
before and after the switch produces its alert; a broken edit keeps the old rules and
raises the internal alert."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sensor_kube_live import open_rule

#: The opens of sensor_kube_live.open_rule, and mkdir of a watched folder: a syscall v1
#: does not forward.
OPEN_OR_MKDIR_RULE = """
- rule: {name}
  desc: opens of the watched files, or a watched folder made
  condition: >
    (evt.type in (open, openat) and fd.name startswith {prefix})
    or (evt.type = mkdir and evt.arg.path startswith {folder})
  output: "{name} opened %fd.name made %evt.arg.path"
  priority: WARNING
"""


def write(path: Path, text: str) -> None:
    """Replace the file atomically (as kubelet's ..data swap does), so no half file is read."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def stream(folder: Path, marker: str, stop: threading.Event, done: list[int]) -> None:
    """Open folder/<marker>_<n> for n = 0, 1, ... every 5 ms until stopped."""
    n = 0
    while not stop.is_set():
        with open(folder / f"{marker}_{n}", "w"):
            pass
        done.append(n)
        n += 1
        time.sleep(0.005)


def numbered(alerts: list[dict], marker: str) -> dict[int, str]:
    """Action number -> rule of its alert (Falco JSON alerts on the watched files)."""
    out: dict[int, str] = {}
    for a in alerts:
        name = str(a["output_fields"].get("fd.name", ""))
        if f"{marker}_" in name:
            out[int(name.rsplit("_", 1)[1])] = a["rule"]
    return out


def test_reload_switches_rules_and_syscalls_without_a_gap(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    prefix = str(tmp_path / marker)
    write(rules, open_rule("Watched open v1", prefix))
    sensor = start_sensor("--rules", str(rules))
    stop, done = threading.Event(), []
    worker = threading.Thread(target=stream, args=(tmp_path, marker, stop, done), daemon=True)
    worker.start()
    try:
        time.sleep(2.0)
        # v2 also watches mkdir, which neither v1 nor the state tracker needs: the kernel
        # must forward a new syscall from the switch on.
        write(rules, OPEN_OR_MKDIR_RULE.format(name="Watched open v2", prefix=prefix, folder=tmp_path / "d_"))
        assert sensor.wait_stderr("rules reloaded", timeout_s=15)
        (tmp_path / f"d_{marker}").mkdir()
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join()
    total = len(done)
    deadline = time.monotonic() + 15
    while len(numbered(sensor.alerts, marker)) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = numbered(sensor.alerts, marker)
    missing = sorted(set(range(total)) - set(seen))
    summary = sensor.stop() if missing else ""  # its losses, to tell a gap from a drop
    assert total > 500 and missing == [], (f"{len(missing)} of {total} actions without an alert: {missing[:20]}; "
                                           f"sensor summary:\n{summary}")
    # One switch: every action is v1 up to some number, v2 after it.
    rules_in_order = [seen[n] for n in range(total)]
    first_v2 = rules_in_order.index("Watched open v2")
    assert set(rules_in_order[:first_v2]) == {"Watched open v1"} and first_v2 > 100
    assert set(rules_in_order[first_v2:]) == {"Watched open v2"} and total - first_v2 > 100
    assert sensor.rules_for(f"d_{marker}") == {"Watched open v2"}


def test_broken_edit_keeps_the_old_rules_and_raises_the_internal_alert(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    prefix = str(tmp_path / f"k_{marker}")
    write(rules, open_rule("Kept rule", prefix))
    sensor = start_sensor("--rules", str(rules))
    write(rules, "- rule: [broken\n")
    assert sensor.wait_stderr("reload failed, keeping the previous rules")
    deadline = time.monotonic() + 10
    while not [a for a in sensor.alerts if a["rule"] == "Falco internal: rules reload failed"]:
        assert time.monotonic() < deadline, "no internal alert"
        time.sleep(0.1)
    (internal,) = [a for a in sensor.alerts if a["rule"] == "Falco internal: rules reload failed"]
    assert internal["source"] == "internal" and internal["priority"] == "Error"
    assert "rules.yaml" in internal["output_fields"]["reason"]
    with open(f"{prefix}_after", "w"):
        pass
    assert sensor.rules_for(f"k_{marker}_after") == {"Kept rule"}
