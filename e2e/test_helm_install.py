"""`helm install` of the chart on the local control plane and a real node: the operator
runs as the chart's Deployment (non-root, read-only root filesystem) from the locally
built image, the default rules and FalcoInstance come from the chart, and the instance
ends Ready with the sensor running as the DaemonSet's pod (metrics switched on through
the chart's values, with a TLS Secret made here).

GitOps health as Flux computes it: kstatus (sigs.k8s.io/cli-utils, built by
tools/setup/55-kstatus.sh) reads the CRs' status: InProgress while the sensors roll out,
Current once Ready."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import adopt_cluster_rbac, condition, kubectl, wait_for

from falconer.paths import ROOT
from falconer_e2e import images, pki
from falconer_e2e.node import Node

pytestmark = [pytest.mark.kube, pytest.mark.ebpf, pytest.mark.timeout(1800)]

CHART = ROOT / "helm" / "falconer"
HELM_VERSION = "v3.19.0"
#: The operator pod's start and the sensor pod's (image import, bcc's compile, first report).
READY_S = 420.0
KSTATUS_SRC = ROOT / "e2e" / "gitops" / "kstatus"


def kstatus_binary() -> Path:
    """The kstatus command 55-kstatus.sh built for these sources."""
    import prereq

    key = hashlib.sha256(b"".join((KSTATUS_SRC / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    path = Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bin" / f"kstatus-{key.hexdigest()[:16]}"
    prereq.require(os.access(path, os.X_OK), f"{path} missing: run ./dev setup (tools/setup/55-kstatus.sh)")
    return path


def kstatus(admin: Path, kind: str, name: str, namespace: str) -> str:
    """kstatus's verdict on the live object: InProgress, Current, Failed, ..."""
    obj = get(admin, kind, name, "-n", namespace)
    assert obj is not None, f"{kind} {namespace}/{name} is gone"
    done = subprocess.run([str(kstatus_binary())], input=json.dumps([obj]), capture_output=True, text=True,
                          timeout=30, check=True)
    return str(json.loads(done.stdout)["status"])


def helm(admin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path("/var/cache/falconer/bin") / f"helm-{HELM_VERSION}"
    done = subprocess.run([str(binary), "--kubeconfig", str(admin), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done


def get(admin: Path, *args: str) -> dict[str, Any] | None:
    done = kubectl(admin, "get", *args, "-o", "yaml", check=False)
    return yaml.safe_load(done.stdout) if done.returncode == 0 else None


def must_get(admin: Path, *args: str) -> dict[str, Any]:
    """The object, or an AssertionError naming it."""
    obj = get(admin, *args)
    assert obj is not None, f"kubectl get {' '.join(args)} found nothing"
    return obj


@pytest.fixture(scope="module")
def release(control_plane: Any, kube_node: Node, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[dict[str, Any]]:
    """The chart installed with ci/local-values.yaml into a fresh namespace, the sensor
    pinned to the session's node, metrics on with a Secret made here."""
    admin = Path(control_plane.kubeconfig)
    kstatus_binary()
    if images.REFS["sensor"] not in kube_node.image_refs():
        kube_node.import_image(images.build("sensor"))
    ns = f"helm-{uuid.uuid4().hex[:6]}"
    work = tmp_path_factory.mktemp("helm")
    kubectl(admin, "create", "namespace", ns)
    service = "default-sensor-metrics"
    ca, pair = pki.serving_pair(work, "metrics", (f"{service}.{ns}.svc",))
    kubectl(admin, "create", "secret", "generic", "metrics-tls", "-n", ns, "--type=kubernetes.io/tls",
            f"--from-file=tls.crt={pair.cert}", f"--from-file=tls.key={pair.key}", f"--from-file=ca.crt={ca}")
    release_name = f"falconer-{ns}"
    adopt_cluster_rbac(admin, release_name, ns)
    helm(admin, "install", release_name, str(CHART), "--namespace", ns,
         "--values", str(CHART / "ci" / "local-values.yaml"),
         "--set", f"defaultInstance.nodeSelector.kubernetes\\.io/hostname={kube_node.name}",
         "--set", f"defaultInstance.criSocket={kube_node.paths.containerd_socket}",
         "--set", "metrics.enabled=true", "--set", "metrics.tlsSecret=metrics-tls")
    try:
        yield {"admin": admin, "ns": ns, "ca": ca, "service": service, "release": release_name}
    finally:
        kubectl(admin, "delete", "falcoinstance", "default", "-n", ns, "--wait", "--timeout=90s", check=False)
        subprocess.run([str(Path("/var/cache/falconer/bin") / f"helm-{HELM_VERSION}"), "--kubeconfig", str(admin),
                        "uninstall", release_name, "--namespace", ns, "--wait", "--timeout=120s"],
                       capture_output=True, timeout=180, check=False)
        kubectl(admin, "delete", "namespace", ns, "--wait=false", check=False)


def test_helm_install_ends_with_a_ready_falcoinstance(release: dict[str, Any]) -> None:
    admin, ns = release["admin"], release["ns"]
    seen: list[str] = []     # kstatus's verdicts on the instance while it rolls out

    def ready() -> dict[str, Any] | None:
        instance = get(admin, "falcoinstance", "default", "-n", ns)
        if (instance or {}).get("status", {}).get("observedGeneration"):
            seen.append(kstatus(admin, "falcoinstance", "default", ns))
        return instance if condition(instance, "Ready").get("status") == "True" else None

    try:
        instance = wait_for(ready, timeout=READY_S, interval=1.0, what="FalcoInstance default Ready")
    except AssertionError:
        logs = kubectl(admin, "logs", "-n", ns, "deploy/falconer-operator", "--tail=40", check=False)
        raise AssertionError(f"{get(admin, 'falcoinstance', 'default', '-n', ns)}\noperator log:\n"
                             f"{logs.stdout}{logs.stderr}") from None
    # While the sensor pod starts kstatus says InProgress (how long depends on the node's
    # image cache, so it may not be seen at all), never Failed; once Ready, Current.
    assert set(seen) <= {"InProgress", "Current"}, seen
    assert seen[-1] == "Current", seen
    assert kstatus(admin, "falcorule", "falconer-rules", ns) == "Current"
    assert condition(instance, "Stalled").get("status") != "True"
    rules = must_get(admin, "falcorules", "-n", ns)
    assert sorted(r["metadata"]["name"] for r in rules["items"]) == ["falconer-rules", "falconer-rules-incubating"]
    deploy = must_get(admin, "deployment", "falconer-operator", "-n", ns)
    assert deploy["status"].get("readyReplicas") == 1
    pod_spec = deploy["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
