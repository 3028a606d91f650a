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
    assert err["item_index"] == 0
    assert [loc["item_type"] for loc in err["locations"]] == [
        "rules content", "rule", "rule condition", "condition expression"]


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


ISSUE_EXAMPLE = """- macro: a
  condition: evt.type = openat and b
- macro: b
  condition: fd.name = /etc/shadow
- rule: r
  desc: d
  condition: a
  output: o
  priority: INFO
"""
WARNS = """- rule: w
  desc: d
  condition: evt.type = execve and proc.name = proc.pname
  output: o
  priority: INFO
  colour: red
"""
LOCATION_KEYS = {"item_type", "item_name", "position"}
POSITION_KEYS = {"name", "line", "column", "offset"}
DIAG_KEYS = {"context", "code", "codedesc", "message"}


def _falco_json(*files: Path) -> tuple[int, list[dict[str, object]]]:
    proc = _falconer("validate", "--format", "falco-json", *map(str, files))
    doc = json.loads(proc.stdout)  # one JSON document on stdout, as `falco -V` prints
    assert set(doc) == {"falco_load_results"}
    return proc.returncode, doc["falco_load_results"]


def _check_shape(diag: dict[str, object]) -> list[dict[str, object]]:
    """Every key Falco's as_json writes, with its type; returns the locations."""
    assert set(diag) == DIAG_KEYS
    assert all(isinstance(diag[k], str) and diag[k] for k in ("code", "codedesc", "message"))
    context = diag["context"]
    assert isinstance(context, dict) and set(context) == {"locations", "snippet"}
    assert isinstance(context["snippet"], str) and context["snippet"].endswith("\n")
    locations = context["locations"]
    assert isinstance(locations, list) and locations
    for loc in locations:
        assert set(loc) == LOCATION_KEYS
        assert set(loc["position"]) == POSITION_KEYS
        assert all(isinstance(loc["position"][k], int) for k in ("line", "column", "offset"))
    return locations


def test_validate_falco_json_on_an_invalid_file(tmp_path: Path) -> None:
    bad, warns = tmp_path / "bad.yaml", tmp_path / "warns.yaml"
    bad.write_text(ISSUE_EXAMPLE)
    warns.write_text(WARNS)
    code, results = _falco_json(warns, bad)
    assert code == 1
    assert [(r["name"], r["successful"]) for r in results] == [(str(warns), True),
                                                                (str(bad), False)]
    for result in results:
        assert set(result) == {"name", "successful", "errors", "warnings"}
    (err,) = results[1]["errors"]  # type: ignore[misc]
    assert results[1]["warnings"] == []  # the compile stopped at its first error
    locations = _check_shape(err)
    assert (err["code"], err["message"]) == ("LOAD_ERR_VALIDATE",
                                             "Undefined macro 'b' used in filter.")
    # From the file down to the token; YAML positions 0-based as yaml-cpp's marks, the
    # condition expression as Falco adds the parser's 1-based position to them.
    assert [(loc["item_type"], loc["item_name"], loc["position"]) for loc in locations] == [
        ("rules content", "", {"name": str(bad), "line": 0, "column": 0, "offset": 0}),
        ("macro", "a", {"name": str(bad), "line": 0, "column": 2, "offset": 2}),
        ("macro condition", "", {"name": str(bad), "line": 1, "column": 13, "offset": 24}),
        ("condition expression", "", {"name": '"evt.type = openat..."', "line": 2,
                                      "column": 36, "offset": 46}),
    ]
    assert err["context"]["snippet"].splitlines()[1].index("^") == 35  # type: ignore[index]
    codes = sorted(w["code"] for w in results[0]["warnings"])  # type: ignore[union-attr]
    assert codes == ["LOAD_COMPILE_CONDITION", "LOAD_UNKNOWN_KEY"]
    for warning in results[0]["warnings"]:  # type: ignore[union-attr]
        _check_shape(warning)


def test_validate_falco_json_on_a_good_file() -> None:
    code, results = _falco_json(upstream.STABLE)
    assert code == 0
    assert results == [{"name": str(upstream.STABLE), "successful": True, "errors": [],
                        "warnings": []}]
