"""The engine must stay importable where bcc and Kubernetes clients are absent (the
static side of this promise: tests/static/test_layers.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_the_engine_loads_no_heavy_dependency() -> None:
    code = ("import sys, falconer.engine, falconer.engine.commands; "
            "bad = [m for m in ('bcc', 'kubernetes', 'kopf') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONSAFEPATH": "1"},
                          cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"engine imported: {proc.stdout} {proc.stderr}"
