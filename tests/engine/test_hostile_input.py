"""Issue 9 §7: the engine runs on attacker-controlled strings.

Regex, glob and pmatch matching is linear in the value (RE2), so a pathological value
cannot stall the sensor; text outputs escape control characters so that event data can
never forge an alert line (Falco 0.44, issue 3895), while JSON keeps decoded values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from falconer.engine import Engine, MappingEvent, RulesSource
from falconer.engine.output import escape_text

#: Generous bound for one evaluation on a loaded 2-core machine; Python's backtracking
#: `re` takes seconds to hours on these inputs.
BOUND_S = 0.5


def _rule(condition: str, output: str = "cmd=%proc.cmdline") -> Engine:
    engine = Engine()
    text = (f"- rule: R\n  desc: d\n  condition: {condition}\n  output: {json.dumps(output)}\n"
            "  priority: WARNING\n")
    result = engine.load([RulesSource("r.yaml", text)])
    assert result.ok, [d.human() for d in result.errors]
    return engine


def _timed_match(engine: Engine, fields: dict[str, object]) -> tuple[bool, float]:
    assert engine.ruleset is not None
    start = time.perf_counter()
    alerts = engine.ruleset.evaluate(MappingEvent(fields))
    return bool(alerts), time.perf_counter() - start


@pytest.mark.parametrize("condition,value,expected", [
    # The example: nested quantifiers, a value that almost matches.
    ('evt.type = execve and proc.cmdline regex "^echo (a+)+b$"',
     "echo " + "a" * 29 + "!", False),
    ('evt.type = execve and proc.cmdline regex "^echo (a+)+b$"',
     "echo " + "a" * 200_000 + "b", True),
    ('evt.type = execve and proc.cmdline regex "(a|aa)+c"', "a" * 100_000, False),
    ('evt.type = execve and proc.cmdline regex "(.*a){20}"', "a" * 5_000, True),
    ('evt.type = execve and proc.cmdline glob "*a*a*a*a*a*a*a*a*a*a*b"', "a" * 20_000, False),
    ('evt.type = execve and proc.cmdline iglob "*A*A*A*A*A*A*A*A*A*A*B"', "a" * 20_000, False),
    ('evt.type = execve and proc.cmdline pmatch (/a/*/*/*/*/*/x)', "/a" + "/a" * 50_000, False),
])
def test_pathological_values_are_matched_in_bounded_time(condition: str, value: str,
                                                         expected: bool) -> None:
    engine = _rule(condition)
    matched, elapsed = _timed_match(engine, {"evt.type": "execve", "proc.cmdline": value})
    assert matched is expected
    assert elapsed < BOUND_S, f"{elapsed:.3f}s"


def test_regex_keeps_re2_posix_semantics() -> None:
    """`.` does not match a newline, `^`/`$` also match at line breaks (RE2 POSIX without
    one_line), and the whole value must match."""
    engine = _rule('evt.type = execve and proc.cmdline regex "a.b"')
    assert not _timed_match(engine, {"evt.type": "execve", "proc.cmdline": "a\nb"})[0]
    assert _timed_match(engine, {"evt.type": "execve", "proc.cmdline": "axb"})[0]
    assert not _timed_match(engine, {"evt.type": "execve", "proc.cmdline": "xaxb"})[0]


def test_an_invalid_regex_is_rejected_with_re2s_message() -> None:
    engine = Engine()
    result = engine.load([RulesSource("r.yaml", (
        "- rule: R\n  desc: d\n  condition: evt.type = execve and proc.name regex \"\\\\d+\"\n"
        "  output: o\n  priority: INFO\n"))])
    (err,) = result.errors
    assert (err.code, err.message) == ("LOAD_ERR_COMPILE_CONDITION",
                                       "invalid regex pattern: invalid escape sequence: \\d")


FORGED = "x\n05:00:00.000000000: Informational FORGED all clear"


def _forging_alert() -> tuple[str, dict[str, object]]:
    engine = _rule("evt.type = openat and fd.name = /etc/shadow",
                   "read by %proc.cmdline name=%proc.name")
    assert engine.ruleset is not None
    (alert,) = engine.ruleset.evaluate(MappingEvent(
        {"evt.type": "openat", "fd.name": "/etc/shadow",
         "proc.cmdline": f'cat /etc/shadow {FORGED}', "proc.name": "\x1b[31mred\x1b[0m\r"},
        time_ns=1_700_000_000_000_000_000))
    return alert.text_line(), alert.to_json("h")


def test_text_line_escapes_newlines_and_ansi_sequences() -> None:
    line, _ = _forging_alert()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line == ("22:13:20.000000000: Warning read by cat /etc/shadow x\\n05:00:00.000000000:"
                    " Informational FORGED all clear name=\\u001b[31mred\\u001b[0m\\r")


def test_json_keeps_the_decoded_values() -> None:
    _, doc = _forging_alert()
    assert doc["output_fields"]["proc.cmdline"] == f"cat /etc/shadow {FORGED}"  # type: ignore[index]
    assert doc["output"].endswith("name=\x1b[31mred\x1b[0m\r")  # type: ignore[union-attr]
    line = json.dumps(doc)
    assert "\n" not in line and "\x1b" not in line  # JSON's encoding escapes them


@pytest.mark.parametrize("raw,escaped", [
    ('say "hi"', 'say \\"hi\\"'),
    ("back\\slash", "back\\\\slash"),
    ("tab\there", "tab\\there"),
    ("bell\x07", "bell\\u0007"),
    ("del\x7f", "del\x7f"),  # JSON does not escape DEL, nor does Falco
    ("caf\u00e9", "caf\u00e9"),  # non-ASCII stays as is (nlohmann, ensure_ascii off)
    ("bad\udcff", "bad\ufffd"),  # an undecodable byte becomes U+FFFD
])
def test_escape_text_is_json_string_escaping(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_replay_text_sink_writes_one_line_per_alert(tmp_path: Path) -> None:
    """`falconer replay` (a sink that writes lines): a forging value stays on its line."""
    rules = tmp_path / "r.yaml"
    rules.write_text("- rule: R\n  desc: d\n  condition: evt.type = openat\n"
                     "  output: \"cmd=%proc.cmdline\"\n  priority: WARNING\n")
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps({"time": 0, "fields": {
        "evt.type": "openat", "proc.cmdline": f"cat {FORGED}"}}) + "\n")
    for extra, check in (([], lambda out: out == [
            "00:00:00.000000000: Warning cmd=cat x\\n05:00:00.000000000: Informational FORGED"
            " all clear"]),
            (["--json"], lambda out: json.loads(out[0])["output_fields"]["proc.cmdline"]
             == f"cat {FORGED}")):
        proc = subprocess.run([sys.executable, "-m", "falconer", "replay", "--rules", str(rules),
                               *extra, str(events)], capture_output=True, text=True, cwd="/",
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert len(out) == 1 and check(out), out
