"""Unit tests for the tricky parts: positions, collection, checks, index, alerts."""

from __future__ import annotations

import pytest

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource
from falconer.engine.evttypes import event_types
from falconer.engine.lexer import ConditionSyntaxError
from falconer.engine.parser import parse_condition


def _rule(name: str, cond: str, prio: str = "WARNING", extra: str = "") -> str:
    return (f"- rule: {name}\n  desc: d\n  condition: {cond}\n  output: \"{name} %proc.name\"\n"
            f"  priority: {prio}\n{extra}")


def _load(text: str, opts: EngineOptions | None = None) -> Engine:
    engine = Engine(opts)
    result = engine.load([RulesSource("t.yaml", text)])
    assert result.ok, [d.human() for d in result.errors]
    return engine


def _fire(engine: Engine, **fields: object) -> list[str]:
    assert engine.ruleset is not None
    return [a.rule for a in engine.ruleset.evaluate(MappingEvent(fields))]


# -- parser -------------------------------------------------------------------------------


def test_precedence_or_and_not() -> None:
    tree = parse_condition("a or not b and c")
    assert type(tree).__name__ == "Or"
    assert type(tree.children[1]).__name__ == "And"  # type: ignore[union-attr]


@pytest.mark.parametrize("text,value", [
    (r"'a\tb'", "a\tb"), (r'"q\"x"', 'q"x'), (r"'a\ b'", "a\\b"), (r"'a\/b'", "a/b"),
])
def test_escapes(text: str, value: str) -> None:
    tree = parse_condition(f"proc.name = {text}")
    assert tree.right.text == value  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [r"proc.name = 'a\qb'", r"proc.name = 'a\"b'", r"proc.name='\x4'"])
def test_bad_escapes_are_syntax_errors(bad: str) -> None:
    with pytest.raises(ConditionSyntaxError):
        parse_condition(bad)


def test_condition_error_points_into_literal_block() -> None:
    text = ("- macro: m\n  condition: |\n    proc.name = a\n    and (fd.name = b\n"
            "- rule: r\n  desc: d\n  condition: m\n  output: o\n  priority: INFO\n")
    result = Engine().load([RulesSource("t.yaml", text)])
    (err,) = result.errors
    assert err.code == "LOAD_ERR_COMPILE_CONDITION"
    assert (err.line, err.column) == (4, 21)  # just past the last token
    assert err.item_kind == "macro" and err.item_name == "m"


# -- loading -------------------------------------------------------------------------------


def test_yaml_parse_error_position() -> None:
    result = Engine().load([RulesSource("t.yaml", "- rule: [a\n- x: y\n")])
    (err,) = result.errors
    assert err.code == "LOAD_ERR_YAML_PARSE" and err.line == 2


def test_failed_load_keeps_last_good_ruleset() -> None:
    engine = _load(_rule("r", "evt.type = open"))
    first = engine.ruleset
    result = engine.load([RulesSource("t.yaml", _rule("r", "evt.type = "))])
    assert not result.ok and engine.ruleset is first


def test_redefinition_keeps_order_and_append_override() -> None:
    text = (_rule("a", "evt.type = open") + _rule("b", "evt.type = open")
            + _rule("a", "evt.type = open and proc.name = x")
            + "- rule: b\n  condition: and proc.name = y\n  override:\n    condition: append\n")
    engine = _load(text, EngineOptions(rule_matching="all"))
    assert _fire(engine, **{"evt.type": "open", "proc.name": "x"}) == ["a"]
    assert _fire(engine, **{"evt.type": "open", "proc.name": "y"}) == ["b"]
    assert [r.name for r in engine.ruleset.rules] == ["a", "b"]  # type: ignore[union-attr]


def test_override_key_mismatch_is_validate_error() -> None:
    text = _rule("a", "evt.type = open") + (
        "- rule: a\n  condition: and proc.name = y\n  desc: x\n  override:\n"
        "    condition: append\n")
    result = Engine().load([RulesSource("t.yaml", text)])
    assert [e.code for e in result.errors] == ["LOAD_ERR_YAML_VALIDATE"]


def test_undefined_macro_and_visibility() -> None:
    text = ("- macro: m1\n  condition: m2\n- macro: m2\n  condition: proc.name = x\n"
            + _rule("r", "evt.type = open and m1"))
    result = Engine().load([RulesSource("t.yaml", text)])
    (err,) = result.errors
    assert err.code == "LOAD_ERR_VALIDATE" and err.message == "Undefined macro 'm2' used in filter."
    assert result.warnings == []  # the compile stopped at its first error


