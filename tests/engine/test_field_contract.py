"""The field contract between the engine and an event source (`answered_fields`), and
the listing of the fields a loaded ruleset uses."""

from __future__ import annotations

import upstream

from falconer.engine import Engine, EngineOptions, RulesSource
from falconer.engine.fieldrefs import ENGINE_COMPUTED_FIELDS
from falconer.engine.fields import FIELDS

RULES = """\
- macro: shell
  condition: proc.name in (bash, sh)
- rule: R
  desc: d
  condition: evt.type = execve and shell and proc.aname[2] = sshd
  output: "%user.name ran %toupper(fd.name) at %evt.time"
  priority: WARNING
  exceptions:
    - name: mounts
      fields: ["container.mount.dest[/etc]", proc.pname]
      values: [[/x, y]]
"""
USED = {"evt.type", "proc.name", "proc.aname", "user.name", "fd.name", "evt.time",
        "container.mount.dest", "proc.pname"}


def _load(answered: frozenset[str] | None, text: str = RULES) -> tuple[Engine, object]:
    engine = Engine(EngineOptions(answered_fields=answered))
    return engine, engine.load([RulesSource("r.yaml", text)])


def test_fields_lists_base_names_from_condition_macros_exceptions_and_output() -> None:
    engine, result = _load(None)
    assert engine.ruleset is not None
    assert engine.ruleset.fields() == USED


def test_no_check_without_answered_fields() -> None:
    _, result = _load(None)
    assert result.warnings == []  # type: ignore[attr-defined]


def test_every_unanswered_field_warns_once_at_its_token() -> None:
    answered = frozenset({"evt.type", "proc.name", "user.name"})
    engine, result = _load(answered)
    assert result.ok  # type: ignore[attr-defined]
    assert engine.ruleset is not None and len(engine.ruleset) == 1  # the rule still loads
    warned = {d.message.split("'")[1]: d for d in result.warnings}  # type: ignore[attr-defined]
    # evt.time is computed by the engine itself: never unanswered.
    assert set(warned) == {"proc.aname", "fd.name", "container.mount.dest", "proc.pname"}
    assert all(d.code == "LOAD_UNANSWERED_FIELD" and d.item_name == "R"
               for d in warned.values())
    aname = warned["proc.aname"]
    assert (aname.file, aname.line, aname.column) == ("r.yaml", 5, 46)
    fd = warned["fd.name"]  # inside a transformer in the output
    assert (fd.line, fd.column) == (6, 36)
    # exception fields are reported at the exception
    assert (warned["proc.pname"].line, warned["proc.pname"].column) == (9, 7)


def test_field_used_through_a_macro_is_reported_in_the_macro() -> None:
    answered = frozenset(FIELDS) - {"proc.name"}
    _, result = _load(answered)
    (diag,) = result.warnings  # type: ignore[attr-defined]
    assert (diag.line, diag.column) == (2, 14)
    assert diag.snippet.splitlines()[0].endswith("condition: proc.name in (bash, sh)")


def test_evt_arg_is_matched_by_its_base_name() -> None:
    text = RULES.replace("proc.aname[2] = sshd", "evt.arg.flags contains O_RDWR")
    engine, result = _load(frozenset(FIELDS) - {"evt.arg"}, text)
    assert [d.message for d in result.warnings] == [  # type: ignore[attr-defined]
        "field 'evt.arg' is not answered by the event source: it always reads as missing"]
    assert engine.ruleset is not None and "evt.arg" in engine.ruleset.fields()


def test_fields_of_enabled_rules_only() -> None:
    text = RULES + """\
- rule: Off
  desc: d
  condition: evt.type = openat and fd.sip.name = x
  output: o
  priority: INFO
  enabled: false
"""
    engine, _ = _load(None, text)
    assert engine.ruleset is not None
    assert "fd.sip.name" in engine.ruleset.fields()
    assert "fd.sip.name" not in engine.ruleset.fields(enabled_only=True)


def test_upstream_files_fields_are_all_registry_fields() -> None:
    """Walk the three upstream files: every field used is a registry base name, and with
    every registry field answered there is nothing to warn about."""
    engine = Engine(EngineOptions(answered_fields=frozenset(FIELDS) - ENGINE_COMPUTED_FIELDS))
    result = engine.load(upstream.upstream_files())
    assert result.ok and result.warnings == []
    assert engine.ruleset is not None
    used = engine.ruleset.fields()
    assert used <= set(FIELDS)
    assert {"proc.aname", "fd.name", "evt.arg", "container.mount.dest", "proc.cmdline",
            "container.image.repository"} <= used
    assert len(used) > 60


def test_upstream_files_with_a_narrow_source_warn_but_load() -> None:
    engine = Engine(EngineOptions(answered_fields=frozenset({"evt.type", "proc.name"})))
    result = engine.load(upstream.upstream_files())
    assert result.ok and result.counts["rules"] == 93
    assert {d.code for d in result.warnings} == {"LOAD_UNANSWERED_FIELD"}
    assert all(d.line > 0 and d.column > 0 for d in result.warnings)
