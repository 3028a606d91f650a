"""FalcoRule compilation: engine diagnostics land on the item and field the user wrote."""

from __future__ import annotations

from typing import Any

import pytest

from falconer.operator import rules
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import FalcoRuleSpec, parse_rule
from falconer.shapes import ShapeError

BAD = {"items": [
    {"macro": "m", "condition": "proc.name = x and\n  (fd.name = y"},
    {"rule": "r", "desc": "d", "condition": "evt.type = open and m", "output": "o %proc.nope",
     "priority": "Warning"},
]}


def parsed(raw: Any) -> FalcoRuleSpec | ShapeError:
    """The spec as the reconciler hands it on: parsed, or the reason it does not parse."""
    try:
        return parse_rule(raw)
    except ShapeError as exc:
        return exc


def render_text(name: str, raw: dict[str, Any]) -> RuleText:
    return rules.render_text(name, parse_rule(raw))


def finding(compiled: rules.Compiled, path: str) -> rules.Finding:
    return next(f for f in compiled.errors if f.path == path)


def test_condition_error_points_inside_the_condition() -> None:
    _, compiled = rules.compile_falcorule("bad", parsed(BAD))
    assert not compiled.valid
    f = finding(compiled, "spec.items[0].condition")
    assert (f.code, f.line, f.item_index, f.item_kind, f.item_name) == (
        "LOAD_ERR_COMPILE_CONDITION", 2, 0, "macro", "m")
    assert f.column == len("  (fd.name = y") + 1  # the missing ")" is expected at the end
    assert f.to_status()["item"] == {"index": 0, "kind": "macro", "name": "m"}


def test_context_chain_places_a_condition_token_inside_a_multiline_field() -> None:
    spec = {"items": [{"list": "l", "items": ["a"]},
                      {"rule": "r", "desc": "d", "priority": "Warning", "output": "o",
                       "condition": "evt.type = open\n  and proc.name in (l)\n  and nope"}]}
    _, compiled = rules.compile_falcorule("bad", parsed(spec))
    (f,) = compiled.errors
    assert (f.code, f.path, f.line, f.column) == ("LOAD_ERR_VALIDATE", "spec.items[1].condition", 3, 7)
    assert f.snippet == "  and nope\n      ^"


def test_output_error_points_at_the_field() -> None:
    # The engine's compile stops at its first error (as Falco's): fix the macro first.
    spec = {"items": [{"macro": "m", "condition": "proc.name = x"}, BAD["items"][1]]}
    _, compiled = rules.compile_falcorule("bad", parsed(spec))
    f = finding(compiled, "spec.items[1].output")
    assert (f.code, f.line, f.column) == ("LOAD_ERR_COMPILE_OUTPUT", 1, 3)
    assert "bad spec.items[1].output:1:3: LOAD_ERR_COMPILE_OUTPUT" in f.text()


def test_valid_rule_counts() -> None:
    spec = {"items": [{"macro": "m", "condition": "proc.name = x"},
                      {"rule": "r", "desc": "d", "condition": "evt.type = open and m", "output": "o",
                       "priority": "Warning"}]}
    text, compiled = rules.compile_falcorule("ok", parsed(spec))
    assert compiled.valid and compiled.counts == {"rules": 1, "macros": 1, "lists": 0}
    assert text is not None and "condition: |-" in text.text


@pytest.mark.parametrize("spec", [None, [], {"items": "x"}, {"items": [1]}, {}])
def test_shapes_the_schema_should_refuse_are_errors_not_crashes(spec: Any) -> None:
    text, compiled = rules.compile_falcorule("odd", parsed(spec))
    assert text is None and not compiled.valid
    assert compiled.errors[0].code == "LOAD_ERR_YAML_VALIDATE"


def test_errors_across_files_name_their_falcorule() -> None:
    base = render_text("a-base", {"items": [{"macro": "m", "condition": "proc.name = x"}]})
    extra = render_text("b-extra", {"items": [{"rule": "r", "condition": "m and nope", "output": "o",
                                                     "desc": "d", "priority": "Notice"}]})
    compiled = rules.compile_texts([base, extra])
    assert compiled.errors and all(f.falco_rule == "b-extra" for f in compiled.errors)
    assert compiled.errors[0].path == "spec.items[0].condition"


def test_redefinitions_across_falcorules() -> None:
    a = render_text("a", {"items": [{"rule": "R", "condition": "x", "output": "o", "desc": "d",
                                           "priority": "Notice"}]})
    b = render_text("b", {"items": [{"rule": "R", "condition": "y", "output": "o", "desc": "d",
                                           "priority": "Notice"},
                                          {"rule": "R", "condition": "and z", "override": {"condition": "append"}}]})
    (message,) = rules.redefinitions([("a", a), ("b", b)])
    assert "'R'" in message and "a and b" in message
    assert rules.redefinitions([("a", a)]) == []


@pytest.mark.parametrize("text", ["- rule: [unclosed\n", "42\n", "a: mapping\n", ""])
def test_redefinitions_ignore_text_that_is_not_a_list_of_items(text: str) -> None:
    """A ConfigMap's last valid text can be edited by hand: it must not fail the reconcile."""
    assert rules.redefinitions([("edited", RuleText("edited", text))]) == []