def test_exceptions_both_forms() -> None:
    extra = ("  exceptions:\n"
             "    - name: pair\n      fields: [proc.name, fd.name]\n"
             "      values: [[cat, /etc/a], [vi, /etc/b]]\n"
             "    - name: single\n      fields: proc.pname\n      values: [sshd, \"a b\"]\n")
    engine = _load(_rule("r", "evt.type = open", extra=extra))
    base = {"evt.type": "open", "proc.pname": "bash"}
    assert _fire(engine, **base, **{"proc.name": "cat", "fd.name": "/etc/a"}) == []
    assert _fire(engine, **base, **{"proc.name": "cat", "fd.name": "/etc/b"}) == ["r"]
    assert _fire(engine, **{**base, "proc.pname": "a b"}, **{"proc.name": "x"}) == []


def test_unknown_field_and_skip_if_unknown_filter() -> None:
    bad = _rule("r", "evt.type = open and proc.nope = 1")
    result = Engine().load([RulesSource("t.yaml", bad)])
    assert [e.code for e in result.errors] == ["LOAD_ERR_COMPILE_CONDITION"]
    skipped = Engine().load([RulesSource("t.yaml", bad + "  skip-if-unknown-filter: true\n")])
    assert skipped.ok and [w.code for w in skipped.warnings] == ["LOAD_UNKNOWN_FILTER"]


def test_engine_version_and_plugins() -> None:
    newer = "- required_engine_version: 0.99.0\n"
    assert [e.code for e in Engine().load([RulesSource("t.yaml", newer)]).errors] == [
        "LOAD_ERR_VALIDATE"]
    plugins = ("- required_plugin_versions:\n  - name: container\n    version: 0.4.0\n"
               "  - name: k8saudit\n    version: 0.1.0\n")
    result = Engine().load([RulesSource("t.yaml", "- required_engine_version: 57\n" + plugins)])
    assert result.ok and [w.code for w in result.warnings] == ["LOAD_UNKNOWN_PLUGIN"]


# -- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cond,fields,expected", [
    ("fd.num >= 0", {"fd.num": 3}, True),
    ("fd.sport = http", {"fd.sport": 80}, True),  # port fields take service names
    ("proc.name != cat", {}, False),  # missing value: false, even for !=
    ("not proc.name = cat", {}, True),
    ("proc.name exists", {"proc.name": "x"}, True),
    ("fd.name pmatch (/usr/bin, /etc)", {"fd.name": "/usr/bin/ls"}, True),
    ("fd.name pmatch (/usr/bin)", {"fd.name": "/usr/binx"}, False),
    ("fd.name glob '/etc/*.conf'", {"fd.name": "/etc/a.conf"}, True),
    ("proc.name icontains BA", {"proc.name": "bash"}, True),
    ("proc.cmdline regex 'ba.h -c .*'", {"proc.cmdline": "bash -c id"}, True),
    ("fd.net = 10.0.0.0/8", {"fd.net": "10.1.2.3"}, True),
    ("fd.sip in (1.2.3.4, 5.6.7.8)", {"fd.sip": "5.6.7.8"}, True),
    ("proc.aname = sshd", {"proc.aname": ["bash", "sshd"]}, True),
    ("proc.aname[2] = sshd", {"proc.aname[2]": "sshd"}, True),
    ("evt.arg.flags contains O_TRUNC", {"evt.arg.flags": "O_WRONLY|O_TRUNC"}, True),
    ("tolower(proc.name) = bash", {"proc.name": "BASH"}, True),
    ("len(proc.name) > 3", {"proc.name": "bash"}, True),
    ("proc.name = val(proc.pname)", {"proc.name": "a", "proc.pname": "a"}, True),
    ("proc.name startswith oneof (ba, zs)", {"proc.name": "zsh"}, True),
])
def test_check_semantics(cond: str, fields: dict[str, object], expected: bool) -> None:
    engine = _load(_rule("r", f"evt.type = open and {cond}"))
    assert (_fire(engine, **{"evt.type": "open"}, **fields) == ["r"]) is expected


@pytest.mark.parametrize("cond", ["fd.num contains 1", "fd.num = abc", "fd.net = nope",
                                  "evt.is_open_read = maybe", "fd.num = 0x10",
                                  "fd.sport = nosuchservice"])
def test_bad_operator_or_value_for_type(cond: str) -> None:
    result = Engine().load([RulesSource("t.yaml", _rule("r", f"evt.type = open and {cond}"))])
    assert [e.code for e in result.errors] == ["LOAD_ERR_COMPILE_CONDITION"]


# -- index, selection, alerts -----------------------------------------------------------------


def test_event_types_analysis() -> None:
    def types(cond: str) -> tuple[frozenset[str], bool]:
        s = event_types(parse_condition(cond))
        return s.names, s.negated
    assert types("evt.type in (open, openat) and proc.name = x") == ({"open", "openat"}, False)
    assert types("not evt.type = open") == ({"open"}, True)
    assert types("evt.type = open or proc.name = x") == (frozenset(), True)
    assert types("evt.num = 0 and proc.name = x") == (frozenset(), False)
    assert types("not (evt.type != open or proc.name = x)") == ({"open"}, False)


