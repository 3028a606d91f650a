"""`falconer sensor` as users run it: hot reload, capture, drop accounting, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import prereq
import pytest
import upstream

from falconer.engine import Engine, MappingEvent

RULE = """
- rule: {name}
  desc: a test rule
  condition: evt.type = {evt} and {field} startswith {prefix}
  output: "{name} saw %{field} (command=%proc.cmdline)"
  priority: WARNING
"""


def write_rule(path: Path, name: str, evt: str, field: str, prefix: str) -> None:
    """Write a one-rule file, making sure the mtime moves even within one second."""
    old = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(RULE.format(name=name, evt=evt, field=field, prefix=prefix))
    os.utime(path, (old + 2, old + 2))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "falconer", "sensor", *args], text=True,
                          capture_output=True, timeout=120, cwd="/",
                          env=dict(os.environ, PYTHONSAFEPATH="1"))


def test_hot_reload_updates_rules_and_kernel_filter(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    write_rule(rules, "Opened marked file", "openat", "fd.name", str(tmp_path / "a_"))
    sensor = start_sensor("--rules", str(rules))
    (tmp_path / f"a_{marker}").write_text("x")
    assert sensor.rules_for(f"a_{marker}") == {"Opened marked file"}

    # mkdir is not needed by the first rules nor by the state tracker: it reaches user
    # space only if the reload also updated the kernel-side syscall filter.
    write_rule(rules, "Made marked dir", "mkdir", "evt.arg.path", str(tmp_path / "b_"))
    assert sensor.wait_stderr("rules reloaded")
    (tmp_path / f"b_{marker}").mkdir()
    assert sensor.rules_for(f"b_{marker}") == {"Made marked dir"}

    rules.write_text("- rule: [broken\n")
    os.utime(rules, (time.time() + 10, time.time() + 10))
    assert sensor.wait_stderr("reload failed, keeping the previous rules")
    (tmp_path / f"b_{marker}2").mkdir()
    assert sensor.rules_for(f"b_{marker}2") == {"Made marked dir"}

    sensor.proc.send_signal(signal.SIGHUP)  # a reload on request, same (broken) file
    time.sleep(1.5)
    assert sum("reload failed" in line for line in sensor.stderr) >= 2


def test_capture_replays_to_the_same_alert(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    write_rule(rules, "Opened marked file", "openat", "fd.name", str(tmp_path / "c_"))
    capture = tmp_path / "capture.jsonl"
    sensor = start_sensor("--rules", str(rules), "--capture", str(capture))
    (tmp_path / f"c_{marker}").write_text("x")
    assert sensor.rules_for(f"c_{marker}") == {"Opened marked file"}
    summary = sensor.stop()
    assert "alerts: 1" in summary
    lines = [json.loads(line) for line in capture.read_text().splitlines()]
    ours = [line for line in lines if marker in json.dumps(line)]
    assert ours and all(line["source"] == "syscall" for line in ours)
    engine = Engine()
    assert engine.load([rules]).ok
    replayed = [a.rule for line in ours for a in engine.ruleset.evaluate(MappingEvent.from_json(line))]
    assert replayed == ["Opened marked file"]


def test_drops_are_counted_and_alerted(start_sensor, tmp_path):
    rules = tmp_path / "rules.yaml"
    write_rule(rules, "Never", "openat", "fd.name", "/nonexistent/")
    sensor = start_sensor("--rules", str(rules), "--all-events", "--buffer-pages", "1")
    subprocess.run([sys.executable, "-c",
                    "import os\nfor _ in range(300000): os.getppid()"], check=True, cwd="/")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            a["rule"] == "Falco internal: syscall event drop" for a in sensor.alerts):
        time.sleep(0.1)
    drop = [a for a in sensor.alerts if a["rule"] == "Falco internal: syscall event drop"]
    assert drop, sensor.stderr
    assert drop[0]["source"] == "internal" and drop[0]["priority"] == "Debug"
    assert drop[0]["output_fields"]["n_drops"] > 0
    summary = sensor.stop()
    dropped = int(summary.split("dropped: ")[1].split()[0])
    assert dropped >= drop[0]["output_fields"]["n_drops"]


def test_bad_engine_option_is_a_clear_error():
    r = run_cli("-o", "colour=blue")
    assert r.returncode == 2
    assert "bad -o 'colour=blue'" in r.stderr


def test_rules_with_errors_stop_the_start(tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("- rule: x\n  condition: evt.type = open and\n")
    r = run_cli("--rules", str(rules))
    assert r.returncode == 2
    assert "rules have errors" in r.stderr and "bad.yaml:" in r.stderr


def test_buffer_pages_must_be_a_power_of_two(ebpf, tmp_path):
    rules = tmp_path / "rules.yaml"
    write_rule(rules, "Never", "openat", "fd.name", "/nonexistent/")
    r = run_cli("--rules", str(rules), "--buffer-pages", "3")
    assert r.returncode == 2
    assert "power of two" in r.stderr


def test_without_root_the_sensor_says_so(tmp_path):
    prereq.require(os.geteuid() == 0, "needs root to run the CLI as another user")
    readable = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c",
                               "import falconer.sensor.commands"], cwd="/", check=False,
                              env=dict(os.environ, PYTHONSAFEPATH="1"), capture_output=True)
    if readable.returncode != 0:
        pytest.skip("the checkout is not readable by user nobody")
    r = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-m", "falconer",
                        "sensor", "--rules", str(upstream.STABLE)], text=True,
                       capture_output=True, timeout=120, cwd="/",
                       env=dict(os.environ, PYTHONSAFEPATH="1"))
    assert r.returncode == 2
    assert "must run as root" in r.stderr


SELF_RULE = """
- rule: Sensor opened a file
  desc: fires only if the sensor's own syscalls leaked through the kernel-side pid filter
  condition: evt.type in (open, openat) and proc.pid = {pid}
  output: "sensor's own open of %fd.name"
  priority: WARNING
- rule: Marked exec
  desc: an exec for the sensor to look up in /proc (its own opens follow)
  condition: evt.type = execve and proc.cmdline contains {marker}
  output: "marked exec %proc.cmdline"
  priority: WARNING
"""


def test_the_sensor_does_not_see_itself(start_sensor, tmp_path, marker):
    rules = tmp_path / "rules.yaml"
    rules.write_text(SELF_RULE.format(pid=0, marker=marker))
    sensor = start_sensor("--rules", str(rules))
    rules.write_text(SELF_RULE.format(pid=sensor.proc.pid, marker=marker))
    os.utime(rules, (time.time() + 5, time.time() + 5))
    assert sensor.wait_stderr("rules reloaded")         # opens the rules file
    subprocess.run(["true", marker], check=True)       # the sensor reads /proc/<pid>/...
    assert sensor.rules_for(marker) == {"Marked exec"}
    sensor.proc.send_signal(signal.SIGHUP)              # opens the rules file again
    time.sleep(1.5)
    assert sum("rules reloaded" in line for line in sensor.stderr) == 2
    assert [a for a in sensor.alerts if a["rule"] == "Sensor opened a file"] == []
