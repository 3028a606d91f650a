"""Diagnostics carry Falco's context chain (file, item, value, token) and the item index."""

from __future__ import annotations

from falconer.engine import Diagnostic, Engine, RulesSource

HEAD = """- list: l
  items: [a]
- macro: m
  condition: proc.name in (l)
"""


def _diag(body: str, errors: bool = True) -> Diagnostic:
    result = Engine().load([RulesSource("f.yaml", HEAD + body)])
    diags = result.errors if errors else result.warnings
    assert diags, result
    return diags[0]


def _chain(diag: Diagnostic) -> list[tuple[str, str, int, int]]:
    return [(loc.item_type, loc.item_name, loc.line, loc.column) for loc in diag.locations]


def test_condition_error_chain_ends_at_the_token() -> None:
    diag = _diag("- rule: r\n  desc: d\n  condition: evt.type = execve and m and\n"
                 "  output: o\n  priority: INFO\n")
    assert diag.item_index == 2
    assert _chain(diag) == [("rules content", "", 0, 0), ("rule", "r", 5, 3),
                            ("rule condition", "", 7, 14), ("condition expression", "", 7, 41)]
    assert diag.locations[-1].offset == len(HEAD) + len("- rule: r\n  desc: d\n") + 40
    assert diag.locations[-1].name == '"evt.type = execve..."'


def test_output_error_chain() -> None:
    diag = _diag("- rule: r\n  desc: d\n  condition: evt.type = execve and m\n"
                 "  output: x %proc.nope\n  priority: INFO\n")
    assert _chain(diag)[1:] == [("rule", "r", 5, 3), ("rule output", "", 8, 11),
                                ("rule output expression", "", 8, 13)]


def test_priority_error_chain() -> None:
    diag = _diag("- rule: r\n  desc: d\n  condition: evt.type = execve and m\n"
                 "  output: o\n  priority: LOUD\n")
    assert _chain(diag)[1:] == [("rule", "r", 5, 3), ("rule priority", "", 9, 13)]


def test_exception_error_chain() -> None:
    diag = _diag("- rule: r\n  desc: d\n  condition: evt.type = execve and m\n"
                 "  output: o\n  priority: INFO\n  exceptions:\n    - name: e\n"
                 "      fields: [proc.name, fd.name]\n      comps: [=]\n")
    assert _chain(diag)[1:] == [("rule", "r", 5, 3), ("exception", "e", 11, 7)]


def test_error_in_a_macro_used_by_a_rule_points_into_the_macro() -> None:
    diag = _diag("- macro: m2\n  condition: proc.name = x and\n- rule: r\n  desc: d\n"
                 "  condition: evt.type = execve and m and m2\n  output: o\n  priority: INFO\n")
    assert diag.item_index == 2
    assert _chain(diag)[1:] == [("macro", "m2", 5, 3), ("macro condition", "", 6, 14),
                                ("condition expression", "", 6, 31)]


def test_warnings_carry_the_item_and_the_value() -> None:
    diag = _diag("- rule: r\n  desc: d\n  condition: evt.type = execve and m\n"
                 "  output: o\n  priority: INFO\n  colour: red\n", errors=False)
    assert diag.code == "LOAD_UNKNOWN_KEY" and diag.item_index == 2
    assert _chain(diag) == [("rules content", "", 0, 0), ("rule", "r", 5, 3)]
    unused = Engine().load([RulesSource("f.yaml", HEAD)]).warnings
    assert [(d.code, d.item_index, _chain(d)[1]) for d in unused] == [
        ("LOAD_UNUSED_MACRO", 1, ("macro", "m", 3, 3))]
