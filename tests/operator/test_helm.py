"""The Helm chart: lints, renders valid objects, and installs exactly the shipped CRDs and
the same least-privilege RBAC and Deployment as operator/manifests/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import crd_schema
import kubernetes_validate
import operator_harness
import prereq
import pytest
import yaml

from falconer.operator import convert
from falconer.paths import CRDS_DIR, ROOT, default_rules_files

CHART = ROOT / "helm" / "falconer"
MANIFESTS = ROOT / "operator" / "manifests"
#: Values files the chart is linted, rendered and validated with (chart-testing's ci/).
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The version tools/setup/50-helm.sh builds.
HELM_VERSION = "v3.19.0"


def helm() -> Path:
    cached = Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bin" / f"helm-{HELM_VERSION}"
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("helm")
    prereq.require(on_path is not None, f"helm not found: no {cached}; run ./dev setup (tools/setup/50-helm.sh)")
    return Path(str(on_path))


def helm_result(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120, check=False)


def run_helm(*args: str) -> str:
    done = helm_result(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(*sets: str, values: Path | None = None, crds: bool = True) -> list[dict[str, Any]]:
    flags = [f"--set={s}" for s in sets] + ([f"--values={values}"] if values else [])
    out = run_helm("template", "falconer", str(CHART), "--namespace", "falconer-system",
                   *(["--include-crds"] if crds else []), *flags)
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
    (plain,) = [d for d in manifest_docs("operator.yaml") if d["kind"] == "Deployment"]
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


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_chart_lints_with_each_values_file(values: Path) -> None:
    assert "0 chart(s) failed" in run_helm("lint", "--strict", str(CHART), "--values", str(values))


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_every_rendered_manifest_is_valid_offline(values: Path) -> None:
    """Kubernetes' kinds against the Kubernetes schemas (strict), Falconer's against its CRDs."""
    for doc in rendered(values=values):
        if doc["apiVersion"].startswith("falconer.io/"):
            assert crd_schema.errors(doc) == [], doc["metadata"]["name"]
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_at_least_three_values_files_cover_every_template() -> None:
    assert len(VALUES_FILES) >= 3
    kinds = {d["kind"] for v in VALUES_FILES for d in rendered(values=v)}
    assert {"FalcoRule", "FalcoInstance", "Deployment", "ClusterRole", "CustomResourceDefinition"} <= kinds


def test_default_rules_are_the_shipped_files_as_to_crd_wraps_them() -> None:
    rules = [d for d in rendered("defaultRules.enabled=true") if d["kind"] == "FalcoRule"]
    expected = [convert.falcorule_manifest(p.read_text(), p.stem.replace("_", "-"), "falconer-system")
                for p in default_rules_files()]
    assert [d["metadata"]["name"] for d in rules] == [e["metadata"]["name"] for e in expected]
    for order, (doc, want) in enumerate(zip(rules, expected, strict=True)):
        assert doc["spec"]["items"] == want["spec"]["items"]
        assert doc["spec"]["order"] == order
        assert doc["metadata"]["labels"]["falconer.io/ruleset"] == "default"


def test_metrics_values_reach_the_default_instance() -> None:
    (instance,) = [d for d in rendered(values=CHART / "ci" / "full-values.yaml") if d["kind"] == "FalcoInstance"]
    assert instance["spec"]["metrics"] == {"enabled": True, "port": 9376, "tlsSecret": "falconer-metrics-tls",
                                           "podLabels": True, "serviceMonitor": True}
    assert instance["spec"]["ruleSelector"] == {"matchLabels": {"falconer.io/ruleset": "default"}}


@pytest.mark.parametrize(("sets", "message"), [
    (["metrics.enabled=true"], "/metrics/tlsSecret"),
    (["bogus=1"], "additional properties 'bogus' not allowed"),
    (["defaultInstance.minPriority=loud"], "/defaultInstance/minPriority"),
])
def test_values_schema_refuses_bad_values(sets: list[str], message: str) -> None:
    done = helm_result("template", "falconer", str(CHART), *[f"--set={s}" for s in sets])
    assert done.returncode != 0 and message in done.stderr, done.stderr


def kubectl(control_plane) -> list[str]:
    from falconer_e2e import binaries

    return [str(binaries.locate("kubectl").path), "--kubeconfig", str(control_plane.kubeconfig)]


@pytest.fixture
def installed_crds(control_plane) -> None:
    """The shipped CRDs applied (for real) and Established on the session's control plane."""
    subprocess.run([*kubectl(control_plane), "apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([*kubectl(control_plane), "wait", "--for=condition=Established", "crd", "--all",
                    "--timeout=60s"], check=True, capture_output=True, timeout=90)


@pytest.mark.kube
def test_notes_name_what_was_installed(control_plane, installed_crds) -> None:
    operator_harness.adopt_cluster_rbac(control_plane.kubeconfig, "falconer", "sec")
    out = run_helm("install", "falconer", str(CHART), "--dry-run=client", "--namespace", "sec",
                   "--kubeconfig", str(control_plane.kubeconfig),
                   "--values", str(CHART / "ci" / "full-values.yaml"))
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl get falcoinstance cluster -n sec" in notes
    assert "Service cluster-sensor-metrics, https on port 9376" in notes


@pytest.mark.kube
@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_every_rendered_manifest_passes_a_server_side_dry_run(values: Path, control_plane, installed_crds,
                                                            kube_namespace) -> None:
    """The real API server's validation (schemas, CEL rules, defaulting) of every object
    the chart renders, without creating any: the CRDs are applied first (for real: the
    custom objects need them), then everything as `kubectl apply --server-side --dry-run=server`."""
    out = run_helm("template", "falconer", str(CHART), "--namespace", kube_namespace, "--values", str(values))
    done = subprocess.run([*kubectl(control_plane), "apply", "--server-side", "--dry-run=server", "-f", "-"],
                          input=out,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(out) if d])
