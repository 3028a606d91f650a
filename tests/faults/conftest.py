"""Fixtures of the kill/outage matrix: a control plane of its own (the faults stop and
kill its components, which must not disturb other tests), the operator's installation
on it, and the matrix table printed at the end of the session.

Each fault test records one row (`matrix.record(fault, promise, measured)`) once its
promise was checked; a failed test records nothing and pytest reports why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import prereq
import pytest
from fault_matrix import Matrix
from kube_fixtures import missing_server_binaries

from falconer_e2e.controlplane import ControlPlane


_MATRIX = Matrix()


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    """The session's fault matrix (printed in pytest's terminal summary)."""
    return _MATRIX


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix after the run, when any fault test passed."""
    if _MATRIX.rows:
        terminalreporter.section("kill/outage matrix")
        terminalreporter.write_line(_MATRIX.table())


@pytest.fixture(scope="session")
def fault_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane only the fault tests use (and break)."""
    missing = missing_server_binaries()
    prereq.require(not missing, "; ".join(missing))
    with ControlPlane(tmp_path_factory.mktemp("fault-plane")) as cp:
        yield cp


@pytest.fixture(scope="session")
def fault_admin(fault_plane: ControlPlane) -> Path:
    """The fault plane's admin kubeconfig, with the CRDs and the operator's RBAC applied."""
    import operator_harness

    operator_harness.install(Path(fault_plane.kubeconfig))
    return Path(fault_plane.kubeconfig)


@pytest.fixture
def fault_namespace(fault_plane: ControlPlane, fault_admin: Path) -> Iterator[str]:
    """A fresh namespace on the fault plane (deleted without waiting at the end)."""
    import uuid

    import operator_harness

    name = f"fault-{uuid.uuid4().hex[:8]}"
    operator_harness.kubectl(fault_admin, "create", "namespace", name)
    yield name
    operator_harness.kubectl(fault_admin, "delete", "namespace", name, "--wait=false", check=False)
