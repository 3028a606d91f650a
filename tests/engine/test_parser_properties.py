"""The condition parser raises nothing but its positioned syntax error, on any input."""

from __future__ import annotations

from functools import cache

import upstream
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falconer.engine import Engine, RulesSource, ast
from falconer.engine.diagnostics import ERROR_CODES
from falconer.engine.lexer import ConditionSyntaxError
from falconer.engine.parser import parse_condition


@cache
def _upstream_conditions() -> list[str]:
    out = []
    for path in upstream.upstream_files():
        for item in yaml.safe_load(path.read_text()):
            if isinstance(item, dict) and isinstance(item.get("condition"), str):
                out.append(item["condition"])
    return out


_ALPHABET = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz._[]()'\" \\,=!<>0123456789\n\tx/*-")
                            + ["and ", "or ", "not ", "in ", "proc.name", "evt.type", " = ",
                               "(", ")", "contains ", "exists", "val(", "tolower(", "pmatch ",
                               "startswith oneof ", "\\x4", "\\'", '\\"'])


def _parse_or_positioned_error(text: str) -> None:
    try:
        tree = parse_condition(text)
    except ConditionSyntaxError as exc:
        assert 0 <= exc.offset <= len(text)
        assert exc.message
        return
    assert isinstance(tree, (ast.And, ast.Or, ast.Not, ast.Identifier, ast.BinaryCheck,
                             ast.UnaryCheck))


@given(st.lists(_ALPHABET, max_size=40).map("".join))
@settings(max_examples=600, deadline=None)
def test_random_conditions(text: str) -> None:
    _parse_or_positioned_error(text)


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_arbitrary_unicode(text: str) -> None:
    _parse_or_positioned_error(text)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_upstream_conditions()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        piece = draw(st.lists(_ALPHABET, max_size=3).map("".join))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + piece + text[i:]
        elif kind == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:i]
    return text


@given(_mutated())
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_upstream_conditions(text: str) -> None:
    _parse_or_positioned_error(text)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "(" * 5000 + "a" + ")" * 5000
    try:
        parse_condition(text)
    except ConditionSyntaxError as exc:
        assert "depth" in exc.message
    else:
        raise AssertionError("5000 nested parentheses must exceed the depth limit")


def test_every_upstream_condition_parses() -> None:
    for cond in _upstream_conditions():
        parse_condition(cond)


def _rules_text(condition: str) -> str:
    body = "\n".join("    " + line for line in condition.splitlines() or [""])
    return ("- list: shell_binaries\n  items: [bash, sh]\n"
            "- macro: spawned_process\n  condition: evt.type = execve\n"
            "- macro: open_read\n  condition: evt.type in (open, openat)\n"
            f"- rule: R\n  desc: d\n  condition: |\n{body}\n  output: o %proc.name\n"
            "  priority: WARNING\n")


@given(_mutated())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_loading_mutated_conditions_only_reports(condition: str) -> None:
    """The whole load (parse, macros, fields, values) reports problems, never raises."""
    result = Engine().load([RulesSource("t.yaml", _rules_text(condition))])
    for diag in result.errors:
        assert diag.code in ERROR_CODES and diag.line >= 1 and diag.column >= 1


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_loading_arbitrary_text_only_reports(text: str) -> None:
    result = Engine().load([RulesSource("t.yaml", text)])
    assert all(d.code in ERROR_CODES for d in result.errors)


_SAMPLE = """- required_engine_version: 0.57.0
- required_plugin_versions:
    - name: container
      version: 0.4.0
- list: shells
  items: [bash, sh, "a b"]
- macro: spawned
  condition: evt.type in (execve, execveat) and evt.res = SUCCESS
- rule: Shell
  desc: a shell
  condition: >
    spawned and proc.name in (shells)
    and not proc.pname startswith sshd
  output: "shell %proc.name (%proc.aname[2]) %evt.arg.flags"
  priority: WARNING
  tags: [shell, T1059]
  exceptions:
    - name: known
      fields: [proc.name, proc.pname]
      comps: [=, in]
      values: [[bash, [cron, systemd]]]
- rule: Shell
  condition: and user.uid != 0
  override:
    condition: append
- macro: spawned
  condition: or evt.type = vfork
  append: true
- rule: Shell
  enabled: false
"""


@st.composite
def _mutated_file(draw: st.DrawFn) -> str:
    lines = _SAMPLE.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "swap", "cut"]))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "indent":
            lines[i] = "  " + lines[i]
        elif kind == "dedent":
            lines[i] = lines[i][2:]
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        if not lines:
            break
    return "\n".join(lines) + "\n"


def test_the_sample_file_is_valid() -> None:
    result = Engine().load([RulesSource("t.yaml", _SAMPLE)])
    assert result.ok and result.counts == {"rules": 1, "macros": 1, "lists": 1}


@given(_mutated_file())
@settings(max_examples=300, deadline=None)
def test_mutated_rules_files_only_report(text: str) -> None:
    """Broken structure (keys, indentation, items) is reported, never raised."""
    result = Engine().load([RulesSource("t.yaml", text)])
    for diag in [*result.errors, *result.warnings]:
        assert diag.line >= 1 and diag.column >= 1, diag
