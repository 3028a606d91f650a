"""The fuzz campaign's short CI budget (bench/fuzz; the long campaign is `./dev fuzz`):
every input that once crashed a target is replayed, and each target fuzzes for a few
seconds from its real seeds, with no crash."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from falconer.paths import ROOT

FUZZ = ROOT / "bench" / "fuzz"
SECONDS_PER_TARGET = 8


@functools.cache
def _targets() -> ModuleType:
    """bench/fuzz/targets.py (bench/fuzz is no package), imported once."""
    spec = importlib.util.spec_from_file_location("fuzz_targets", FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


REGRESSIONS = sorted(p for p in (FUZZ / "regressions").glob("*/*") if p.is_file())


@pytest.mark.parametrize("case", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_former_crash_stays_fixed(case: Path) -> None:
    _targets().TARGETS[case.parent.name].run(case.read_bytes())


def test_every_target_has_a_regression_folder_name() -> None:
    """Regression files sit in a folder named after their target (or they would not run)."""
    names = set(_targets().TARGETS)
    assert {p.parent.name for p in REGRESSIONS} <= names


def test_the_seeds_come_from_the_upstream_rules_files() -> None:
    names = {p.name for p in _targets().RULES_FILES}
    assert {"falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"} <= names


def test_short_campaign_finds_no_crash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz.py"), "--minutes", str(SECONDS_PER_TARGET / 60)],
        env={**os.environ, "FALCONER_FUZZ_DIR": str(tmp_path), "PYTHONSAFEPATH": "1"},
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = proc.stdout[proc.stdout.index("target"):].splitlines()[1:]
    assert len(table) == len(_targets().TARGETS)
    for row in table:
        name, inputs, _seconds, crashes = row.split()
        assert int(inputs) > 0 and crashes == "0", row
