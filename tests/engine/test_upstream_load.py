"""The three upstream Falco rules files load unchanged, alone and together."""

from __future__ import annotations

from pathlib import Path

import pytest
import upstream

from falconer import paths
from falconer.engine import Engine

CASES = [
    ([upstream.STABLE], {"rules": 25, "macros": 87, "lists": 49}),
    ([upstream.INCUBATING], {"rules": 31, "macros": 82, "lists": 54}),
    ([upstream.SANDBOX], {"rules": 37, "macros": 183, "lists": 60}),
    # Names repeated across files are redefinitions, so the union is smaller than the sum.
    (upstream.upstream_files(), {"rules": 93, "macros": 315, "lists": 118}),
]


@pytest.mark.parametrize("files,counts", CASES, ids=["stable", "incubating", "sandbox", "all"])
def test_upstream_files_load_without_errors(files: list[Path], counts: dict[str, int]) -> None:
    engine = Engine()
    result = engine.load(files)
    assert result.errors == []
    assert result.counts == counts
    # Every macro and list upstream is referenced, and every rule names its event types.
    assert [w.code for w in result.warnings] == []
    assert engine.ruleset is not None and len(engine.ruleset) == counts["rules"]


def test_upstream_rules_are_all_indexed_by_event_type() -> None:
    engine = Engine()
    engine.load(upstream.upstream_files())
    assert engine.ruleset is not None
    types = engine.ruleset.event_types("syscall")
    assert types is not None
    assert {"execve", "openat", "connect"} <= types


def test_default_ruleset_is_clean() -> None:
    result = Engine().load(paths.default_rules_files())
    assert result.ok and result.warnings == []
    assert result.counts["rules"] >= 40
