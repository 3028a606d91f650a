"""`mypy --strict` over the whole `falconer` package and the `falconer_e2e` harness
passes (settings: [tool.mypy] in pyproject.toml). A type error anywhere in either fails
this test, and so CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import package_tree

MYPY_TIMEOUT_S = 600


def _mypy(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1", "MYPY_FORCE_COLOR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(package_tree.PYPROJECT),
         "--cache-dir", str(tree / ".mypy_cache"), *args],
        cwd=tree, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT_S, check=False)


def test_mypy_strict_passes_on_the_product_and_the_harness(tmp_path: Path) -> None:
    tree = package_tree.assemble(tmp_path, copy=False)
    packages = package_tree.top_level_packages()
    assert packages == ["falconer", "falconer_e2e"]
    proc = _mypy(tree, *(arg for name in packages for arg in ("-p", name)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def test_mypy_reports_a_planted_type_error(tmp_path: Path) -> None:
    """The check is real: the same settings reject a wrong return type."""
    bad = tmp_path / "planted.py"
    bad.write_text("def f() -> int:\n    return 'x'\n")
    proc = _mypy(tmp_path, str(bad))
    assert proc.returncode == 1
    assert "planted.py:2: error: Incompatible return value type" in proc.stdout
