"""`falconer validate` and `falconer replay` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import upstream

BAD = """- rule: Broken
  desc: d
  condition: proc.name = bash and
  output: x
  priority: WARNING
"""


def _falconer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falconer", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONSAFEPATH": "1"}, cwd="/",
                          timeout=120)


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """A rules file whose one rule has a condition syntax error (line 3, column 34)."""
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_ok_prints_counts() -> None:
    proc = _falconer("validate", str(upstream.STABLE))
    assert proc.returncode == 0
    assert "25 rules, 87 macros, 49 lists" in proc.stdout


def test_validate_error_exit_code_and_position(bad: Path) -> None:
    proc = _falconer("validate", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:3:34: error LOAD_ERR_COMPILE_CONDITION" in proc.stdout
    assert "(rule 'Broken')" in proc.stdout


def test_validate_json_keys(bad: Path) -> None:
    proc = _falconer("validate", "--json", str(bad))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert set(doc) == {"rules", "macros", "lists", "errors", "warnings"}
    (err,) = doc["errors"]
    assert err["code"] == "LOAD_ERR_COMPILE_CONDITION"
    assert (err["line"], err["column"], err["item"], err["kind"]) == (3, 34, "Broken", "rule")


def test_replay_prints_alerts(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    match = {"source": "syscall", "time": "2026-11-25T10:00:00.000000001Z",
             "fields": {"evt.type": "openat", "evt.is_open_read": True, "fd.typechar": "f",
                        "fd.num": 3, "fd.name": "/etc/shadow", "proc.name": "cat",
                        "proc.exepath": "/usr/bin/cat", "proc.pname": "bash"}}
    miss = {"source": "syscall", "time": 1, "fields": {"evt.type": "openat",
                                                        "fd.name": "/tmp/x"}}
    events.write_text(json.dumps(match) + "\n" + json.dumps(miss) + "\nnot json\n")
    proc = _falconer("replay", "--rules", str(upstream.STABLE), "--json", str(events))
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    alert = json.loads(line)
    assert alert["rule"] == "Read sensitive file untrusted"
    assert alert["time"] == "2026-11-25T10:00:00.000000001Z"
    assert alert["priority"] == "Warning"
    assert alert["output_fields"]["fd.name"] == "/etc/shadow"
    assert "events.jsonl:3: skipped event" in proc.stderr
    text = _falconer("replay", "--rules", str(upstream.STABLE), str(events))
    assert text.stdout.startswith("10:00:00.000000001: Warning Sensitive file opened")


def test_replay_with_broken_rules_fails(bad: Path, tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("")
    proc = _falconer("replay", "--rules", str(bad), str(events))
    assert proc.returncode == 1
    assert "LOAD_ERR_COMPILE_CONDITION" in proc.stderr
