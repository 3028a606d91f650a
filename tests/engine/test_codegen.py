"""The generated rule functions (falconer.engine.codegen): used, equal to the closures,
remembering shared macros once per event, and falling back to closures where Python
cannot compile a condition as one expression. (The index property test compares the
bucket path, generated functions included, with the closures on random rulesets.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource

GENERATED = "<falconer rules>"


def _chain(depth: int) -> str:
    """Macros m0..m{depth-1}, each nesting the one before under the other operator (so
    nothing flattens), and a rule on the last: true when proc.name is some x<i>."""
    items = ["- macro: m0\n  condition: proc.name = x0\n"]
    for i in range(1, depth):
        body = f"proc.name = x{i} or m{i - 1}" if i % 2 else f"proc.pname != y{i} and m{i - 1}"
        items.append(f"- macro: m{i}\n  condition: {body}\n")
    items.append(f"- rule: deep\n  desc: d\n  condition: evt.type = openat and m{depth - 1}\n"
                 "  output: o\n  priority: WARNING\n")
    return "".join(items)


def _engine(text: str, **options: Any) -> Engine:
    engine = Engine(EngineOptions(**options))
    result = engine.load([RulesSource("t.yaml", text)])
    assert result.ok, result.errors
    return engine


def _check_of(engine: Engine, event: MappingEvent, rule: str) -> Callable[[Any], bool]:
    assert engine.ruleset is not None
    return next(c for r, c in engine.ruleset.bucket(event).entries if r.name == rule)


def test_a_rule_runs_as_one_generated_function_equal_to_its_closure() -> None:
    engine = _engine(_chain(20))
    assert engine.ruleset is not None
    for name in ("x0", "x7", "x19", "other"):
        event = MappingEvent({"evt.type": "openat", "proc.name": name, "proc.pname": "p"})
        assert _check_of(engine, event, "deep").__code__.co_filename == GENERATED
        fired = [a.rule for a in engine.ruleset.evaluate(event)]
        assert fired == [a.rule for a in engine.ruleset.evaluate_unindexed(event)]
        assert fired == ([] if name == "other" else ["deep"])
    assert engine.ruleset.errors == 0


def test_a_condition_too_deep_for_one_expression_keeps_its_closure() -> None:
    # 300 alternating levels: beyond the 200 nested parentheses Python's parser takes.
    engine = _engine(_chain(300))
    assert engine.ruleset is not None
    event = MappingEvent({"evt.type": "openat", "proc.name": "x0", "proc.pname": "p"})
    assert _check_of(engine, event, "deep").__code__.co_filename != GENERATED
    assert [a.rule for a in engine.ruleset.evaluate(event)] == ["deep"]
    miss = MappingEvent({"evt.type": "openat", "proc.name": "nope", "proc.pname": "p"})
    assert engine.ruleset.evaluate(miss) == []
    assert engine.ruleset.errors == 0


class _Counting(MappingEvent):
    """A MappingEvent whose bound field reads are counted (per field name)."""

    reads: ClassVar[Counter[str]] = Counter()

    @classmethod
    def accessor(cls, field: str, arg: str | None) -> Callable[[Any], object] | None:
        base = super().accessor(field, arg)
        if base is None:
            return None

        def read(ev: Any) -> object:
            cls.reads[field] += 1
            return base(ev)
        return read


SHARED = """
- macro: from_shell
  condition: (proc.pname = bash and proc.cmdline contains "-i")
- rule: a
  desc: a
  condition: evt.type = openat and from_shell and fd.name = /etc/a
  output: a
  priority: WARNING
- rule: b
  desc: b
  condition: evt.type = openat and from_shell and fd.name = /etc/b
  output: b
  priority: WARNING
- rule: c
  desc: c
  condition: evt.type = openat and fd.name = /etc/c and from_shell
  output: c
  priority: WARNING
"""


def test_a_shared_macro_is_evaluated_once_per_event() -> None:
    engine = _engine(SHARED, rule_matching="all")
    assert engine.ruleset is not None
    for fd_name, fired in (("/etc/a", ["a"]), ("/etc/c", ["c"]), ("/etc/x", [])):
        event = _Counting({"evt.type": "openat", "proc.pname": "bash", "proc.cmdline": "bash -i",
                           "fd.name": fd_name})
        _Counting.reads.clear()
        assert [a.rule for a in engine.ruleset.evaluate(event)] == fired
        assert _Counting.reads["proc.pname"] <= 1, _Counting.reads
        assert _Counting.reads["proc.cmdline"] <= 1, _Counting.reads
