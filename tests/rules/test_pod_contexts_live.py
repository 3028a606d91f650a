"""In-pod contexts for real: the pod suite on the local control plane and a real node
(containerd, kubelet) of this host, against this host's sensor."""

from __future__ import annotations

from pathlib import Path

import pytest

import prereq
from falconer import paths
from falconer.ruletest import pods, runner, suite
from falconer_e2e import binaries

POD_SUITES = sorted((paths.RULES_DIR / "tests" / "pods").glob("*.yaml"))


@pytest.mark.ebpf
@pytest.mark.kube
@pytest.mark.timeout(1200)
def test_pod_suite_passes_on_a_real_node(control_plane, kube_node, kube_namespace: str) -> None:
    prereq.require_ebpf()
    tests = suite.load(POD_SUITES)
    assert tests and all(t.context.pod is not None for t in tests)
    cluster = pods.Cluster(Path(control_plane.kubeconfig), kube_namespace,
                           str(binaries.locate("kubectl").path))
    r = runner.Runner(paths.default_rules_files(), cluster=cluster)
    with r.session() as sensor:
        results = list(r.run(tests, sensor))
    failed = [f"{x.test.name}: {x.status}: {x.reason}\n  " + "\n  ".join(
        str(a.get("output")) for a in x.alerts) for x in results if x.status != "pass"]
    assert failed == [], "\n".join(failed)
    rules = {t.rule for t in tests}
    for rule in rules:
        assert {t.expect.alert for t in tests if t.rule == rule} == {True, False}, rule
