"""The built wheel, installed into a fresh virtual env, is a working `falconer`: the
default rules and the CRDs are in it (package data), the test harness is not (it is its
own distribution, `falconer-e2e` from e2e/), `falconer validate` passes on the shipped
rules, `falconer rules to-crd` wraps one, and `falconer version` names the engine
version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from falconer import __version__
from falconer.engine import ENGINE_VERSION
from falconer.paths import crd_files, default_rules_files
from falconer_e2e.images import build_wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the `falconer` script of a fresh venv it was pip-installed into, with
    its dependencies from the package index)."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(work / "dist")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                           str(wheel)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return wheel, venv / "bin" / "falconer"


def falconer(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed command away from the checkout (cwd elsewhere, no PYTHONPATH)."""
    return _away([str(script), *args], cwd)


def venv_python(script: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` with the fresh venv's python, away from the checkout as `falconer`."""
    return _away([str(script.parent / "python"), "-c", code], cwd)


def _away(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FALCONER_ROOT")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**env, "PYTHONSAFEPATH": "1"}, check=False)


def test_the_wheel_holds_the_rules_and_crds_as_package_data(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in default_rules_files():
        assert f"falconer/rules/{path.name}" in names
    for path in crd_files():
        assert f"falconer/crds/{path.name}" in names
    assert "falconer/operator/templates/daemonset.yaml.j2" in names
    assert not any(n.startswith("falconer/rules/tests/") for n in names)  # test suites stay in the repo


def test_the_wheel_holds_no_test_harness(installed, tmp_path):
    """Only the product: no `falconer/e2e` (the harness's old place), no `falconer_e2e`,
    no main job; installed, neither imports, while the product does."""
    wheel, script = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"falconer", f"falconer-{__version__}.dist-info"}
    assert [n for n in names if n.startswith("falconer/e2e/") or "main_job" in n] == []
    for harness in ("falconer_e2e", "falconer.e2e"):
        done = venv_python(script, f"import {harness}", tmp_path)
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, (harness, done.stderr)
    done = venv_python(script, "import falconer.engine, falconer.sensor, falconer.operator", tmp_path)
    assert done.returncode == 0, done.stderr


def test_installed_falconer_validates_its_shipped_rules(installed, tmp_path):
    _, script = installed
    site = subprocess.run([str(script.parent / "python"), "-c",
                           "from falconer import paths; print(paths.RULES_DIR)"],
                          capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    rules_dir = Path(site)
    assert "site-packages" in rules_dir.parts, rules_dir     # not this checkout's rules/
    shipped = sorted(rules_dir.glob("*.yaml"))
    assert [p.name for p in shipped] == [p.name for p in default_rules_files()]
    done = falconer(script, "validate", *map(str, shipped), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = falconer(script, "rules", "to-crd", str(shipped[0]), "--name", "falconer-rules",
                        "--namespace", "security", cwd=tmp_path)
    assert manifest.returncode == 0, manifest.stderr
    doc = yaml.safe_load(manifest.stdout)
    assert (doc["kind"], doc["metadata"]["name"]) == ("FalcoRule", "falconer-rules")
    assert any("rule" in item for item in doc["spec"]["items"])


def test_installed_falconer_prints_the_crds_and_its_versions(installed, tmp_path):
    _, script = installed
    crds = [d for d in yaml.safe_load_all(falconer(script, "crds", cwd=tmp_path).stdout) if d]
    assert sorted(d["metadata"]["name"] for d in crds) == sorted(
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in crd_files())
    out = falconer(script, "version", "--json", cwd=tmp_path)
    assert json.loads(out.stdout) == {"falconer_version": __version__, "engine_version": ENGINE_VERSION}
    text = falconer(script, "version", cwd=tmp_path).stdout
    assert f"Falconer version: {__version__}" in text and f"Engine:           {ENGINE_VERSION}" in text
