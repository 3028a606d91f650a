"""Pytest fixtures for tests that need the local Kubernetes control plane.

Registered for the whole repository (tests/ and e2e/) by the root `conftest.py`, so one
control plane serves the whole session wherever the tests live. Without the binaries a
test skips on a developer machine and fails in CI (see `prereq.require`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import prereq
import pytest

from falconer.e2e import binaries
from falconer.e2e.controlplane import ControlPlane

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

#: The binaries the control plane itself runs (kubectl is only a convenience).
SERVER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

#: How long a new namespace may take to get its `default` ServiceAccount.
NAMESPACE_READY_SECONDS = 30.0


def missing_server_binaries() -> list[str]:
    """Messages for every control-plane binary that cannot be located."""
    problems: list[str] = []
    for name in SERVER_BINARIES:
        try:
            binaries.locate(name)
        except binaries.BinaryNotFound as error:
            problems.append(str(error))
    return problems


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane for the session; its work dir (logs) stays in pytest's
    temporary folder for inspection after a failure."""
    problems = missing_server_binaries()
    prereq.require(not problems, "; ".join(problems))
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_client(control_plane: ControlPlane) -> Iterator[ApiClient]:
    """A kubernetes.client.ApiClient with the admin identity (system:masters)."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kube_namespace(request: pytest.FixtureRequest, kube_client: ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, ready for Pods (its `default` ServiceAccount
    exists); deleted afterwards without waiting for its finalization."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_client)
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + NAMESPACE_READY_SECONDS
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        core.delete_namespace(name)
