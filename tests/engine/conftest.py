"""Rulesets shared by the engine tests: each rules set is loaded once per session.

Loading the upstream files takes a few hundred milliseconds; the tests that use these
only evaluate events, so one load serves them all. Every ruleset matches with
`rule_matching: all`, so a test sees every rule an event fires, not just the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import upstream

from falconer.engine import Engine, EngineOptions
from falconer.engine.ruleset import Ruleset


def _load_all_matching(files: Sequence[Path]) -> Ruleset:
    """The ruleset of `files` (loaded in order as one set), which must load cleanly."""
    engine = Engine(EngineOptions(rule_matching="all"))
    result = engine.load(files)
    assert result.ok, "\n".join(d.human() for d in result.errors)
    assert engine.ruleset is not None
    return engine.ruleset


@pytest.fixture(scope="session")
def stable_ruleset() -> Ruleset:
    """Falco's upstream stable rules file, unchanged."""
    return _load_all_matching([upstream.STABLE])


@pytest.fixture(scope="session")
def upstream_ruleset() -> Ruleset:
    """The three upstream files together, in Falco's load order."""
    return _load_all_matching(upstream.upstream_files())
