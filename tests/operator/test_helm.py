"""The Helm chart: lints, renders valid objects, and installs exactly the shipped CRDs and
the same least-privilege RBAC and Deployment as operator/manifests/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import prereq
import pytest
import yaml

from falconer.paths import CRDS_DIR, ROOT

CHART = ROOT / "helm" / "falconer"
MANIFESTS = ROOT / "operator" / "manifests"
#: The version tools/setup/50-helm.sh builds.
HELM_VERSION = "v3.19.0"


def helm() -> Path:
    cached = Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bin" / f"helm-{HELM_VERSION}"
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("helm")
    prereq.require(on_path is not None, f"helm not found: no {cached}; run ./dev setup (tools/setup/50-helm.sh)")
    return Path(str(on_path))


def run_helm(*args: str) -> str:
    done = subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(*sets: str) -> list[dict[str, Any]]:
    flags = [f"--set={s}" for s in sets]
    out = run_helm("template", "falconer", str(CHART), "--namespace", "falconer-system", "--include-crds", *flags)
    return [d for d in yaml.safe_load_all(out) if d]


def manifest_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def by_kind_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_chart_lints() -> None:
    assert "0 chart(s) failed" in run_helm("lint", str(CHART))


def test_rendered_objects_are_valid() -> None:
    for doc in rendered():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_chart_ships_the_crds_unchanged() -> None:
    crds = [d for d in rendered() if d["kind"] == "CustomResourceDefinition"]
    expected = [yaml.safe_load(p.read_text()) for p in sorted(Path(CRDS_DIR).glob("*.yaml"))]
    assert sorted(crds, key=lambda d: d["metadata"]["name"]) == sorted(expected, key=lambda d: d["metadata"]["name"])


def test_rbac_equals_the_plain_manifests() -> None:
    chart = by_kind_name(rendered())
    plain = by_kind_name(manifest_docs("rbac.yaml"))
    for key in (("ClusterRole", "falconer-operator"), ("ClusterRole", "falconer-sensor")):
        assert chart[key]["rules"] == plain[key]["rules"], key
    binding = chart[("ClusterRoleBinding", "falconer-operator")]
    assert binding["roleRef"] == plain[("ClusterRoleBinding", "falconer-operator")]["roleRef"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "falconer-operator",
                                    "namespace": "falconer-system"}]


def test_deployment_equals_the_plain_manifest() -> None:
    (chart,) = [d for d in rendered() if d["kind"] == "Deployment"]
    (plain,) = manifest_docs("operator.yaml")
    assert chart["spec"]["template"]["spec"] == plain["spec"]["template"]["spec"]


def test_watch_namespaces_and_image() -> None:
    (deploy,) = [d for d in rendered("watchNamespaces={apps,security}", "image.tag=9.9")
                 if d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["args"][-4:] == ["--namespace", "apps", "--namespace", "security"]
    assert container["image"] == "ghcr.io/falconer/falconer:9.9"


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        ("nodeSelector.kubernetes\\.io/os=linux", "nodeSelector", {"kubernetes.io/os": "linux"}),
        ("tolerations[0].operator=Exists", "tolerations", [{"operator": "Exists"}]),
    ],
)
def test_scheduling_values(value: str, key: str, expected: Any) -> None:
    (deploy,) = [d for d in rendered(value) if d["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["spec"][key] == expected
