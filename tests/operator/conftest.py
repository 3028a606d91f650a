"""Fixtures for the operator's tests against the real local control plane.

One operator process and one namespace per test module (the operator watches only that
namespace, so modules cannot disturb each other); the CRDs, RBAC and a Node are set up
once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import operator_harness
import pytest
from kube_fixtures import fresh_namespace

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from falconer.operator.kube import Kube
    from falconer_e2e.controlplane import ControlPlane

#: How much of an operator's log a failed test shows.
LOG_TAIL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used an operator shows the end of that operator's log, and its
    last warnings and errors in the one-line summary (CI shows little more than that)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    proc = getattr(item, "funcargs", {}).get("operator")
    if not (report.failed and isinstance(proc, operator_harness.OperatorProcess)):
        return
    lines = proc.log().splitlines()
    report.sections.append(("operator log (tail)", "\n".join(lines[-LOG_TAIL_LINES:])))
    trouble = [line for line in lines if "[WARNING" in line or "[ERROR" in line][-3:]
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and trouble:
        crash.message += " | operator: " + " | ".join(t[-300:] for t in trouble)


#: The Node registered for DaemonSets to schedule on (no kubelet runs behind it).
NODE_NAME = "falconer-operator-test-node"


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane) -> Path:
    """CRDs and RBAC applied; returns the admin kubeconfig."""
    operator_harness.install(Path(control_plane.kubeconfig))
    return Path(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def operator_kubeconfig(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig with the operator's own ServiceAccount identity (least privilege)."""
    return operator_harness.service_account_kubeconfig(
        installed, tmp_path_factory.mktemp("operator") / "operator.kubeconfig",
        operator_harness.OPERATOR_NAMESPACE, operator_harness.OPERATOR_ACCOUNT,
    )


@pytest.fixture(scope="session")
def kube(kube_client: ApiClient) -> Kube:
    """The operator's own API access class, with the admin identity, for reading back."""
    from falconer.operator.kube import Kube

    return Kube(kube_client)


@pytest.fixture(scope="session")
def sensor_node(kube_client: ApiClient) -> Iterator[str]:
    """A registered Node with pod capacity that stays Ready (tests/support/fake_node.py),
    so DaemonSet Pods get created and bound however late in the session."""
    from fake_node import FakeNode

    node = FakeNode(kube_client, NODE_NAME)
    node.start()
    try:
        yield NODE_NAME
    finally:
        node.stop()


@pytest.fixture(scope="module")
def op_namespace(request: pytest.FixtureRequest, kube_client: ApiClient, installed: Path) -> Iterator[str]:
    """A namespace for one test module."""
    with fresh_namespace(kube_client, request.module.__name__.split(".")[-1], 30) as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    installed: Path, operator_kubeconfig: Path, op_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_harness.OperatorProcess]:
    """The operator watching the module's namespace, as a subprocess. At the end its
    FalcoInstances are deleted while it still runs (their finalizer needs it)."""
    proc = operator_harness.OperatorProcess(
        operator_kubeconfig, op_namespace, tmp_path_factory.mktemp("operator-log") / "operator.log"
    )
    proc.start()
    try:
        yield proc
    finally:
        operator_harness.stop_after_deleting_instances(proc, installed, op_namespace)
