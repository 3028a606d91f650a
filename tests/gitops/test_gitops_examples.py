"""The Argo CD and Flux examples (examples/gitops/): valid manifests pointing at the
chart, and Argo CD's health Lua agreeing with kstatus (sigs.k8s.io/cli-utils, what Flux
uses; the command tools/setup/55-kstatus.sh builds) on every status a FalcoInstance or
FalcoRule can show: not yet observed, rolling out, stalled, ready."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import prereq
import pytest
import yaml
from lupa import LuaRuntime

from falconer.paths import ROOT

EXAMPLES = ROOT / "examples" / "gitops"
KSTATUS_SRC = ROOT / "e2e" / "gitops" / "kstatus"
#: kstatus' verdicts as Argo CD names health.
ARGO_HEALTH = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}


def kstatus_binary() -> Path:
    key = hashlib.sha256(b"".join((KSTATUS_SRC / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    path = Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bin" / f"kstatus-{key.hexdigest()[:16]}"
    prereq.require(os.access(path, os.X_OK), f"{path} missing: run ./dev setup (tools/setup/55-kstatus.sh)")
    return path


def kstatus(objects: list[dict[str, Any]]) -> list[str]:
    done = subprocess.run([str(kstatus_binary())], input=json.dumps(objects), capture_output=True, text=True,
                          timeout=30, check=True)
    return [json.loads(line)["status"] for line in done.stdout.splitlines()]


def argo_health(script: str, obj: dict[str, Any]) -> str:
    """Run an Argo CD health script as Argo CD does: `obj` is the object, the script returns {status}."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    fn = lua.eval(f"function(obj)\n{script}\nend")
    return str(fn(lua.table_from(obj, recursive=True))["status"])


def cond(type_: str, status: bool) -> dict[str, str]:
    return {"type": type_, "status": "True" if status else "False", "reason": "R", "message": type_}


def instance(generation: int, observed: int | None, *conditions: dict[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance",
            "metadata": {"name": "default", "namespace": "falconer-system", "generation": generation},
            "status": status}


STATUSES = {
    "an older generation observed": instance(3, 2, cond("Ready", True)),
    "rolling out": instance(1, 1, cond("Ready", False), cond("Reconciling", True), cond("Stalled", False)),
    "a broken rule": instance(2, 2, cond("Ready", False), cond("Reconciling", False), cond("Stalled", True)),
    "ready": instance(2, 2, cond("Ready", True), cond("Reconciling", False), cond("Stalled", False)),
}


def health_scripts() -> dict[str, str]:
    (cm,) = [d for d in yaml.safe_load_all((EXAMPLES / "argocd" / "argocd-cm-health.yaml").read_text()) if d]
    prefix = "resource.customizations.health."
    return {k[len(prefix):]: v for k, v in cm["data"].items() if k.startswith(prefix)}


def test_argo_health_covers_the_custom_resources() -> None:
    assert set(health_scripts()) == {"falconer.io_FalcoInstance", "falconer.io_FalcoRule"}


@pytest.mark.parametrize("case", sorted(STATUSES))
def test_argo_health_agrees_with_kstatus(case: str) -> None:
    obj = STATUSES[case]
    (verdict,) = kstatus([obj])
    for script in health_scripts().values():
        assert argo_health(script, obj) == ARGO_HEALTH[verdict], case


def test_the_four_statuses_cover_every_verdict() -> None:
    assert sorted(set(kstatus(list(STATUSES.values())))) == ["Current", "Failed", "InProgress"]


def test_examples_point_at_the_chart_and_check_the_instance() -> None:
    (app,) = [d for d in yaml.safe_load_all((EXAMPLES / "argocd" / "application.yaml").read_text()) if d]
    assert (ROOT / app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    flux = {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / "flux" / "falconer.yaml").read_text()) if d}
    assert (ROOT / flux["HelmRelease"]["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    checks = {(c["kind"], c["name"]) for c in flux["Kustomization"]["spec"]["healthChecks"]}
    assert ("FalcoInstance", "default") in checks and flux["Kustomization"]["spec"]["wait"] is True
