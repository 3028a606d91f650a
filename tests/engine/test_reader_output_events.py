"""Positions through every YAML scalar style, output formats, and replay events."""

from __future__ import annotations

import pytest

from falconer.engine import Engine, MappingEvent, RulesSource
from falconer.engine.events import parse_time
from falconer.engine.output import OutputFormatError, compile_output


def _first_error(cond_yaml: str) -> tuple[int, int, str]:
    text = f"- rule: r\n  desc: d\n  condition: {cond_yaml}\n  output: o\n  priority: INFO\n"
    result = Engine().load([RulesSource("t.yaml", text)])
    err = result.errors[0]
    return err.line, err.column, err.code


@pytest.mark.parametrize("cond_yaml,line,column", [
    ("evt.type = open and fd.nope = 1", 3, 34),
    ('"evt.type = open and fd.nope = 1"', 3, 35),
    ("'evt.type = open and fd.nope = 1'", 3, 35),
    (r'"proc.name = \"a b\" and fd.nope = 1"', 3, 39),  # escapes keep columns exact
    ("'proc.name = ''a b'' and fd.nope = 1'", 3, 39),
    (r'"proc.name = \x41 and fd.nope = 1"', 3, 36),
    (">\n    evt.type = open\n    and fd.nope = 1", 5, 9),
    ("|\n    evt.type = open\n      and fd.nope = 1", 5, 11),
    ("evt.type = open\n    and fd.nope = 1", 4, 9),
])
def test_condition_positions_in_every_scalar_style(cond_yaml: str, line: int,
                                                   column: int) -> None:
    assert _first_error(cond_yaml) == (line, column, "LOAD_ERR_COMPILE_CONDITION")


def test_unknown_event_type_is_an_error_unless_skipped() -> None:
    assert _first_error("evt.type = opne") == (3, 25, "LOAD_ERR_COMPILE_CONDITION")
    text = ("- rule: r\n  desc: d\n  condition: evt.type in (open, opne)\n  output: o\n"
            "  priority: INFO\n  skip-if-unknown-filter: true\n")
    result = Engine().load([RulesSource("t.yaml", text)])
    assert result.ok and [w.code for w in result.warnings] == ["LOAD_UNKNOWN_FILTER"]


def test_output_tokens() -> None:
    fmt = compile_output("a=%proc.name. b=%proc.aname[2] c=%5fd.num| %toupper(proc.name)x")
    event = MappingEvent({"proc.name": "x", "proc.aname[2]": "p"})
    line, fields = fmt.render(event)
    assert line == "a=x. b=p c=<NA> | Xx"
    assert fields == {"proc.name": "x", "proc.aname[2]": "p", "fd.num": None}


@pytest.mark.parametrize("bad", ["100%", "x %nosuch.field", "%", "%12"])
def test_bad_output_formats(bad: str) -> None:
    with pytest.raises(OutputFormatError):
        compile_output(bad)


def test_output_is_trimmed_and_container_info_deprecated() -> None:
    text = ("- rule: r\n  desc: d\n  condition: evt.type = open\n  output: >\n"
            "    opened %fd.name %container.info\n  priority: INFO\n")
    engine = Engine()
    result = engine.load([RulesSource("t.yaml", text)])
    assert [w.code for w in result.warnings] == ["LOAD_DEPRECATED_ITEM"]
    assert engine.ruleset is not None
    (alert,) = engine.ruleset.evaluate(MappingEvent({"evt.type": "open", "fd.name": "/a"}))
    assert alert.output == "opened /a "  # Falco replaces the token by "", blank kept


@pytest.mark.parametrize("value,ns", [
    (5, 5),
    ("1970-01-01T00:00:01Z", 1_000_000_000),
    ("1970-01-01T00:00:01.000000042Z", 1_000_000_042),
    ("1970-01-01T01:00:00.5+01:00", 500_000_000),
])
def test_event_times(value: object, ns: int) -> None:
    assert parse_time(value) == ns


@pytest.mark.parametrize("obj", [[], {"fields": []}, {"fields": {}, "time": "yesterday"},
                                 {"fields": {}}, {"fields": {}, "time": True}])
def test_bad_replay_lines(obj: object) -> None:
    with pytest.raises(ValueError):
        MappingEvent.from_json(obj)


def test_dotted_and_bracketed_arguments_are_the_same_field() -> None:
    ev = MappingEvent({"evt.arg[flags]": "O_RDONLY", "evt.arg.mode": "0644"})
    assert ev.get("evt.arg.flags") == "O_RDONLY"
    assert ev.get("evt.arg", "mode") == "0644"
