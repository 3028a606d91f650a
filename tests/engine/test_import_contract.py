"""The engine must stay importable where bcc and Kubernetes clients are absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from falconer.paths import ROOT

_COMPONENTS = {"engine": "engine", "sensor": "sensor", "operator": "operator", "e2e": "e2e",
               "ruletest": "ruletest"}


def _assembled_tree(dest: Path) -> Path:
    """A plain copy of the package as installed (import-linter cannot follow the
    editable install's folder mapping, so it analyses this copy)."""
    pkg = dest / "falconer"
    pkg.mkdir()
    for f in (ROOT / "falconer").glob("*.py"):
        shutil.copy(f, pkg / f.name)
    for sub, folder in _COMPONENTS.items():
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, pkg / sub,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


def test_import_linter_contracts_hold(tmp_path: Path) -> None:
    proc = _lint(_assembled_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_import_linter_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The contract is really checked: a planted `import kopf` in the engine breaks it."""
    tree = _assembled_tree(tmp_path)
    events = tree / "falconer" / "engine" / "events.py"
    events.write_text(events.read_text() + "\nimport kopf  # planted by the test\n")
    proc = _lint(tree)
    assert proc.returncode != 0
    assert "falconer.engine.events -> kopf" in proc.stdout


def test_importing_the_engine_loads_no_heavy_dependency() -> None:
    code = ("import sys, falconer.engine, falconer.engine.commands; "
            "bad = [m for m in ('bcc', 'kubernetes', 'kopf') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONSAFEPATH": "1"},
                          cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"engine imported: {proc.stdout} {proc.stderr}"
