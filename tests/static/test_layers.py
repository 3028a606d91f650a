"""The import contracts ([tool.importlinter] in pyproject.toml) hold, and each one is
really checked: an import planted against it breaks it.

import-linter (grimp) reads the folder tree, and the package-dir mappings put
`falconer.engine` in engine/ and the harness `falconer_e2e` in e2e/, so it runs on the
packages laid out as installed (package_tree.assemble, a copy, in which a test may also
plant an import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import package_tree
import pytest

LINT_TIMEOUT_S = 300

#: contract id -> (module file in the tree, the planted line, the arrow the report names)
PLANTS = {
    "layers": ("falconer/sensor/kfilter.py", "import falconer.operator.api",
               "falconer.sensor.kfilter -> falconer.operator.api"),
    "engine-alone": ("falconer/engine/events.py", "import falconer.sensor.kube",
                     "falconer.engine.events -> falconer.sensor.kube"),
    "bcc": ("falconer/sensor/tracker.py", "import bcc", "falconer.sensor.tracker -> bcc"),
    "kube-client": ("falconer/sensor/podwatch.py", "from kubernetes import client",
                    "falconer.sensor.podwatch -> kubernetes"),
    "kopf": ("falconer/operator/reconcile.py", "import kopf", "falconer.operator.reconcile -> kopf"),
    "grpc": ("falconer/sensor/containers.py", "import grpc", "falconer.sensor.containers -> grpc"),
    "shared-contracts": ("falconer/sensorconfig.py", "import falconer.sensor.kube",
                         "falconer.sensorconfig -> falconer.sensor.kube"),
    "ruletest-on-top": ("falconer/sensor/tracker.py", "import falconer.ruletest.report",
                        "falconer.sensor.tracker -> falconer.ruletest.report"),
    "product-without-harness": ("falconer/paths.py", "import falconer_e2e.images",
                                "falconer.paths -> falconer_e2e.images"),
}
#: More arrows the layers contract forbids, beyond the planted one above.
LAYER_PLANTS = [
    ("falconer/engine/ruleset.py", "import falconer.sensor.record", "falconer.engine.ruleset -> falconer.sensor.record"),
    ("falconer/operator/status.py", "import falconer.sensor.kube", "falconer.operator.status -> falconer.sensor.kube"),
    ("falconer/sensor/alerts.py", "import falconer.ruletest.report", "falconer.sensor.alerts -> falconer.ruletest.report"),
    ("falconer/ruletest/report.py", "import falconer_e2e.images", "falconer.ruletest.report -> falconer_e2e.images"),
    ("falconer/cli.py", "import falconer_e2e.main_job", "falconer.cli -> falconer_e2e.main_job"),
]


def _lint(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    lint = Path(sys.executable).with_name("lint-imports")
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run([str(lint), "--config", str(package_tree.PYPROJECT), "--no-cache", *selected],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=LINT_TIMEOUT_S,
                          check=False)


def _planted(tree: Path, module: str, line: str) -> Path:
    package_tree.assemble(tree, copy=True)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # planted by the test\n")
    return tree


def test_every_contract_is_kept(tmp_path: Path) -> None:
    proc = _lint(package_tree.assemble(tmp_path, copy=True))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(PLANTS)} kept, 0 broken" in proc.stdout, proc.stdout


def test_the_tree_holds_every_component(tmp_path: Path) -> None:
    """The arrows are seen: the laid-out tree has each mapped package's modules, the
    harness's among them."""
    tree = package_tree.assemble(tmp_path, copy=True)
    names = package_tree.package_dirs()
    assert {"falconer", "falconer.engine", "falconer_e2e"} <= set(names)
    for name in names:
        assert (tree.joinpath(*name.split(".")) / "__init__.py").is_file(), name
    assert (tree / "falconer_e2e" / "images.py").is_file()


@pytest.mark.parametrize("contract", sorted(PLANTS))
def test_a_planted_import_breaks_the_contract(tmp_path: Path, contract: str) -> None:
    module, line, arrow = PLANTS[contract]
    proc = _lint(_planted(tmp_path, module, line), contract)
    assert proc.returncode != 0, proc.stdout
    assert arrow in proc.stdout, proc.stdout
    assert "0 kept, 1 broken" in proc.stdout, proc.stdout


@pytest.mark.parametrize(("module", "line", "arrow"), LAYER_PLANTS, ids=[a for _, _, a in LAYER_PLANTS])
def test_the_layers_forbid_an_upward_or_sideways_import(tmp_path: Path, module: str, line: str,
                                                        arrow: str) -> None:
    proc = _lint(_planted(tmp_path, module, line), "layers")
    assert proc.returncode != 0 and arrow in proc.stdout, proc.stdout