def test_selection_priority_and_matching() -> None:
    text = (_rule("net one", "evt.type = connect", "ERROR", "  tags: [network]\n")
            + _rule("net two", "evt.type = connect", "DEBUG", "  tags: [network]\n")
            + _rule("other", "evt.type = open", "INFO"))
    all_ = _load(text, EngineOptions(rule_matching="all"))
    assert _fire(all_, **{"evt.type": "connect"}) == ["net one", "net two"]
    first = _load(text)
    assert _fire(first, **{"evt.type": "connect"}) == ["net one"]
    prio = _load(text, EngineOptions(min_priority="notice", rule_matching="all"))
    assert _fire(prio, **{"evt.type": "connect"}) == ["net one"]
    sel = _load(text, EngineOptions(selection=(("disable", "rule", "*"),
                                               ("enable", "tag", "network"),
                                               ("disable", "rule", "net o*"))))
    assert _fire(sel, **{"evt.type": "connect"}) == ["net two"]
    assert sel.ruleset is not None and sel.ruleset.event_types() == frozenset({"connect"})


def test_alert_json_shape() -> None:
    engine = _load(_rule("r", "evt.type = open", "INFO", "  tags: [b, a]\n"))
    assert engine.ruleset is not None
    (alert,) = engine.ruleset.evaluate(MappingEvent({"evt.type": "open"}, time_ns=1_500_000_000))
    doc = alert.to_json("node-1")
    assert doc == {"hostname": "node-1",
                   "output": "00:00:01.500000000: Informational r <NA>",
                   "output_fields": {"evt.time": 1_500_000_000, "proc.name": None},
                   "priority": "Informational", "rule": "r", "source": "syscall",
                   "tags": ["a", "b"], "time": "1970-01-01T00:00:01.500000000Z"}
    assert alert.text_line() == "00:00:01.500000000: Informational r <NA>"


def test_error_inside_a_macro_points_into_the_macro() -> None:
    text = ("- macro: m\n  condition: proc.name = x and fd.nope = 1\n"
            + _rule("r", "evt.type = open and m"))
    (err,) = Engine().load([RulesSource("t.yaml", text)]).errors
    assert (err.line, err.column, err.item_kind, err.item_name) == (2, 32, "rule", "r")


def test_unused_macro_is_not_compiled() -> None:
    """As in Falco, fields are checked when a rule uses the macro, not before."""
    text = "- macro: m\n  condition: fd.nope = 1\n" + _rule("r", "evt.type = open")
    result = Engine().load([RulesSource("t.yaml", text)])
    assert result.ok and [w.code for w in result.warnings] == ["LOAD_UNUSED_MACRO"]


@pytest.mark.parametrize("ip,expected", [("10.1.2.3", True), ("::a01:203", False),
                                         ("11.0.0.1", False), ("garbage", False)])
def test_networks_never_mix_ip_versions(ip: str, expected: bool) -> None:
    engine = _load(_rule("r", "evt.type = connect and fd.snet in (10.0.0.0/8, fd00::/8)"))
    assert (_fire(engine, **{"evt.type": "connect", "fd.snet": ip}) == ["r"]) is expected


@pytest.mark.parametrize("fields,expected", [
    ({"proc.name": "b"}, True), ({"proc.name": "c"}, False),
    ({"fd.name": "/y/z"}, True), ({"fd.name": "/z"}, False),
    ({"proc.name": ["x", "a"]}, True), ({"proc.pname": "p"}, True), ({}, False),
])
def test_merged_alternatives_keep_their_meaning(fields: dict[str, object],
                                                expected: bool) -> None:
    cond = ("evt.type = open and (proc.name = a or fd.name startswith /x or proc.name = b"
            " or fd.name startswith /y/ or proc.pname = p)")
    engine = _load(_rule("r", cond))
    assert (_fire(engine, **{"evt.type": "open"}, **fields) == ["r"]) is expected


@pytest.mark.parametrize("cond", ["tolower(proc.aname) = bash", "proc.name = val(fd.ip)",
                                  "evt.outputtime = x"])
def test_field_flags_restrict_use(cond: str) -> None:
    result = Engine().load([RulesSource("t.yaml", _rule("r", f"evt.type = open and {cond}"))])
    assert [e.code for e in result.errors] == ["LOAD_ERR_COMPILE_CONDITION"]


def test_filter_only_field_in_output_is_an_error() -> None:
    text = _rule("r", "evt.type = connect").replace('"r %proc.name"', '"%fd.net"')
    result = Engine().load([RulesSource("t.yaml", text)])
    assert [e.code for e in result.errors] == ["LOAD_ERR_COMPILE_OUTPUT"]


def test_append_false_is_a_plain_definition_without_warning() -> None:
    text = "- list: l\n  items: [a]\n  append: false\n" + _rule("r", "evt.type = open and "
                                                                 "proc.name in (l)")
    result = Engine().load([RulesSource("t.yaml", text)])
    assert result.ok and result.warnings == []
